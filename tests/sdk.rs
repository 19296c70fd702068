//! The official PocketBase JS SDK (npm `pocketbase`) through every backups call, against the
//! real binary. `tests/sdk/run.sh` installs the pinned SDK locally on first use.

mod support;

use std::process::Command;

use support::*;

#[test]
fn official_js_sdk_drives_every_backups_call() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let server = BinaryServer::start(&dir);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/run.sh");
    let output = Command::new("bash")
        .arg(script)
        .env("PB_URL", &server.base)
        .env("PB_SUPERUSER_EMAIL", SUPERUSER.0)
        .env("PB_SUPERUSER_PASSWORD", SUPERUSER.1)
        .env("PB_USER_EMAIL", USER.0)
        .env("PB_USER_PASSWORD", USER.1)
        .output()
        .expect("bash and node are needed for the SDK test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK test failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server log\n{}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    // node's runner prints its counts; make sure tests really ran.
    assert!(stdout.contains("# pass") && !stdout.contains("# pass 0"), "{stdout}");
    assert!(stdout.contains("# fail 0"), "{stdout}");
}

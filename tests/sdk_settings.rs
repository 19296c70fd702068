//! The official PocketBase JS SDK's settings calls (`tests/sdk/settings.test.mjs`) against
//! the real binary.

mod support;

use std::process::Command;

use support::*;

#[test]
fn official_js_sdk_reads_and_updates_the_backups_schedule() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let server = BinaryServer::start(&dir);
    let sdk = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk");
    let install = Command::new("bash").arg(format!("{sdk}/run.sh")).arg("--install-only").status();
    assert!(install.expect("bash is needed for the SDK test").success(), "installing the SDK failed");
    let output = Command::new("node")
        .args(["--test", "settings.test.mjs"])
        .current_dir(sdk)
        .env("PB_URL", &server.base)
        .env("PB_SUPERUSER_EMAIL", SUPERUSER.0)
        .env("PB_SUPERUSER_PASSWORD", SUPERUSER.1)
        .env("PB_USER_EMAIL", USER.0)
        .env("PB_USER_PASSWORD", USER.1)
        .output()
        .expect("node is needed for the SDK test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "SDK settings test failed\n--- stdout\n{stdout}\n--- stderr\n{}\n--- server log\n{}",
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    assert!(stdout.contains("# pass 3") && stdout.contains("# fail 0"), "{stdout}");
}

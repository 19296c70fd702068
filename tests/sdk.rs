//! The official PocketBase JS SDK (npm `pocketbase`) through every backups call, against the
//! real binary. The pinned SDK is installed into `tests/sdk/` on first use.

mod support;

use support::*;

#[test]
fn official_js_sdk_drives_every_backups_call() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let server = BinaryServer::start(&dir);
    let output = node_sdk(&["--test", "backups.test.mjs"], &server.base, SUPERUSER, USER);
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

//! The official PocketBase JS SDK's settings calls (`tests/sdk/settings.test.mjs`) against
//! the real binary.

mod support;

use support::*;

#[test]
fn official_js_sdk_reads_and_updates_the_backups_schedule() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let server = BinaryServer::start(&dir);
    let output = node_sdk(&["--test", "settings.test.mjs"], &server.base, SUPERUSER, USER);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "SDK settings test failed\n--- stdout\n{stdout}\n--- stderr\n{}\n--- server log\n{}",
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    assert!(stdout.contains("# pass 4") && stdout.contains("# fail 0"), "{stdout}");
}

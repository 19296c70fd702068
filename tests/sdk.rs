//! The official PocketBase JS SDK (npm `pocketbase`) through every backups call, and through
//! its MFA flow, against the real binary. The pinned SDK is installed into `tests/sdk/` on
//! first use.

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

/// `authWithPassword` throws with an `mfaId`, `requestOTP` mails a code (to a local SMTP
/// sink that writes it where the script reads it), `authWithOTP(otpId, code, {mfaId})`
/// logs in (`tests/sdk/mfa.test.mjs`).
#[test]
fn official_js_sdk_runs_its_mfa_flow() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let (sink, mail_dir) = smtp::mfa_on_superusers(&dir);
    let server = BinaryServer::start(&dir);
    let env = [("PB_MAIL_DIR", mail_dir.to_str().unwrap())];
    let output = node_sdk_with(&["--test", "mfa.test.mjs"], &server.base, SUPERUSER, USER, &env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "SDK MFA test failed\n--- stdout\n{stdout}\n--- stderr\n{}\n--- server log\n{}",
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    assert!(stdout.contains("# pass 2") && stdout.contains("# fail 0"), "{stdout}");
    assert_eq!(sink.mails().len(), 2, "one code mailed per test");
}

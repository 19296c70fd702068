//! The operators' console at `/_/` in headless Chromium against the real binary: every action
//! through the page (`tests/console/console.test.mjs`, its S3 settings against moto), and the
//! login when `_superusers` requires MFA (`tests/console/mfa.test.mjs`); Playwright over
//! Debian's Chromium, both installed by `tests/console/run.sh` when missing.
//! `PB_CONSOLE_SCREENSHOT=PATH` also saves a screenshot of the page there
//! (`scripts/console-screenshot` makes the README's).

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

/// Runs the browser test `file` against `server` (on `dir`), with `env` added; fails with
/// its output and the server's log unless tests ran and all passed. Returns how many passed.
fn run_browser_test(file: &str, server: &BinaryServer, dir: &Path, env: &[(&str, &str)]) -> usize {
    let test_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    let mut command = Command::new("bash");
    command
        .arg(test_dir.join("run.sh"))
        .arg(file)
        .env("PB_URL", &server.base)
        .env("PB_DATA_DIR", dir)
        .env("PB_SUPERUSER_EMAIL", SUPERUSER.0)
        .env("PB_SUPERUSER_PASSWORD", SUPERUSER.1)
        .envs(env.iter().copied());
    let output = command.output().expect("bash and node are needed for the console test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "console test {file} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server log\n{}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    // node's runner prints its counts; make sure tests really ran.
    assert!(stdout.contains("# fail 0"), "{stdout}");
    let passed = stdout.lines().find_map(|l| l.strip_prefix("# pass ")).and_then(|n| n.trim().parse().ok());
    passed.filter(|n| *n > 0).unwrap_or_else(|| panic!("no test of {file} passed:\n{stdout}"))
}

#[test]
fn the_console_does_every_action_in_a_real_browser() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    // A database the browser test locks to hold a create at its snapshot (see `hold()` there);
    // in rollback-journal mode, where a writer's exclusive lock keeps readers out.
    let hold = rusqlite::Connection::open(dir.join("hold.db")).unwrap();
    hold.execute_batch("PRAGMA journal_mode = DELETE; CREATE TABLE held (x); INSERT INTO held VALUES (1);").unwrap();
    drop(hold);
    let server = BinaryServer::start(&dir);
    let bucket = tokio::runtime::Runtime::new().unwrap().block_on(support::s3::new_bucket(support::s3::moto()));
    run_browser_test("console.test.mjs", &server, &dir, &[("PB_S3_ENDPOINT", support::s3::moto()), ("PB_S3_BUCKET", &bucket)]);
}

/// With MFA on `_superusers`, the page asks for the code mailed to the superuser (a local SMTP
/// sink writes each mail where the browser test reads it) and logs in only with it.
#[test]
fn the_console_asks_for_the_mailed_code_when_superusers_require_mfa() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let (sink, mail_dir) = smtp::mfa_on_superusers(&dir);
    let server = BinaryServer::start(&dir);
    let passed = run_browser_test("mfa.test.mjs", &server, &dir, &[("PB_MAIL_DIR", mail_dir.to_str().unwrap())]);
    assert_eq!(passed, 2);
    assert_eq!(sink.mails_to(SUPERUSER.0).len(), 1, "one code mailed, for the one login");
}

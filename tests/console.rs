//! The operators' console at `/_/` in headless Chromium against the real binary: every action
//! through the page (`tests/console/console.test.mjs`, Playwright over Debian's Chromium, both
//! installed by `tests/console/run.sh` when missing), the S3 settings against moto.
//! `PB_CONSOLE_SCREENSHOT=PATH` also saves a screenshot of the page there
//! (`scripts/console-screenshot` makes the README's).

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

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
    let test_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    let mut command = Command::new("bash");
    command
        .arg(test_dir.join("run.sh"))
        .env("PB_URL", &server.base)
        .env("PB_DATA_DIR", &dir)
        .env("PB_SUPERUSER_EMAIL", SUPERUSER.0)
        .env("PB_SUPERUSER_PASSWORD", SUPERUSER.1)
        .env("PB_S3_ENDPOINT", support::s3::moto())
        .env("PB_S3_BUCKET", &bucket);
    let output = command.output().expect("bash and node are needed for the console test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "console test failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server log\n{}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    // node's runner prints its counts; make sure tests really ran.
    assert!(stdout.contains("# pass") && !stdout.contains("# pass 0"), "{stdout}");
    assert!(stdout.contains("# fail 0"), "{stdout}");
}

//! Crafted `data.db` files fed to account loading, as a restore and a start meet them:
//! `accounts::check_usable`, then `Accounts::open`, a token's record lookup, the account
//! count and the settings row. None may panic, and the two loading steps must end within
//! their time budget (plus slack for the work SQLite does outside its statements, such as
//! parsing the schema); libFuzzer's `-timeout` bounds the rest. Logins are left out: a
//! stored hash may cost up to bcrypt 14 by design (seconds, more under the sanitizer), and
//! the hash bounds have unit tests of their own.
//!
//! Input: first byte even = the rest is SQL applied to a data dir of ours (superuser `a@b.c`,
//! user `u@b.c`), so the fuzzer edits schema and rows: views in place of tables, triggers,
//! virtual tables, crafted hashes and options. First
//! byte odd = the rest is the file itself (small databases with 512-byte pages fit the
//! smoke run's 4 KiB inputs). The SQL runs on a connection with this server's own bounds
//! (no ATTACH, defensive mode, a time budget) and at most 16 MiB of pages; statements that
//! could reach outside the run's folder (`PRAGMA`, `VACUUM INTO`) are left out.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pb_backups::accounts::{self, Accounts, Collection};
use pb_backups::sqlite::{self, Access};

/// Each loading step's budget; small, so that a crafted slow query costs little time here.
const BUDGET: Duration = Duration::from_millis(200);
/// Work outside statements (opening, schema parsing, Rust) under the sanitizer's slowdown.
const SLACK: Duration = Duration::from_secs(3);

fn base() -> &'static Path {
    static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();
    BASE.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap()
    })
    .path()
}

struct Template {
    /// `data.db` of a fresh data dir with the two accounts, in one file (no WAL beside it).
    bytes: Vec<u8>,
    /// (collection id, record id) of each account.
    records: Vec<(String, String)>,
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir_in(base()).unwrap();
        let accounts = Accounts::open(dir.path()).unwrap();
        let records = [(Collection::Superusers, "a@b.c"), (Collection::Users, "u@b.c")]
            .map(|(c, email)| accounts.upsert(c, email, "password123").unwrap())
            .map(|r| (r.collection_id, r.id))
            .to_vec();
        drop(accounts);
        let (conn, _) = sqlite::open(&dir.path().join("data.db"), Access::ReadWrite, Duration::from_secs(60)).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;").unwrap();
        drop(conn);
        Template { bytes: std::fs::read(dir.path().join("data.db")).unwrap(), records }
    })
}

fn within_budget(what: &str, started: Instant) {
    let took = started.elapsed();
    assert!(took < BUDGET + SLACK, "{what} took {took:?}, its budget is {BUDGET:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let run = tempfile::tempdir_in(base()).unwrap();
    let path = run.path().join("data.db");
    if mode % 2 == 0 {
        let Ok(sql) = std::str::from_utf8(rest) else { return };
        let lower = sql.to_ascii_lowercase();
        if lower.contains("pragma") || lower.contains("vacuum") {
            return;
        }
        std::fs::write(&path, &template().bytes).unwrap();
        let (conn, _) = sqlite::open(&path, Access::ReadWrite, BUDGET).unwrap();
        conn.pragma_update(None, "max_page_count", 4096).unwrap();
        // Whatever part of it SQLite accepts is the crafted database.
        let _ = conn.execute_batch(sql);
        drop(conn);
    } else {
        std::fs::write(&path, rest).unwrap();
    }

    let started = Instant::now();
    let _ = accounts::check_usable_within(&path, BUDGET);
    within_budget("check_usable", started);

    let started = Instant::now();
    let opened = Accounts::open_within(run.path(), BUDGET);
    within_budget("Accounts::open", started);
    let Ok(accounts) = opened else { return };
    for (collection_id, id) in &template().records {
        let _ = accounts.find(collection_id, id);
    }
    let _ = accounts.count(Collection::Superusers);
    let _ = pb_backups::settings::load(run.path());
});

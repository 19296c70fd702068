//! A crafted `data.db`: password hashes whose own cost would stall or kill the server, and
//! system tables swapped for views that never end. Through the API a login gets a prompt
//! 400 and a restore its 400 before the 204; `backups verify` says why; a data dir like that
//! is refused at start; and the server stays free, with nothing in its data dir changed.
//!
//! The deadlines below only turn a hang into a failure: the old code hung here for hours.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pb_backups::i18n::{Lang, Message};
use serde_json::{json, Value};
use support::*;

/// Far above what any of these requests takes (milliseconds), far below the old hangs.
const GUARD: Duration = Duration::from_secs(30);

async fn guarded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, f).await.unwrap_or_else(|_| panic!("{what}: no answer within {GUARD:?}"))
}

/// The command's output; still running after [`GUARD`] fails the test (and kills it).
fn output_within(mut cmd: Command) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let until = Instant::now() + GUARD;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("{cmd:?} was still running after {GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

// ---------------------------------------------------------------------------------------
// Crafted password hashes
// ---------------------------------------------------------------------------------------

/// `hash` claiming bcrypt cost `cost` (its salt and digest kept).
fn with_bcrypt_cost(hash: &str, cost: u32) -> String {
    format!("{}{cost:02}{}", &hash[..4], &hash[6..])
}

fn add_superuser(dir: &Path, n: usize, email: &str, hash: &str) {
    let conn = rusqlite::Connection::open(dir.join("data.db")).unwrap();
    conn.execute(
        "INSERT INTO _superusers (id, email, password, tokenKey, created, updated) VALUES (?1, ?2, ?3, ?4, '', '')",
        rusqlite::params![format!("crafted{n:08}"), email, hash, format!("crafted-token-key-{n}")],
    )
    .unwrap();
}

fn superuser_rows(dir: &Path) -> Vec<(String, String, String)> {
    let conn = rusqlite::Connection::open(dir.join("data.db")).unwrap();
    let mut stmt = conn.prepare("SELECT email, password, tokenKey FROM _superusers ORDER BY email").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

async fn login_status(s: &TestServer, email: &str, password: &str) -> (u16, Value) {
    let r = s
        .client
        .post(s.url("/api/collections/_superusers/auth-with-password"))
        .json(&json!({"identity": email, "password": password}));
    guarded(&format!("login of {email}"), async { status_json(r.send().await.unwrap()).await }).await
}

#[tokio::test(flavor = "multi_thread")]
async fn crafted_password_hashes_get_a_prompt_400_and_the_server_stays_free() {
    let s = TestServer::start().await;
    let password = "right-password";
    let cheap = bcrypt::hash_with_result(password, 4).unwrap();
    let salt_and_digest = "MDEyMzQ1Njc4OWFiY2RlZg$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo0NTY3ODk";
    let crafted = [
        // A real hash of the right password, one step above the bound: it would log in.
        ("cost15@example.com", bcrypt::hash_with_result(password, 15).unwrap().format_for_version(bcrypt::Version::TwoA)),
        // About 42 hours each.
        ("cost31-2a@example.com", with_bcrypt_cost(&cheap.format_for_version(bcrypt::Version::TwoA), 31)),
        ("cost31-2b@example.com", with_bcrypt_cost(&cheap.format_for_version(bcrypt::Version::TwoB), 31)),
        ("cost31-2y@example.com", with_bcrypt_cost(&cheap.format_for_version(bcrypt::Version::TwoY), 31)),
        // 4 TiB of memory (the old code aborted the process), and endless passes.
        ("argon-m@example.com", format!("$argon2id$v=19$m=4294967295,t=1,p=1${salt_and_digest}")),
        ("argon-t@example.com", format!("$argon2id$v=19$m=64,t=4294967295,p=1${salt_and_digest}")),
    ];
    for (n, (email, hash)) in crafted.iter().enumerate() {
        add_superuser(s.data_dir(), n, email, hash);
    }
    let before = superuser_rows(s.data_dir());
    let refused = (400, error_body(400, Message::AuthFailed.text(Lang::Zh)));
    for (email, _) in &crafted {
        let started = Instant::now();
        assert_eq!(login_status(&s, email, password).await, refused, "{email}");
        println!("{email}: 400 after {:?}", started.elapsed());
    }
    // More of the costliest at once than there are hashing permits, then an honest login:
    // nothing is held, everyone is answered.
    let at_once = std::thread::available_parallelism().map_or(2, usize::from) + 2;
    let attempts: Vec<_> = (0..at_once).map(|i| login_status(&s, crafted[1 + i % 3].0, password)).collect();
    for got in futures_util::future::join_all(attempts).await {
        assert_eq!(got, refused);
    }
    let (status, body) = login_status(&s, SUPERUSER.0, SUPERUSER.1).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(superuser_rows(s.data_dir()), before, "a refused login changed an account");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// System tables that are views
// ---------------------------------------------------------------------------------------

/// A view in place of `table` whose rows never end: `PRAGMA integrity_check` passes, and
/// counting or scanning it never returns.
fn endless_view(table: &str) -> String {
    format!(
        "ALTER TABLE `{table}` RENAME TO `{table}_moved`;
         CREATE VIEW `{table}` AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
         SELECT t.* FROM `{table}_moved` t, n;"
    )
}

/// A data dir of ours (the test accounts) changed by `sql`, with everything in `data.db`.
fn crafted_data_dir(dir: &Path, sql: &str) {
    seed_accounts(dir);
    let conn = rusqlite::Connection::open(dir.join("data.db")).unwrap();
    conn.execute_batch(sql).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
}

fn crafted_backup(sql: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    crafted_data_dir(dir.path(), sql);
    zip_with(&[("data.db", &std::fs::read(dir.path().join("data.db")).unwrap())])
}

fn cases() -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("superusers_view.zip", endless_view("_superusers"), "`_superusers` is a view, not a table"),
        ("collections_view.zip", endless_view("_collections"), "`_collections` is a view, not a table"),
        (
            "superusers_virtual.zip",
            "ALTER TABLE _superusers RENAME TO _su;
             CREATE VIRTUAL TABLE _superusers USING fts5(id, email, emailVisibility, verified, created, updated, tokenKey, password);
             INSERT INTO _superusers SELECT id, email, emailVisibility, verified, created, updated, tokenKey, password FROM _su;"
                .to_string(),
            "`_superusers` is a virtual table, not a table",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_of_a_crafted_data_db_are_refused_before_the_204_and_change_nothing() {
    let s = TestServer::start().await;
    let su = s.superuser_token().await;
    let before = std::fs::read(s.data_dir().join("data.db")).unwrap();
    for (key, sql, _) in cases() {
        let upload = s.client.post(s.url("/api/backups/upload")).header("Authorization", &su).multipart(multipart_file(key, crafted_backup(&sql)));
        assert_eq!(upload.send().await.unwrap().status(), 204, "{key}: a valid zip uploads");
        let restore = s.client.post(s.url(&format!("/api/backups/{key}/restore"))).header("Authorization", &su);
        let started = Instant::now();
        let got = guarded(key, async { status_json(restore.send().await.unwrap()).await }).await;
        println!("{key}: {} after {:?}", got.0, started.elapsed());
        assert_eq!(got, (400, error_body(400, Message::ArchiveNoUsableAccounts.text(Lang::Zh))), "{key}");
    }
    // Nothing changed, and the server is free: the same superuser logs in, a create runs.
    assert_eq!(std::fs::read(s.data_dir().join("data.db")).unwrap(), before);
    let su = s.superuser_token().await;
    let create = s.client.post(s.url("/api/backups")).header("Authorization", &su).json(&json!({"name": "after.zip"}));
    assert_eq!(guarded("create", create.send()).await.unwrap().status(), 204);
    s.stop().await;
}

#[test]
fn backups_verify_says_why_a_crafted_data_db_would_not_restore() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    std::fs::create_dir_all(dir.join("backups")).unwrap();
    for (key, sql, _) in cases() {
        std::fs::write(dir.join("backups").join(key), crafted_backup(&sql)).unwrap();
    }
    for (key, _, says) in cases() {
        let mut verify = Command::new(env!("CARGO_BIN_EXE_pb-backups"));
        verify.args(["backups", "verify", "--dir"]).arg(&dir).arg(key);
        let out = output_within(verify);
        assert_eq!(out.status.code(), Some(1), "{key}: {}", text(&out));
        assert!(text(&out).contains(&format!("BAD  {key}")) && text(&out).contains(says), "{key}: {}", text(&out));
    }
}

#[test]
fn a_data_dir_with_a_crafted_data_db_is_refused_at_start_with_a_clear_message() {
    let starts: [(&str, String, &[&str], &str); 3] = [
        ("superusers", endless_view("_superusers"), &[], "`_superusers` is a view, not a table"),
        ("collections", endless_view("_collections"), &[], "`_collections` is a view, not a table"),
        // The settings row, read at start when the schedule is given on the command line.
        ("params", endless_view("_params"), &["--backups-cron", "@daily"], "`_params` is a view, not a table"),
    ];
    for (case, sql, args, says) in starts {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pb_data");
        crafted_data_dir(&dir, &sql);
        let before = std::fs::read(dir.join("data.db")).unwrap();
        let mut serve = Command::new(env!("CARGO_BIN_EXE_pb-backups"));
        serve.args(["serve", "--http", "127.0.0.1:0", "--dir"]).arg(&dir).args(args);
        let out = output_within(serve);
        assert!(!out.status.success(), "{case}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{case}: {}", text(&out));
        assert_eq!(std::fs::read(dir.join("data.db")).unwrap(), before, "{case}");
    }
}

/// The server process itself, so that the test can signal it and see it exit.
fn spawn_server(dir: &Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_pb-backups"))
        .args(["serve", "--http", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("the server printed its address").unwrap();
        if let Some(url) = line.trim().strip_prefix("REST API:") {
            break url.trim().trim_end_matches("/api/").to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (child, base)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_a_crafted_restore_is_checked_stops_the_server() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    std::fs::create_dir_all(dir.join("backups")).unwrap();
    std::fs::write(dir.join("backups/crafted.zip"), crafted_backup(&endless_view("_superusers"))).unwrap();
    let (mut child, base) = spawn_server(&dir);
    let client = reqwest::Client::new();
    let su = login(&client, &base, "_superusers", SUPERUSER.0, SUPERUSER.1).await;
    let restore = tokio::spawn(client.post(format!("{base}/api/backups/crafted.zip/restore")).header("Authorization", su.clone()).send());
    // Signalled while the restore runs (the old code never finished it) or once it answered.
    eventually(GUARD, "the restore to start or answer", || {
        let health = client.get(format!("{base}/api/health")).header("Authorization", su.clone()).send();
        let done = restore.is_finished();
        async move {
            let busy = health.await.ok()?.json::<Value>().await.ok()?["data"]["canBackup"] == false;
            (busy || done).then_some(())
        }
    })
    .await;
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let until = Instant::now() + GUARD;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("the server was still running {GUARD:?} after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

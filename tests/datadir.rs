//! The data dir as PocketBase keeps it, from the outside: one server per data dir (the
//! lock), restores that would lock everyone out are refused before the 204 (R31), and a
//! burst of wrong-password logins stays within bounded memory.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{error_body, multipart_file, seed_accounts, status_json, zip_with, BinaryServer, TestServer, SUPERUSER};

fn pb_backups(args: &[&str], dir: &Path) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pb-backups"));
    cmd.args(args).arg("--dir").arg(dir);
    output_within(cmd, Duration::from_secs(60))
}

/// The command's output; a command still running at the deadline (a second server that
/// started serving instead of refusing) is killed and fails the test.
fn output_within(mut cmd: Command, deadline: Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let until = std::time::Instant::now() + deadline;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("{cmd:?} was still running after {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_second_server_or_a_writing_command_on_a_held_data_dir_is_refused_naming_the_holder() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let server = BinaryServer::start(&dir);
    let pid = server.pid().to_string();

    let mut second = Command::new(env!("CARGO_BIN_EXE_pb-backups"));
    second.args(["serve", "--http", "127.0.0.1:0", "--dir"]).arg(&dir);
    let second = output_within(second, Duration::from_secs(60));
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains(&format!("pid {pid}")), "{said}");

    for args in [&["superuser", "upsert", "x@example.com", "password-123"][..], &["user", "delete", "x@example.com"][..]] {
        let out = pb_backups(args, &dir);
        assert!(!out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("pid {pid}")), "{args:?}");
    }

    // A SIGKILLed server leaves no lock behind: the next start and commands work.
    drop(server);
    let out = pb_backups(&["superuser", "upsert", "x@example.com", "password-123"], &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = BinaryServer::start(&dir);
    assert_ne!(again.pid().to_string(), pid);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lock_file_stays_out_of_backups() {
    let s = TestServer::start().await;
    let su = s.superuser_token().await;
    assert!(s.data_dir().join(pb_backups::lock::LOCK_FILE).exists());
    let r = s.client.post(s.url("/api/backups")).header("Authorization", &su).json(&json!({"name": "a.zip"})).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let zip = std::fs::read(s.data_dir().join("backups/a.zip")).unwrap();
    let archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let names: Vec<String> = archive.file_names().map(|n| n.unwrap().into_owned()).collect();
    assert!(names.iter().any(|n| n == "data.db") && names.iter().any(|n| n == "auxiliary.db"), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("lock")), "{names:?}");
}

/// `data.db` made by `setup` on an SQLite file, zipped as a backup would be.
fn zip_of_db(setup: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("data.db")).unwrap();
    conn.execute_batch(setup).unwrap();
    drop(conn);
    zip_with(&[("data.db", &std::fs::read(dir.path().join("data.db")).unwrap())])
}

/// A data dir of ours in PocketBase's layout, changed by `sql`, zipped.
fn zip_of_our_layout(sql: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    seed_accounts(dir.path());
    let conn = rusqlite::Connection::open(dir.path().join("data.db")).unwrap();
    conn.execute_batch(sql).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    drop(conn);
    zip_with(&[("data.db", &std::fs::read(dir.path().join("data.db")).unwrap())])
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_that_would_lock_everyone_out_are_refused_before_the_204_and_change_nothing() {
    let s = TestServer::start().await;
    let su = s.superuser_token().await;
    let before = std::fs::read(s.data_dir().join("data.db")).unwrap();
    let cases = [
        ("foreign.zip", zip_of_db("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('x');")),
        (
            "pocketbase_0_22.zip",
            zip_of_db("CREATE TABLE _admins (id TEXT PRIMARY KEY, email TEXT, passwordHash TEXT, tokenKey TEXT); CREATE TABLE _collections (id TEXT, name TEXT, schema JSON);"),
        ),
        ("empty_db.zip", zip_of_db("PRAGMA user_version = 7;")),
        ("no_superuser.zip", zip_of_our_layout("DELETE FROM _superusers;")),
        ("corrupt_collection.zip", zip_of_our_layout("UPDATE _collections SET options = '{' WHERE name = '_superusers';")),
        (
            "no_secret.zip",
            zip_of_our_layout("UPDATE _collections SET options = json_remove(options, '$.authToken') WHERE name = '_superusers';"),
        ),
        ("no_collection.zip", zip_of_our_layout("DELETE FROM _collections WHERE name = '_superusers';")),
    ];
    for (key, zip) in cases {
        let r = s.client.post(s.url("/api/backups/upload")).header("Authorization", &su).multipart(multipart_file(key, zip)).send().await.unwrap();
        assert_eq!(r.status(), 204, "{key}: a valid zip uploads");
        for (lang, message) in [
            ("zh", "压缩包中的 data.db 没有可用的超级用户账户（需要 PocketBase 0.23 或更高版本的数据目录），恢复后将无人能够登录。"),
            ("en", "The data.db in the archive has no usable superuser account (a PocketBase 0.23+ data dir is needed): nobody could log in after the restore."),
        ] {
            let r = s
                .client
                .post(s.url(&format!("/api/backups/{key}/restore")))
                .header("Authorization", &su)
                .header("Accept-Language", lang)
                .send()
                .await
                .unwrap();
            assert_eq!(status_json(r).await, (400, error_body(400, message)), "{key} {lang}");
        }
    }
    // Nothing changed and the server is not busy: the same superuser works, a create runs.
    assert_eq!(std::fs::read(s.data_dir().join("data.db")).unwrap(), before);
    let su = s.superuser_token().await;
    let r = s.client.post(s.url("/api/backups")).header("Authorization", &su).json(&json!({"name": "after.zip"})).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let temp: Vec<_> = std::fs::read_dir(s.data_dir().join(".pb_temp")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(temp.is_empty(), "{temp:?}");
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 64 clients, each from its own loopback address (so the per-address login throttle lets
/// every attempt through to the password check), try a wrong password at once.
async fn wrong_logins_at_once(base: &str, email: &str) {
    let mut tasks = Vec::new();
    for i in 0..64u8 {
        let client = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 1, i + 1])).build().unwrap();
        let url = format!("{base}/api/collections/_superusers/auth-with-password");
        let email = email.to_string();
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).json(&json!({"identity": email, "password": "wrong-password"})).send().await.unwrap();
            r.status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 400, "every attempt reached the password check");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_wrong_logins_stays_within_bounded_memory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    // A legacy argon2 hash too: the most memory-hungry check the server still makes.
    write_legacy_superuser(&dir);
    let server = BinaryServer::start(&dir);
    wrong_logins_at_once(&server.base, SUPERUSER.0).await;
    wrong_logins_at_once(&server.base, "legacy@example.com").await;
    wrong_logins_at_once(&server.base, "nobody@example.com").await;
    let peak = peak_rss_kib(server.pid());
    println!("peak RSS after 3 x 64 concurrent wrong logins: {} MiB", peak / 1024);
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    // The legacy account still logs in once the burst is over.
    support::login(&reqwest::Client::new(), &server.base, "_superusers", "legacy@example.com", "legacy-password").await;
}

/// Adds a superuser whose password is an argon2 hash, as pb-backups stored them before it
/// kept PocketBase's layout.
fn write_legacy_superuser(dir: &Path) {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    let hash = argon2::Argon2::default().hash_password(b"legacy-password", &salt).unwrap().to_string();
    let conn = rusqlite::Connection::open(dir.join("data.db")).unwrap();
    conn.execute(
        "INSERT INTO _superusers (id, email, password, tokenKey, created, updated) VALUES ('legacy000000001', 'legacy@example.com', ?1, 'legacytokenkeylegacytokenkeylegacytokenkey', '', '')",
        [hash],
    )
    .unwrap();
}

/// A data dir of the old pb-backups layout (argon2 hashes, `_collection_secrets`) becomes
/// PocketBase's at the first command that opens it: every record comes over whole (id,
/// email, hash, token key, times), the collections' secrets with them, so old passwords
/// still log in and tokens signed before the conversion stay valid; the old tables are gone.
#[test]
fn a_legacy_pb_backups_data_dir_is_converted_at_start() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    use pb_backups::accounts::Accounts;
    use pb_backups::auth::{self, TokenKind};

    const SUPERUSERS_ID: &str = "pbc_3142635823";
    const USERS_ID: &str = "_pb_users_auth_";
    // (table, id, email, password, token key, created, updated)
    let legacy_rows = [
        ("_superusers", "legacysu0000001", "old-admin@example.com", "old-admin-password", "superusertokenkeysuperusertokenkeysuperusertokenke", "2024-01-02 03:04:05.678Z", "2024-02-03 04:05:06.789Z"),
        ("users", "legacyus0000001", "old-user@example.com", "old-user-password", "usertokenkeyusertokenkeyusertokenkeyusertokenkeyus", "2024-03-04 05:06:07.890Z", "2024-04-05 06:07:08.901Z"),
    ];
    let hash = |password: &str| {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        argon2::Argon2::default().hash_password(password.as_bytes(), &salt).unwrap().to_string()
    };

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    std::fs::create_dir_all(&dir).unwrap();
    let conn = rusqlite::Connection::open(dir.join("data.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE _collection_secrets (collection_id TEXT PRIMARY KEY NOT NULL, auth_secret TEXT NOT NULL, file_secret TEXT NOT NULL);
         INSERT INTO _collection_secrets VALUES ('pbc_3142635823', 'su-auth-secret', 'su-file-secret'), ('_pb_users_auth_', 'user-auth-secret', 'user-file-secret');
         CREATE TABLE _superusers (id TEXT PRIMARY KEY NOT NULL, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, token_key TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL);
         CREATE TABLE users (id TEXT PRIMARY KEY NOT NULL, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, token_key TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL);",
    )
    .unwrap();
    for (table, id, email, password, token_key, created, updated) in legacy_rows {
        conn.execute(
            &format!("INSERT INTO {table} VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            rusqlite::params![id, email, hash(password), token_key, created, updated],
        )
        .unwrap();
    }
    drop(conn);

    let out = pb_backups(&["superuser", "upsert", "new@example.com", "password-123"], &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let conn = rusqlite::Connection::open(dir.join("data.db")).unwrap();
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM _collections WHERE type = 'auth'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 2);
    // The secrets, in the collections' options where PocketBase keeps them.
    for (id, secrets) in [(SUPERUSERS_ID, ["su-auth-secret", "su-file-secret"]), (USERS_ID, ["user-auth-secret", "user-file-secret"])] {
        let kept: (String, String) = conn
            .query_row(
                "SELECT json_extract(options, '$.authToken.secret'), json_extract(options, '$.fileToken.secret') FROM _collections WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!([kept.0.as_str(), kept.1.as_str()], secrets, "{id}: secrets");
    }
    // The records, whole.
    for (table, id, email, password, token_key, created, updated) in legacy_rows {
        let row: (String, String, String, String, String) = conn
            .query_row(&format!("SELECT email, password, tokenKey, created, updated FROM {table} WHERE id = ?1"), [id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap_or_else(|e| panic!("{table} {id}: {e}"));
        assert_eq!(row, (email.to_string(), hash(password), token_key.to_string(), created.to_string(), updated.to_string()), "{table} {id}");
    }
    let emails = |table: &str| -> Vec<String> {
        let mut stmt = conn.prepare(&format!("SELECT email FROM {table} ORDER BY email")).unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(emails("_superusers"), ["new@example.com", "old-admin@example.com"]);
    assert_eq!(emails("users"), ["old-user@example.com"]);
    let leftovers: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = '_collection_secrets' OR name LIKE '\\_legacy\\_%' ESCAPE '\\'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(leftovers, 0, "the legacy tables are gone");
    drop(conn);

    // A token signed before the conversion (token key, then the collection's secret, as
    // both layouts sign) is still valid; old passwords still log in.
    let accounts = Accounts::open(&dir).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (_, su_id, su_email, _, su_key, ..) = legacy_rows[0];
    let claims = json!({"collectionId": SUPERUSERS_ID, "exp": now + 3600, "id": su_id, "refreshable": true, "type": "auth"});
    let key = format!("{su_key}su-auth-secret");
    let old_token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(key.as_bytes())).unwrap();
    let record = auth::verify(&accounts, &old_token, TokenKind::Auth, now).expect("a token from before the conversion");
    assert_eq!((record.id.as_str(), record.email.as_str()), (su_id, su_email));
    for (table, id, email, password, ..) in legacy_rows {
        let record = accounts.authenticate(table, email, None, password).unwrap();
        assert_eq!(record.map(|r| r.id), Some(id.to_string()), "{table}: login with the old password");
    }
    assert!(accounts.authenticate("_superusers", su_email, None, "wrong-password").unwrap().is_none());
}

#[test]
fn a_foreign_data_db_is_refused_at_start_with_a_clear_message() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    std::fs::create_dir_all(&dir).unwrap();
    rusqlite::Connection::open(dir.join("data.db")).unwrap().execute_batch("CREATE TABLE notes (body TEXT)").unwrap();
    let before = std::fs::read(dir.join("data.db")).unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_pb-backups"));
    serve.args(["serve", "--http", "127.0.0.1:0", "--dir"]).arg(&dir);
    let out = output_within(serve, Duration::from_secs(60));
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("not a PocketBase data dir"), "{said}");
    assert_eq!(std::fs::read(dir.join("data.db")).unwrap(), before);
}

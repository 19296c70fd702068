//! One data format with PocketBase (R31, R32), proven against the real PocketBase binaries
//! (0.40.6 and 0.23.12, fetched and cached by `scripts/pocketbase-bin`; the tests fail, never
//! skip, when they cannot be had): its backups restore here with their accounts, tokens,
//! collections and files; ours restore there; each server serves the other's data dir, and
//! the bucket its settings keep backups in (`s3`).
//!
//! The helpers here (a real PocketBase, logins, downloads) serve the submodules too.

#[path = "../support/mod.rs"]
mod support;
mod rules;

mod mfa;

mod kept_in_place;

mod cors;

mod s3;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::{eventually, multipart_file, seed_accounts, BinaryServer, SUPERUSER, USER};

const PB_SUPERUSER: (&str, &str) = ("pb-admin@example.com", "pb-admin-password");
const PB_USER: (&str, &str) = ("pb-user@example.com", "pb-user-password");
const NOTE_FILE: &[u8] = b"a file PocketBase keeps in storage/\n";

/// The path of the real PocketBase of `version`, fetched on first use.
fn pocketbase_bin(version: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pocketbase-bin");
    let out = Command::new(&script).arg(version).output().expect("run scripts/pocketbase-bin");
    assert!(
        out.status.success(),
        "PocketBase {version} is needed for this test and could not be had: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A real PocketBase serving a data dir on a free loopback port.
struct PocketBase {
    child: Child,
    base: String,
    log: PathBuf,
}

impl PocketBase {
    fn superuser_upsert(bin: &Path, dir: &Path, (email, password): (&str, &str)) {
        let out = Command::new(bin).args(["superuser", "upsert", email, password, "--dir"]).arg(dir).output().unwrap();
        assert!(out.status.success(), "pocketbase superuser upsert: {}", String::from_utf8_lossy(&out.stderr));
    }

    async fn start(bin: &Path, dir: &Path) -> PocketBase {
        // PocketBase prints no address for port 0: take a free port and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.with_extension("pocketbase.log");
        let child = Command::new(bin)
            .args(["serve", "--http", &format!("127.0.0.1:{port}"), "--dir"])
            .arg(dir)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pocketbase");
        let pb = PocketBase { child, base: format!("http://127.0.0.1:{port}"), log };
        pb.wait_serving().await;
        pb
    }

    async fn wait_serving(&self) {
        let client = reqwest::Client::new();
        let url = format!("{}/api/health", self.base);
        eventually(Duration::from_secs(60), "PocketBase serving", || {
            let client = client.clone();
            let url = url.clone();
            async move { matches!(client.get(&url).send().await, Ok(r) if r.status() == 200).then_some(()) }
        })
        .await;
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.log;
    }
}

impl Drop for PocketBase {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status and body of a password login.
async fn try_login(base: &str, collection: &str, (email, password): (&str, &str)) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/collections/{collection}/auth-with-password"))
        .json(&json!({"identity": email, "password": password}))
        .send()
        .await;
    match r {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}

async fn login(base: &str, collection: &str, who: (&str, &str)) -> String {
    let (status, body) = try_login(base, collection, who).await;
    assert_eq!(status, 200, "login of {} at {base}: {body}", who.0);
    body["token"].as_str().unwrap().to_string()
}

/// Waits until `who` can log in at `base` (a restore restarts the server), then logs in.
async fn login_eventually(base: &str, collection: &str, who: (&str, &str)) -> String {
    eventually(Duration::from_secs(60), "login after the restore", || async move {
        let (status, body) = try_login(base, collection, who).await;
        (status == 200).then(|| body["token"].as_str().unwrap().to_string())
    })
    .await
}

async fn status_of(r: reqwest::RequestBuilder) -> u16 {
    r.send().await.unwrap().status().as_u16()
}

async fn list_status(base: &str, token: &str) -> u16 {
    status_of(reqwest::Client::new().get(format!("{base}/api/backups")).header("Authorization", token)).await
}

async fn create_backup(base: &str, token: &str, name: &str) {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/backups"))
        .header("Authorization", token)
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "create {name} at {base}: {}", r.text().await.unwrap());
}

async fn download(base: &str, token: &str, key: &str) -> Vec<u8> {
    let client = reqwest::Client::new();
    let r = client.post(format!("{base}/api/files/token")).header("Authorization", token).send().await.unwrap();
    let file_token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    let r = client.get(format!("{base}/api/backups/{key}?token={file_token}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "download {key} from {base}");
    r.bytes().await.unwrap().to_vec()
}

async fn upload_and_restore(base: &str, token: &str, key: &str, zip: Vec<u8>) {
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/api/backups/upload"))
        .header("Authorization", token)
        .multipart(multipart_file(key, zip))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "upload {key} to {base}: {}", r.text().await.unwrap());
    let r = client.post(format!("{base}/api/backups/{key}/restore")).header("Authorization", token).send().await.unwrap();
    assert_eq!(r.status(), 204, "restore {key} at {base}: {}", r.text().await.unwrap());
}

/// What a PocketBase data dir holds after the setup below.
struct PocketBaseData {
    superuser_token: String,
    user_token: String,
    note_collection: String,
    note_id: String,
    note_file: String,
}

/// On a running PocketBase: a regular user, a collection of its own with a record and a file.
async fn populate(pb: &PocketBase) -> PocketBaseData {
    let client = reqwest::Client::new();
    let su = login(&pb.base, "_superusers", PB_SUPERUSER).await;
    let r = client
        .post(format!("{}/api/collections/users/records", pb.base))
        .header("Authorization", &su)
        .json(&json!({"email": PB_USER.0, "password": PB_USER.1, "passwordConfirm": PB_USER.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "create user: {}", r.text().await.unwrap());
    let r = client
        .post(format!("{}/api/collections", pb.base))
        .header("Authorization", &su)
        .json(&json!({"name": "notes", "type": "base", "fields": [
            {"name": "title", "type": "text"},
            {"name": "doc", "type": "file", "maxSelect": 1, "maxSize": 1_000_000}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "create collection: {}", r.text().await.unwrap());
    let note_collection = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let form = reqwest::multipart::Form::new()
        .text("title", "hello from PocketBase")
        .part("doc", reqwest::multipart::Part::bytes(NOTE_FILE.to_vec()).file_name("note.txt"));
    let r = client
        .post(format!("{}/api/collections/notes/records", pb.base))
        .header("Authorization", &su)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "create record: {}", r.text().await.unwrap());
    let record: Value = r.json().await.unwrap();
    PocketBaseData {
        user_token: login(&pb.base, "users", PB_USER).await,
        superuser_token: su,
        note_collection,
        note_id: record["id"].as_str().unwrap().to_string(),
        note_file: record["doc"].as_str().unwrap().to_string(),
    }
}

/// The files of a zip: entry name → bytes (directories left out).
fn zip_files(zip: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let mut files = BTreeMap::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        if entry.is_file() {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            files.insert(entry.name().unwrap().into_owned(), bytes);
        }
    }
    files
}

/// Every row of every table of the SQLite database at `path`, as text: equal for two
/// databases with the same content, whatever their WAL state or page layout.
fn db_content(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").unwrap();
    let tables: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    let mut rows = Vec::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM `{table}` ORDER BY rowid")).unwrap();
        let columns = stmt.column_count();
        let mut query = stmt.query([]).unwrap();
        while let Some(row) = query.next().unwrap() {
            let values: Vec<String> = (0..columns).map(|i| format!("{:?}", row.get_ref(i).unwrap())).collect();
            rows.push(format!("{table}: {}", values.join(", ")));
        }
    }
    rows
}

fn is_sqlite_side_file(name: &str) -> bool {
    name.ends_with("-wal") || name.ends_with("-shm")
}

/// The files of `archive` whose content the data dir does not hold: other files byte for
/// byte, SQLite databases by their rows (opening one merges its write-ahead log, which
/// rewrites the file but not its content).
fn differing_files(archive: &BTreeMap<String, Vec<u8>>, dir: &Path) -> Vec<String> {
    let unpacked = tempfile::tempdir().unwrap();
    for (name, bytes) in archive {
        let path = unpacked.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let mut differing = Vec::new();
    for (name, bytes) in archive {
        let same = if is_sqlite_side_file(name) {
            true
        } else if bytes.starts_with(b"SQLite format 3\0") {
            dir.join(name).exists() && db_content(&unpacked.path().join(name)) == db_content(&dir.join(name))
        } else {
            std::fs::read(dir.join(name)).ok().as_deref() == Some(bytes.as_slice())
        };
        if !same {
            differing.push(name.clone());
        }
    }
    differing
}

async fn pocketbase_backup_restores_here(version: &str) {
    let bin = pocketbase_bin(version);
    let root = tempfile::tempdir().unwrap();
    let pb_dir = root.path().join("pb_data");
    PocketBase::superuser_upsert(&bin, &pb_dir, PB_SUPERUSER);
    let pb = PocketBase::start(&bin, &pb_dir).await;
    let data = populate(&pb).await;
    create_backup(&pb.base, &data.superuser_token, "from_pocketbase.zip").await;
    let zip = download(&pb.base, &data.superuser_token, "from_pocketbase.zip").await;
    pb.stop();
    // PocketBase lists its entries in walk order (its databases first): read here a record at
    // a time, in memory that does not grow with the data dir.
    let copy = root.path().join("from_pocketbase.zip");
    std::fs::write(&copy, &zip).unwrap();
    let summary = pb_backups::archive::validate(&copy, &Default::default()).unwrap();
    assert!(summary.in_walk_order, "PocketBase {version}: {summary:?}");

    let ours_dir = root.path().join("ours");
    seed_accounts(&ours_dir);
    let ours = BinaryServer::start(&ours_dir);
    let su = login(&ours.base, "_superusers", SUPERUSER).await;
    upload_and_restore(&ours.base, &su, "from_pocketbase.zip", zip.clone()).await;
    // Serving the restored data once a token PocketBase issued is valid (checking one writes
    // nothing; a login would, as on PocketBase: it records its origin in `_authOrigins`).
    eventually(Duration::from_secs(60), "the restored data served", || async {
        let r = reqwest::Client::new().get(format!("{}/api/backups", ours.base)).header("Authorization", &data.superuser_token);
        matches!(r.send().await, Ok(r) if r.status() == 200).then_some(())
    })
    .await;

    // The data dir holds exactly the archive's files and databases.
    let files = zip_files(&zip);
    assert!(files.contains_key("data.db"), "{:?}", files.keys());
    assert_eq!(differing_files(&files, &ours_dir), Vec::<String>::new(), "PocketBase {version}");
    let pb_su = login(&ours.base, "_superusers", PB_SUPERUSER).await;

    // Its accounts and the tokens PocketBase issued work here; ours are gone (R24).
    assert_eq!(list_status(&ours.base, &data.superuser_token).await, 200, "a token PocketBase issued");
    assert_eq!(list_status(&ours.base, &pb_su).await, 200);
    let user = login(&ours.base, "users", PB_USER).await;
    assert_eq!(list_status(&ours.base, &user).await, 403);
    assert_eq!(list_status(&ours.base, &data.user_token).await, 403, "a user token PocketBase issued");
    assert_eq!(try_login(&ours.base, "_superusers", SUPERUSER).await.0, 400);

    // Its own collection's rows and files are intact.
    let conn = rusqlite::Connection::open(ours_dir.join("data.db")).unwrap();
    let title: String =
        conn.query_row("SELECT title FROM notes WHERE id = ?1", [&data.note_id], |r| r.get(0)).unwrap();
    assert_eq!(title, "hello from PocketBase");
    let stored = ours_dir.join("storage").join(&data.note_collection).join(&data.note_id).join(&data.note_file);
    assert_eq!(std::fs::read(&stored).unwrap(), NOTE_FILE);

    // Backups go on working.
    create_backup(&ours.base, &pb_su, "after_restore.zip").await;
    let again = zip_files(&download(&ours.base, &pb_su, "after_restore.zip").await);
    assert!(again.contains_key("data.db") && again.keys().any(|k| k.starts_with("storage/")), "{:?}", again.keys());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pocketbase_0_40_backup_restores_here_with_its_accounts_tokens_and_files() {
    pocketbase_backup_restores_here("0.40.6").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pocketbase_0_23_backup_restores_here_with_its_accounts_tokens_and_files() {
    pocketbase_backup_restores_here("0.23.12").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn our_backup_restores_on_pocketbase_with_our_accounts_and_tokens() {
    let bin = pocketbase_bin("0.40.6");
    let root = tempfile::tempdir().unwrap();
    let ours_dir = root.path().join("ours");
    seed_accounts(&ours_dir);
    let ours = BinaryServer::start(&ours_dir);
    let su = login(&ours.base, "_superusers", SUPERUSER).await;
    create_backup(&ours.base, &su, "from_ours.zip").await;
    let zip = download(&ours.base, &su, "from_ours.zip").await;
    drop(ours);

    let pb_dir = root.path().join("pb_data");
    PocketBase::superuser_upsert(&bin, &pb_dir, PB_SUPERUSER);
    let pb = PocketBase::start(&bin, &pb_dir).await;
    let pb_su = login(&pb.base, "_superusers", PB_SUPERUSER).await;
    upload_and_restore(&pb.base, &pb_su, "from_ours.zip", zip.clone()).await;
    // PocketBase restarts itself; then our superuser logs in there and our token is valid.
    let our_su_there = login_eventually(&pb.base, "_superusers", SUPERUSER).await;
    pb.wait_serving().await;
    assert_eq!(list_status(&pb.base, &our_su_there).await, 200);
    assert_eq!(list_status(&pb.base, &su).await, 200, "a token we issued, checked by PocketBase");
    let user = login(&pb.base, "users", USER).await;
    assert_eq!(list_status(&pb.base, &user).await, 403);
    assert_eq!(try_login(&pb.base, "_superusers", PB_SUPERUSER).await.0, 400, "PocketBase's own accounts are replaced");
    // Every file of our archive is in PocketBase's data dir as it was; data.db aside, which
    // PocketBase writes to at once (its logins, its settings).
    let mut files = zip_files(&zip);
    assert!(files.remove("data.db").is_some());
    assert_eq!(differing_files(&files, &pb_dir), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn each_server_serves_the_other_s_data_dir() {
    let bin = pocketbase_bin("0.40.6");
    let root = tempfile::tempdir().unwrap();

    // Ours on a stopped PocketBase's pb_data.
    let pb_dir = root.path().join("pb_data");
    PocketBase::superuser_upsert(&bin, &pb_dir, PB_SUPERUSER);
    let pb = PocketBase::start(&bin, &pb_dir).await;
    let data = populate(&pb).await;
    pb.stop();
    let ours = BinaryServer::start(&pb_dir);
    assert_eq!(list_status(&ours.base, &data.superuser_token).await, 200);
    let su = login(&ours.base, "_superusers", PB_SUPERUSER).await;
    assert_eq!(list_status(&ours.base, &login(&ours.base, "users", PB_USER).await).await, 403);
    create_backup(&ours.base, &su, "ours_on_pocketbase_data.zip").await;
    drop(ours);
    // PocketBase again on the same dir: it lists the backup we made and still serves its accounts.
    let pb = PocketBase::start(&bin, &pb_dir).await;
    let su = login(&pb.base, "_superusers", PB_SUPERUSER).await;
    let list: Value = reqwest::Client::new()
        .get(format!("{}/api/backups", pb.base))
        .header("Authorization", &su)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list.as_array().unwrap().iter().any(|b| b["key"] == "ours_on_pocketbase_data.zip"), "{list}");
    pb.stop();

    // PocketBase on a data dir we initialised.
    let ours_dir = root.path().join("ours");
    seed_accounts(&ours_dir);
    let ours = BinaryServer::start(&ours_dir);
    let our_token = login(&ours.base, "_superusers", SUPERUSER).await;
    drop(ours);
    let pb = PocketBase::start(&bin, &ours_dir).await;
    let su = login(&pb.base, "_superusers", SUPERUSER).await;
    assert_eq!(list_status(&pb.base, &su).await, 200);
    assert_eq!(list_status(&pb.base, &our_token).await, 200, "a token we issued");
    assert_eq!(list_status(&pb.base, &login(&pb.base, "users", USER).await).await, 403);
    // It can create a collection and a record there, as on its own data dir.
    let r = reqwest::Client::new()
        .post(format!("{}/api/collections", pb.base))
        .header("Authorization", &su)
        .json(&json!({"name": "posts", "type": "base", "fields": [{"name": "title", "type": "text"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    pb.stop();
    // And ours serves it again afterwards.
    let ours = BinaryServer::start(&ours_dir);
    assert_eq!(list_status(&ours.base, &login(&ours.base, "_superusers", SUPERUSER).await).await, 200);
}

/// Runs `tests/sdk/interop.mjs` (official JS SDK) against `base`; its JSON result.
fn sdk_flow(base: &str, superuser: (&str, &str), user: (&str, &str)) -> Value {
    let out = support::node_sdk(&["interop.mjs"], base, superuser, user);
    assert!(out.status.success(), "SDK flow against {base}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_js_sdk_gets_the_same_results_from_both_on_one_data_dir() {
    let bin = pocketbase_bin("0.40.6");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    PocketBase::superuser_upsert(&bin, &dir, PB_SUPERUSER);
    let pb = PocketBase::start(&bin, &dir).await;
    populate(&pb).await;
    let theirs = sdk_flow(&pb.base, PB_SUPERUSER, PB_USER);
    pb.stop();
    let ours = BinaryServer::start(&dir);
    let mine = sdk_flow(&ours.base, PB_SUPERUSER, PB_USER);
    assert_eq!(mine, theirs);
    assert_eq!(mine["userListStatus"], 403);
    assert_eq!(mine["download"]["zipMagic"], json!([0x50, 0x4b, 0x03, 0x04]));
    assert_eq!(mine["listedAfterUpload"], json!(["sdk_interop.zip", "sdk_interop_copy.zip"]));
    assert_eq!(mine["listedAtEnd"], json!([]));
}

/// A `backups` schedule is one setting for both servers: the one we store is PocketBase's
/// (it registers it as a cron job), the one PocketBase stores is ours.
#[tokio::test(flavor = "multi_thread")]
async fn a_backups_schedule_is_shared_with_pocketbase_both_ways() {
    let bin = pocketbase_bin("0.40.6");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let client = reqwest::Client::new();
    let patch = |base: &str, token: &str, body: Value| {
        client.patch(format!("{base}/api/settings")).header("Authorization", token.to_string()).json(&body).send()
    };
    let get = |base: &str, token: &str, path: &str| {
        client.get(format!("{base}{path}")).header("Authorization", token.to_string()).send()
    };

    let ours = BinaryServer::start(&dir);
    let su = login(&ours.base, "_superusers", SUPERUSER).await;
    let r = patch(&ours.base, &su, json!({"backups": {"cron": "15 4 * * 1", "cronMaxKeep": 6}})).await.unwrap();
    assert_eq!(r.status(), 200);
    drop(ours);

    let pb = PocketBase::start(&bin, &dir).await;
    let su = login(&pb.base, "_superusers", SUPERUSER).await;
    let settings: Value = get(&pb.base, &su, "/api/settings").await.unwrap().json().await.unwrap();
    assert_eq!(settings["backups"]["cron"], "15 4 * * 1", "{settings}");
    assert_eq!(settings["backups"]["cronMaxKeep"], 6);
    let crons: Value = get(&pb.base, &su, "/api/crons").await.unwrap().json().await.unwrap();
    assert!(crons.as_array().unwrap().iter().any(|job| job["expression"] == "15 4 * * 1"), "no auto backup job: {crons}");
    let r = patch(&pb.base, &su, json!({"backups": {"cron": "@daily", "cronMaxKeep": 2}})).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    pb.stop();

    let stored = pb_backups::settings::load(&dir).unwrap();
    assert_eq!((stored.backups.cron.as_str(), stored.backups.cron_max_keep), ("@daily", 2));
    let ours = BinaryServer::start(&dir);
    let su = login(&ours.base, "_superusers", SUPERUSER).await;
    let settings: Value = get(&ours.base, &su, "/api/settings").await.unwrap().json().await.unwrap();
    assert_eq!((&settings["backups"]["cron"], &settings["backups"]["cronMaxKeep"]), (&json!("@daily"), &json!(2)));
}

//! `pb-backups backups verify` on good and damaged archives (beside a running server), the
//! restore refusing what verify refuses, and health's `canBackup` for superusers.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

use support::*;

/// `backups verify` on `dir`, with its work files in `work` (its `TMPDIR`).
fn verify_in(dir: &Path, work: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pb-backups"))
        .args(["backups", "verify", "--dir"])
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .env("TMPDIR", work)
        .output()
        .expect("run pb-backups")
}

/// Every path under `dir` (SQLite's side files aside: the running server's), with the
/// bytes of each backup.
fn listing(dir: &Path) -> std::collections::BTreeMap<String, Option<Vec<u8>>> {
    fn walk(base: &Path, folder: &Path, out: &mut std::collections::BTreeMap<String, Option<Vec<u8>>>) {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if ["-wal", "-shm", "-journal"].iter().any(|s| rel.ends_with(s)) {
                continue;
            }
            if path.is_dir() {
                out.insert(format!("{rel}/"), None);
                walk(base, &path, out);
            } else {
                out.insert(rel.clone(), rel.starts_with("backups/").then(|| std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Default::default();
    walk(dir, dir, &mut out);
    out
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A copy of `data.db` whose table b-tree pages are damaged past the header: still an SQLite
/// file, but `integrity_check` fails.
fn corrupt_db(good: &[u8]) -> Vec<u8> {
    let page = u16::from_be_bytes([good[16], good[17]]) as usize;
    let mut bad = good.to_vec();
    // Page 1 is the schema; scribble over the cell areas of the pages after it.
    for p in 1..(bad.len() / page) {
        for b in &mut bad[p * page + 8..p * page + page / 2] {
            *b = 0x5a;
        }
    }
    bad
}

/// A zip whose entries are stored uncompressed, so their bytes can be found and damaged.
fn stored_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut buf);
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
    buf.into_inner()
}

#[test]
fn verify_passes_good_backups_and_names_what_is_wrong_with_bad_ones() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let server = BinaryServer::start(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let token = login(&client, &server.base, "_superusers", SUPERUSER.0, SUPERUSER.1).await;
        let r = client.post(format!("{}/api/backups", server.base)).header("Authorization", &token).json(&json!({"name": "good.zip"}));
        assert_eq!(r.send().await.unwrap().status(), 204);
    });
    let backups = dir.join("backups");
    let work = root.path().join("verify-work");
    std::fs::create_dir(&work).unwrap();
    let verify = |dir: &Path, args: &[&str]| verify_in(dir, &work, args);
    // While the server runs (read-only).
    let ok = verify(&dir, &["good.zip"]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("ok   good.zip"), "{}", text(&ok));

    let good_zip = std::fs::read(backups.join("good.zip")).unwrap();
    let data_db = {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&good_zip)).unwrap();
        let mut entry = archive.by_name("data.db").unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        bytes
    };
    // A flipped byte inside an entry's (stored) data: its CRC no longer matches.
    let mut flipped = stored_zip(&[("data.db", &data_db), ("notes.txt", b"hello, this is some text")]);
    let at = flipped.windows(5).position(|w| w == b"hello").unwrap() + 2;
    flipped[at] ^= 0xff;
    std::fs::write(backups.join("crc.zip"), flipped).unwrap();
    std::fs::write(backups.join("corrupt_db.zip"), zip_with(&[("data.db", &corrupt_db(&data_db))])).unwrap();
    let empty_db = {
        let tmp = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(tmp.path().join("x.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
        drop(conn);
        std::fs::read(tmp.path().join("x.db")).unwrap()
    };
    std::fs::write(backups.join("no_accounts.zip"), zip_with(&[("data.db", &empty_db)])).unwrap();
    std::fs::write(backups.join("unsafe.zip"), zip_with(&[("data.db", &data_db), ("../escape.txt", b"x")])).unwrap();
    let before = listing(&dir);

    // Each with its reason, exactly.
    let reasons = [
        ("crc.zip", "entry \"notes.txt\" does not match its declared size or checksum"),
        ("corrupt_db.zip", CORRUPT_DB),
        ("no_accounts.zip", "data.db: it holds tables but is not a PocketBase data dir (no `_collections` table)"),
        ("unsafe.zip", "unsafe entry name \"../escape.txt\""),
    ];
    for (key, reason) in reasons {
        let out = verify(&dir, &[key]);
        assert_eq!(out.status.code(), Some(1), "{key}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("BAD  {key}: {reason}\n"), "{key}");
    }
    let missing = verify(&dir, &["never_made.zip"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing).contains("404"), "{}", text(&missing));
    let all = verify(&dir, &["--all"]);
    assert_eq!(all.status.code(), Some(1), "{}", text(&all));
    assert!(text(&all).contains("ok   good.zip") && text(&all).contains("4 of 5 backups would not restore"), "{}", text(&all));
    for (key, reason) in reasons {
        assert!(text(&all).lines().any(|l| l == format!("BAD  {key}: {reason}")), "{key}: {}", text(&all));
    }

    // The restore makes the same checks before its 204: the damaged database is refused.
    rt.block_on(async {
        let client = reqwest::Client::new();
        let token = login(&client, &server.base, "_superusers", SUPERUSER.0, SUPERUSER.1).await;
        let r = client.post(format!("{}/api/backups/corrupt_db.zip/restore", server.base)).header("Authorization", &token);
        let (status, body) = status_json(r.header("Accept-Language", "en").send().await.unwrap()).await;
        assert_eq!((status, body["message"].as_str()), (400, Some("The archive is corrupt.")), "{body}");
    });
    // Verify (and the refused restore) left nothing behind: the data dir holds the same
    // files, the backups the same bytes, and verify's work folder is empty.
    let after = listing(&dir);
    assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>(), "paths in the data dir");
    assert!(after == before, "a backup's bytes changed");
    assert!(after.contains_key("backups/good.zip") && after.contains_key("backups/unsafe.zip"));
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0, "verify's work files are gone");
}

/// What `integrity_check` makes of the damaged database of `corrupt_db`.
const CORRUPT_DB: &str = "data.db in the archive fails SQLite's integrity check: database disk image is malformed";

#[tokio::test]
async fn health_tells_superusers_whether_a_backup_can_start() {
    let gate = support::gate::Gate::new();
    gate.hold_next();
    let server = TestServer::start_with(Options { create_gate: Some(gate.hook()), ..Default::default() }).await;
    let su = server.superuser_token().await;
    let user = server.user_token().await;
    let health = |auth: Option<String>| {
        let mut r = server.client.get(server.url("/api/health"));
        if let Some(auth) = auth {
            r = r.header("Authorization", auth);
        }
        async move { r.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(health(Some(su.clone())).await["data"], json!({"canBackup": true}));
    assert_eq!(health(Some(user.clone())).await["data"], json!({}));
    assert_eq!(health(None).await["data"], json!({}));
    let create = tokio::spawn(server.client.post(server.url("/api/backups")).header("Authorization", su.clone()).json(&json!({})).send());
    gate.held().await;
    let busy = health(Some(su.clone())).await["data"].clone();
    // With how far the create is (see tests/extensions.rs).
    assert_eq!((&busy["canBackup"], &busy["progress"]["action"]), (&json!(false), &json!("create")), "{busy}");
    gate.release();
    assert_eq!(create.await.unwrap().unwrap().status(), 204);
    let idle = eventually(Duration::from_secs(10), "canBackup again", || {
        let h = health(Some(su.clone()));
        async move { (h.await["data"]["canBackup"] == true).then_some(()) }
    });
    idle.await;
    server.stop().await;
}

/// The same verdicts for backups in an S3 bucket (moto), with the storage flags of `serve`.
#[tokio::test(flavor = "multi_thread")]
async fn verify_reads_backups_from_s3() {
    use object_store::ObjectStoreExt;
    let endpoint = support::s3::moto();
    let bucket = support::s3::new_bucket(endpoint).await;
    let seeded = tempfile::tempdir().unwrap();
    seed_accounts(seeded.path());
    let data_db = std::fs::read(seeded.path().join("data.db")).unwrap();
    let store = support::s3::raw(endpoint, &bucket);
    for (name, zip) in [("good.zip", zip_with(&[("data.db", &data_db)])), ("bad.zip", zip_with(&[("data.db", &corrupt_db(&data_db))]))] {
        let path = object_store::path::Path::parse(format!("site/{name}")).unwrap();
        store.put(&path, zip.into()).await.unwrap();
    }
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pb-backups"))
            .args(["backups", "verify"])
            .args(args)
            .args(["--dir", seeded.path().to_str().unwrap(), "--backups-s3-bucket", &bucket, "--backups-s3-endpoint", endpoint])
            .args(["--backups-s3-prefix", "site", "--backups-s3-path-style"])
            .env("PB_BACKUPS_S3_ACCESS_KEY", "test")
            .env("PB_BACKUPS_S3_SECRET_KEY", "test")
            .output()
            .unwrap()
    };
    let good = run(&["good.zip"]);
    assert!(good.status.success(), "{}", text(&good));
    let all = run(&["--all"]);
    assert_eq!(all.status.code(), Some(1), "{}", text(&all));
    assert!(text(&all).lines().any(|l| l.starts_with("ok   good.zip: ")), "{}", text(&all));
    assert!(text(&all).lines().any(|l| l == format!("BAD  bad.zip: {CORRUPT_DB}")), "{}", text(&all));
    let missing = run(&["gone.zip"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing).contains("404"), "{}", text(&missing));
}

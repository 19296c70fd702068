//! The backups API with backups in an S3-compatible bucket: a moto server on 127.0.0.1,
//! started once for this file by `scripts/s3-test-server` (which installs it on first use),
//! one fresh bucket per test. Covers the endpoints' flows on S3, the storage contract
//! (multipart, ranges, conditional publish), two servers sharing a bucket, an endpoint that
//! dies mid-create, uploads cut off half-way (no multipart upload left behind), the
//! storage 400 for an unreachable endpoint or a missing bucket, and the bucket chosen by the
//! settings' `backups.s3` (per operation, the flags winning) for the API and the offline
//! commands.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt, PutPayload};
use pb_backups::model::names::BackupKey;
use pb_backups::storage::s3::{Activity, S3Storage};
use pb_backups::storage::{BackupStorage, StorageError, Upload};
use serde_json::{json, Value};
use support::s3::{config, moto, multipart_uploads, new_bucket, object_names, raw};
use support::gate::Gate;
use support::*;
use std::io::Write;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const STORAGE_FAILURE: &str = pb_backups_spec::Lang::Zh.messages().storage_failure;
const STORAGE_FAILURE_EN: &str = pb_backups_spec::Lang::En.messages().storage_failure;
const BUSY: &str = pb_backups_spec::Lang::Zh.messages().busy_delete_restore;
const BUSY_CREATE: &str = pb_backups_spec::Lang::Zh.messages().busy_create;

// ---- the S3 server (moto, buckets, configs: support::s3) ----

async fn s3_server(bucket: &str, prefix: &str) -> TestServer {
    TestServer::start_with(Options { s3: Some(config(moto(), bucket, prefix)), ..Default::default() }).await
}

// ---- HTTP helpers ----

async fn upload(s: &TestServer, token: &str, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let r = s.client.post(s.url("/api/backups/upload")).header("Authorization", token);
    status_json(r.multipart(multipart_file(name, bytes)).send().await.unwrap()).await
}

async fn delete(s: &TestServer, token: &str, key: &str) -> (u16, Value) {
    status_json(s.client.delete(s.url(&format!("/api/backups/{key}"))).header("Authorization", token).send().await.unwrap()).await
}

async fn restore(s: &TestServer, token: &str, key: &str) -> (u16, Value) {
    let r = s.client.post(s.url(&format!("/api/backups/{key}/restore"))).header("Authorization", token);
    status_json(r.send().await.unwrap()).await
}

async fn download(s: &TestServer, token: &str, key: &str) -> Vec<u8> {
    let ft = s.file_token(token).await;
    let r = s.client.get(s.url(&format!("/api/backups/{key}?token={ft}"))).send().await.unwrap();
    assert_eq!(r.status(), 200, "download {key}");
    r.bytes().await.unwrap().to_vec()
}


// ---- tests ----

#[tokio::test]
async fn endpoint_flows_on_s3() {
    let bucket = new_bucket(moto()).await;
    let s = s3_server(&bucket, "/site-a/backups/").await;
    let su = s.superuser_token().await;
    assert_eq!(keys(&s, &su).await, Vec::<String>::new());

    std::fs::write(s.data_dir().join("marker.txt"), "before").unwrap();
    assert_eq!(create(&s, &su, json!({"name": "first.zip"})).await, (204, Value::Null));
    assert_eq!(create(&s, &su, json!({})).await.0, 204, "generated name");
    let all = keys(&s, &su).await;
    assert_eq!(all.len(), 2);
    assert!(all[0] == "first.zip" && all[1].starts_with("pb_backup_"), "{all:?}");
    let (_, body) = list(&s, &su).await;
    let first = body.as_array().unwrap().iter().find(|e| e["key"] == "first.zip").unwrap().clone();
    assert!(first["modified"].as_str().unwrap().ends_with('Z'));

    // Under the prefix in the bucket, and nothing in the data dir.
    let store = raw(moto(), &bucket);
    assert!(object_names(&store).await.contains(&"site-a/backups/first.zip".to_string()));
    assert!(!s.data_dir().join("backups/first.zip").exists());
    assert_eq!(create(&s, &su, json!({"name": "first.zip"})).await.1["data"]["name"]["code"], "validation_backup_name_exists");

    // Download: whole, then a range passed through to S3.
    let bytes = download(&s, &su, "first.zip").await;
    assert_eq!(bytes.len() as u64, first["size"].as_u64().unwrap());
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.clone())).unwrap();
    assert!(zip.by_name("data.db").is_ok() && zip.by_name("marker.txt").is_ok());
    let ft = s.file_token(&su).await;
    let r = s.client.get(s.url(&format!("/api/backups/first.zip?token={ft}"))).header("Range", "bytes=2-5").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], format!("bytes 2-5/{}", bytes.len()));
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[2..6]);

    // Upload, name taken, delete, 404s.
    assert_eq!(upload(&s, &su, "Uploaded Copy.zip", bytes.clone()).await, (204, Value::Null));
    assert_eq!(upload(&s, &su, "Uploaded Copy.zip", bytes.clone()).await.1["data"]["file"]["code"], "validation_backup_name_exists");
    assert_eq!(download(&s, &su, "Uploaded%20Copy.zip").await, bytes);
    assert_eq!(delete(&s, &su, "Uploaded%20Copy.zip").await, (204, Value::Null));
    assert_eq!(delete(&s, &su, "Uploaded%20Copy.zip").await, (404, error_body(404, "请求的资源未找到。")));
    assert_eq!(restore(&s, &su, "missing.zip").await.0, 404);
    let r = s.client.get(s.url(&format!("/api/backups/missing.zip?token={ft}"))).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // Restore: fetched from S3, swapped in, served again; the bucket is untouched.
    std::fs::write(s.data_dir().join("marker.txt"), "after").unwrap();
    assert_eq!(restore(&s, &su, "first.zip").await, (204, Value::Null));
    eventually(Duration::from_secs(30), "the restored data", || async {
        (std::fs::read_to_string(s.data_dir().join("marker.txt")).ok()? == "before").then_some(())
    })
    .await;
    let su = eventually(Duration::from_secs(30), "the restarted server", || async {
        let r = s.client.post(s.url("/api/collections/_superusers/auth-with-password"))
            .json(&json!({"identity": SUPERUSER.0, "password": SUPERUSER.1})).send().await.ok()?;
        let token = r.json::<Value>().await.ok()?["token"].as_str()?.to_string();
        (create(&s, &token, json!({"name": "after-restore.zip"})).await.0 == 204).then_some(token)
    })
    .await;
    assert_eq!(keys(&s, &su).await.len(), 3);
    let names = object_names(&store).await;
    assert!(names.iter().all(|n| !n.contains(".leases")), "no lease left: {names:?}");
    s.stop().await;
}

/// A shared bucket is foreign: a listing that meets more objects under the prefix than its cap
/// fails (the API's storage error) instead of paging on without end.
#[tokio::test]
async fn a_listing_past_its_object_cap_fails_closed() {
    let bucket = new_bucket(moto()).await;
    let store = raw(moto(), &bucket);
    for name in ["q/a.zip", "q/b.zip", "q/sub/notes.txt"] {
        store.put(&ObjPath::parse(name).unwrap(), PutPayload::from_static(b"x")).await.unwrap();
    }
    let capped = |max_listed| {
        let mut c = config(moto(), &bucket, "q");
        c.max_listed = max_listed;
        S3Storage::new(c).unwrap()
    };
    assert_eq!(capped(3).list().await.unwrap().len(), 2, "at the cap: listed");
    let refused = capped(2).list().await;
    assert!(matches!(refused, Err(StorageError::Unavailable(_))), "{refused:?}");
}

#[tokio::test]
async fn storage_contract_on_s3() {
    let bucket = new_bucket(moto()).await;
    let store = raw(moto(), &bucket);
    let s3 = S3Storage::new(config(moto(), &bucket, "p")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = |k: &str| BackupKey::parse(k).unwrap();

    // 20 MiB: four parts of 5 MiB, two in flight.
    let big = random_bytes(&mut rand::rng(), 20 << 20);
    let local = dir.path().join("big");
    std::fs::write(&local, &big).unwrap();
    s3.put_file(&key("big.zip"), &local).await.unwrap();
    assert!(!local.exists(), "put_file consumes the local file");
    std::fs::write(&local, b"again").unwrap();
    assert!(matches!(s3.put_file(&key("big.zip"), &local).await, Err(StorageError::AlreadyExists)));
    assert!(local.exists(), "a refused put leaves the local file");

    // Only backup keys directly under the prefix are listed.
    for other in ["p/notes.txt", "p/sub/x.zip", "p/.hidden.zip", "elsewhere.zip"] {
        store.put(&ObjPath::parse(other).unwrap(), PutPayload::from_static(b"x")).await.unwrap();
    }
    let listed = s3.list().await.unwrap();
    assert_eq!(listed.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(), vec!["big.zip"]);
    assert_eq!(listed[0].size, big.len() as u64);
    assert_eq!(s3.head(&key("big.zip")).await.unwrap().size, big.len() as u64);

    // A range across a part boundary, streamed.
    let at = (8 << 20) - 10;
    let r = s3.open(&key("big.zip"), Some(at..at + 20)).await.unwrap();
    let got: Vec<u8> = r.body.map(Result::unwrap).collect::<Vec<_>>().await.concat();
    assert_eq!((r.range.clone(), got.as_slice()), (at..at + 20, &big[at as usize..at as usize + 20]));

    let fetched = dir.path().join("fetched.zip");
    s3.fetch_to_file(&key("big.zip"), &fetched).await.unwrap();
    assert!(std::fs::read(&fetched).unwrap() == big, "fetched copy differs");

    s3.delete(&key("big.zip")).await.unwrap();
    assert!(matches!(s3.delete(&key("big.zip")).await, Err(StorageError::NotFound)));
    assert!(matches!(s3.head(&key("big.zip")).await, Err(StorageError::NotFound)));
    assert!(matches!(s3.open(&key("big.zip"), None).await, Err(StorageError::NotFound)));
    assert!(matches!(s3.fetch_to_file(&key("big.zip"), &dir.path().join("f2")).await, Err(StorageError::NotFound)));
    let names = object_names(&store).await;
    assert!(names.iter().all(|n| !n.contains(".leases")), "leases released: {names:?}");

    // A key that appears between the check and the publish is never overwritten, for a
    // single PUT and for a multipart upload alike.
    for (name, len) in [("small.zip", 1000), ("large.zip", 12 << 20)] {
        let path = ObjPath::parse(format!("p/{name}")).unwrap();
        let hooked = raced_storage(&bucket, &path);
        std::fs::write(&local, random_bytes(&mut rand::rng(), len)).unwrap();
        assert!(matches!(hooked.put_file(&key(name), &local).await, Err(StorageError::AlreadyExists)), "{name}");
        let kept = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(kept.as_ref(), b"the other server's", "{name} was overwritten");
    }
}

/// Storage under prefix `p` whose every publish finds `path` just written by another server.
fn raced_storage(bucket: &str, path: &ObjPath) -> S3Storage {
    let mut c = config(moto(), bucket, "p");
    let (racer, path) = (Arc::new(raw(moto(), bucket)), path.clone());
    c.before_publish = Some(Arc::new(move |_key| {
        let (racer, path) = (racer.clone(), path.clone());
        async move {
            racer.put(&path, PutPayload::from_static(b"the other server's")).await.unwrap();
        }
        .boxed()
    }));
    S3Storage::new(c).unwrap()
}

/// Writes `bytes` through a streamed upload in uneven pieces, from a blocking thread as a
/// create does.
async fn write_upload(upload: Box<dyn Upload>, bytes: Vec<u8>) -> Box<dyn Upload> {
    tokio::task::spawn_blocking(move || {
        let mut upload = upload;
        for piece in bytes.chunks(777_777) {
            upload.write_all(piece).unwrap();
        }
        upload
    })
    .await
    .unwrap()
}

/// A create on S3 uploads while it writes: nothing is visible before `finish`, the object is
/// whole after it (parts of 5 MiB, two in flight), a key that appears meanwhile is never
/// overwritten, and an aborted upload leaves nothing.
#[tokio::test]
async fn streamed_uploads_on_s3() {
    let bucket = new_bucket(moto()).await;
    let store = raw(moto(), &bucket);
    let s3 = S3Storage::new(config(moto(), &bucket, "p")).unwrap();
    let key = |k: &str| BackupKey::parse(k).unwrap();

    let big = random_bytes(&mut rand::rng(), (20 << 20) + 123);
    let upload = s3.start_upload(&key("streamed.zip")).await.unwrap().expect("S3 streams");
    let upload = write_upload(upload, big.clone()).await;
    assert!(s3.list().await.unwrap().is_empty(), "nothing visible before finish");
    upload.finish().await.unwrap();
    let got = store.get(&ObjPath::parse("p/streamed.zip").unwrap()).await.unwrap().bytes().await.unwrap();
    assert!(got.as_ref() == big.as_slice(), "the streamed object differs");
    assert!(matches!(s3.start_upload(&key("streamed.zip")).await, Err(StorageError::AlreadyExists)));

    for len in [1000, 12 << 20] {
        let path = ObjPath::parse("p/raced.zip").unwrap();
        let hooked = raced_storage(&bucket, &path);
        let upload = hooked.start_upload(&key("raced.zip")).await.unwrap().unwrap();
        let upload = write_upload(upload, random_bytes(&mut rand::rng(), len)).await;
        assert!(matches!(upload.finish().await, Err(StorageError::AlreadyExists)), "{len}");
        let kept = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(kept.as_ref(), b"the other server's", "{len}: overwritten");
        store.delete(&path).await.unwrap();
    }

    let upload = s3.start_upload(&key("aborted.zip")).await.unwrap().unwrap();
    let upload = write_upload(upload, random_bytes(&mut rand::rng(), 9 << 20)).await;
    assert!(upload.abort().await.is_none(), "no store error to report");
    let listed: Vec<String> = s3.list().await.unwrap().into_iter().map(|m| m.key.as_str().to_owned()).collect();
    assert_eq!(listed, vec!["streamed.zip"]);
}

/// Storage under prefix `p` whose publishes, once their parts are sent, tell `held` and wait
/// for `release` before completing.
fn held_publish_config(bucket: &str, held: Arc<tokio::sync::Notify>, release: Arc<tokio::sync::Notify>) -> pb_backups::storage::s3::S3Config {
    let mut c = config(moto(), bucket, "p");
    c.before_publish = Some(Arc::new(move |_key| {
        let (held, release) = (held.clone(), release.clone());
        async move {
            held.notify_one();
            release.notified().await
        }
        .boxed()
    }));
    c
}

/// Sends an upload of `zip` as `name` on a connection of its own, which the caller may close.
async fn raw_upload(s: &TestServer, token: &str, name: &str, zip: &[u8]) -> tokio::net::TcpStream {
    let mut body = format!("--cut\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\n").into_bytes();
    body.extend_from_slice(zip);
    body.extend_from_slice(b"\r\n--cut--\r\n");
    let head = format!(
        "POST /api/backups/upload HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\
         Content-Type: multipart/form-data; boundary=cut\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut client = tokio::net::TcpStream::connect(s.base.trim_start_matches("http://")).await.unwrap();
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(&body).await.unwrap();
    client
}

async fn no_multipart_upload_left(bucket: &str, what: &str) {
    eventually(Duration::from_secs(30), what, || async { multipart_uploads(moto(), bucket).await.is_empty().then_some(()) }).await;
}

/// An upload whose work is cut off never leaves its multipart upload in the bucket: a publish
/// cut off by the server's stop (its request dropped when the grace runs out), one whose
/// client hangs up, a publish dropped inside the storage, and a streamed create dropped.
#[tokio::test]
async fn a_cut_off_upload_leaves_no_multipart_upload_behind() {
    let bucket = new_bucket(moto()).await;
    let (held, release) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    // 6 MiB that do not compress: a multipart upload of two parts.
    let zip = zip_with(&[("data.db", &random_bytes(&mut rand::rng(), 6 << 20))]);

    // The server stops while it publishes; its grace (2 s here) runs out and the request is
    // dropped. Once stopped, nothing is left to abort.
    let s = TestServer::start_with(Options { s3: Some(held_publish_config(&bucket, held.clone(), release.clone())), ..Default::default() }).await;
    let su = s.superuser_token().await;
    let client = raw_upload(&s, &su, "stopped.zip", &zip).await;
    held.notified().await;
    assert_eq!(multipart_uploads(moto(), &bucket).await, vec!["p/stopped.zip"], "the publish is under way");
    s.stop().await;
    assert_eq!(multipart_uploads(moto(), &bucket).await, Vec::<String>::new(), "left by a publish cut off by the stop");
    drop(client);

    // The client hangs up while the server publishes. The server is not told (hyper reads
    // nothing more from a connection whose request it is answering): the publish goes on to
    // its end, as a create does. Either way nothing may be left half-done.
    let s = TestServer::start_with(Options { s3: Some(held_publish_config(&bucket, held.clone(), release.clone())), ..Default::default() }).await;
    let su = s.superuser_token().await;
    let client = raw_upload(&s, &su, "hung-up.zip", &zip).await;
    held.notified().await;
    drop(client);
    release.notify_one();
    no_multipart_upload_left(&bucket, "the hung-up upload to be completed or aborted").await;
    let listed = keys(&s, &su).await;
    assert!(listed.is_empty() || listed == ["hung-up.zip"], "{listed:?}");
    eventually(Duration::from_secs(10), "the temp folder to empty", || async {
        (std::fs::read_dir(s.data_dir().join(".pb_temp")).ok()?.count() == 0).then_some(())
    })
    .await;
    s.stop().await;
    let store = raw(moto(), &bucket);
    for name in object_names(&store).await {
        store.delete(&ObjPath::parse(name).unwrap()).await.unwrap();
    }

    // The storage alone: a publish dropped while it waits to complete.
    let held_storage = S3Storage::new(held_publish_config(&bucket, held.clone(), release.clone())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("big");
    std::fs::write(&local, random_bytes(&mut rand::rng(), 6 << 20)).unwrap();
    let key = BackupKey::parse("dropped.zip").unwrap();
    tokio::select! {
        _ = held_storage.put_file(&key, &local) => panic!("the publish cannot end before its release"),
        () = held.notified() => {}
    }
    no_multipart_upload_left(&bucket, "the dropped publish's upload to be aborted").await;

    // A streamed create dropped unfinished, parts sent and one filling.
    let s3 = S3Storage::new(config(moto(), &bucket, "p")).unwrap();
    let upload = s3.start_upload(&BackupKey::parse("streamed.zip").unwrap()).await.unwrap().expect("S3 streams");
    let upload = write_upload(upload, random_bytes(&mut rand::rng(), 11 << 20)).await;
    assert_eq!(multipart_uploads(moto(), &bucket).await, vec!["p/streamed.zip"]);
    drop(upload);
    no_multipart_upload_left(&bucket, "the dropped streamed upload to be aborted").await;
    assert_eq!(object_names(&store).await, Vec::<String>::new());
}

/// Part checksums, on by default: the multipart upload declares SHA-256, so the store keeps
/// a SHA-256 over the parts (a streamed create and a published file alike); turned off, no
/// checksum is declared. The content is whole either way.
#[tokio::test]
async fn part_checksums_are_declared_unless_turned_off() {
    let bucket = new_bucket(moto()).await;
    let store = raw(moto(), &bucket);
    let dir = tempfile::tempdir().unwrap();
    let key = |k: &str| BackupKey::parse(k).unwrap();
    let data = random_bytes(&mut rand::rng(), (12 << 20) + 5);
    for checksums in [true, false] {
        let mut c = config(moto(), &bucket, "p");
        c.checksums = checksums;
        let s3 = S3Storage::new(c).unwrap();
        let streamed = format!("streamed-{checksums}.zip");
        let upload = s3.start_upload(&key(&streamed)).await.unwrap().expect("S3 streams");
        write_upload(upload, data.clone()).await.finish().await.unwrap();
        let published = format!("published-{checksums}.zip");
        let local = dir.path().join(&published);
        std::fs::write(&local, &data).unwrap();
        s3.put_file(&key(&published), &local).await.unwrap();
        for name in [streamed, published] {
            let url = format!("{}/{bucket}/p/{name}", moto());
            let head = reqwest::Client::new().head(url).header("x-amz-checksum-mode", "ENABLED").send().await.unwrap();
            assert_eq!(head.status(), 200, "{name}");
            let sha256 = head.headers().get("x-amz-checksum-sha256");
            assert_eq!(sha256.is_some(), checksums, "{name}: {:?}", head.headers());
            let got = store.get(&ObjPath::parse(format!("p/{name}")).unwrap()).await.unwrap().bytes().await.unwrap();
            assert!(got.as_ref() == data.as_slice(), "{name}: content differs");
        }
    }
}

#[tokio::test]
async fn two_servers_one_bucket() {
    let bucket = new_bucket(moto()).await;
    let gate = Gate::new();
    let a = TestServer::start_with(Options { s3: Some(config(moto(), &bucket, "shared")), create_gate: Some(gate.hook()), ..Default::default() }).await;
    let b = s3_server(&bucket, "shared").await;
    let (sa, sb) = (a.superuser_token().await, b.superuser_token().await);

    // Both see one set of backups; names are taken across servers.
    assert_eq!(create(&a, &sa, json!({"name": "one.zip"})).await.0, 204);
    assert_eq!(keys(&b, &sb).await, vec!["one.zip"]);
    assert_eq!(create(&b, &sb, json!({"name": "one.zip"})).await.1["data"]["name"]["code"], "validation_backup_name_exists");
    let zip = zip_with(&[("data.db", b"x")]);
    assert_eq!(upload(&b, &sb, "one.zip", zip.clone()).await.1["data"]["file"]["code"], "validation_backup_name_exists");

    // A create whose key appears meanwhile on the other server fails; the other's stays.
    gate.hold_next();
    let held = tokio::spawn({
        let (client, url, sa) = (a.client.clone(), a.url("/api/backups"), sa.clone());
        async move { status_json(client.post(url).header("Authorization", sa).json(&json!({"name": "race.zip"})).send().await.unwrap()).await }
    });
    gate.held().await;
    assert_eq!(upload(&b, &sb, "race.zip", zip.clone()).await, (204, Value::Null));
    gate.release();
    let (status, body) = held.await.unwrap();
    assert_eq!((status, body["data"]["name"]["code"].as_str()), (400, Some("validation_backup_name_exists")), "{body}");
    assert_eq!(download(&a, &sa, "race.zip").await, zip, "the first one published is kept");

    // A delete never removes a backup that the other server is reading for a restore.
    let key = BackupKey::parse("one.zip").unwrap();
    let reader = S3Storage::new(config(moto(), &bucket, "shared")).unwrap();
    let lease = reader.hold(&key, Activity::Restore).await.unwrap();
    assert_eq!(delete(&b, &sb, "one.zip").await, (400, error_body(400, BUSY)));
    assert!(keys(&a, &sa).await.contains(&"one.zip".to_string()));
    lease.release().await;
    assert_eq!(delete(&b, &sb, "one.zip").await, (204, Value::Null));
    a.stop().await;
    b.stop().await;
}

/// A storage whose leases live `ttl` (renewed every third of it). A storage judges other
/// servers' leases by its own TTL, so each role below gets the TTL that keeps the test free
/// of timing: the holder renews quickly, the patient one never takes a lease for expired.
fn with_ttl(bucket: &str, ttl: Duration) -> S3Storage {
    let mut c = config(moto(), bucket, "");
    c.lease_ttl = ttl;
    S3Storage::new(c).unwrap()
}

#[tokio::test]
async fn leases_are_renewed_and_expire_with_their_holder() {
    let bucket = new_bucket(moto()).await;
    let store = raw(moto(), &bucket);
    let key = BackupKey::parse("k.zip").unwrap();
    store.put(&ObjPath::parse("k.zip").unwrap(), PutPayload::from_static(b"zip")).await.unwrap();
    let holder = with_ttl(&bucket, Duration::from_millis(300));
    let patient = with_ttl(&bucket, Duration::from_secs(3600));
    let hasty = with_ttl(&bucket, Duration::from_secs(2));

    // A live holder renews its lease (its object is rewritten again and again) and it keeps
    // the key: a delete is refused meanwhile.
    let lease = holder.hold(&key, Activity::Restore).await.unwrap();
    let lease_path = object_names(&store).await.into_iter().find(|n| n.starts_with(".leases/")).expect("a lease object");
    let lease_path = ObjPath::parse(&lease_path).unwrap();
    let versions = std::cell::RefCell::new(std::collections::BTreeSet::new());
    eventually(Duration::from_secs(60), "three renewals of the lease", || async {
        // The content never changes (nor its ETag): the modification time does, at each renewal.
        let version = store.head(&lease_path).await.ok()?.last_modified;
        assert!(matches!(patient.delete(&key).await, Err(StorageError::Busy)), "delete of a leased key");
        let mut versions = versions.borrow_mut();
        versions.insert(version);
        (versions.len() > 3).then_some(())
    })
    .await;
    lease.release().await;
    assert!(object_names(&store).await == vec!["k.zip"], "released lease removed");

    // A holder that died leaves its lease behind: refused while it is live, then, once it
    // has expired, cleaned up.
    let orphan = ObjPath::parse(".leases/k.zip/restore.deadserver").unwrap();
    store.put(&orphan, PutPayload::from_static(b"lease")).await.unwrap();
    assert!(matches!(patient.delete(&key).await, Err(StorageError::Busy)));
    eventually(Duration::from_secs(30), "the dead holder's lease to expire", || async {
        hasty.delete(&key).await.ok()
    })
    .await;
    let names = object_names(&store).await;
    assert!(names.is_empty(), "backup deleted and expired lease removed: {names:?}");

    // A restore backs off while a delete holds the key.
    store.put(&ObjPath::parse("k.zip").unwrap(), PutPayload::from_static(b"zip")).await.unwrap();
    let deleting = patient.hold(&key, Activity::Delete).await.unwrap();
    let reader = with_ttl(&bucket, Duration::from_secs(3600));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(reader.fetch_to_file(&key, &dir.path().join("r.zip")).await, Err(StorageError::Busy)));
    deleting.release().await;
    reader.fetch_to_file(&key, &dir.path().join("r.zip")).await.unwrap();
}

/// A TCP relay to the S3 server that can play dead: it drops every connection once the
/// client has sent `kill_after` bytes, and until revived.
struct FlakyRelay {
    endpoint: String,
    dead: watch::Sender<bool>,
    kill_after: Arc<AtomicU64>,
}

impl FlakyRelay {
    async fn start(upstream: &str) -> FlakyRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        let (dead, _) = watch::channel(false);
        let kill_after = Arc::new(AtomicU64::new(u64::MAX));
        let sent = Arc::new(AtomicU64::new(0));
        let (d, k) = (dead.clone(), kill_after.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *d.borrow() {
                    continue; // dropped: the endpoint is dead
                }
                let (d, k, sent, upstream) = (d.clone(), k.clone(), sent.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let mut dead_rx = d.subscribe();
                    let up = async {
                        let mut buf = vec![0; 64 << 10];
                        loop {
                            let n = match cr.read(&mut buf).await { Ok(0) | Err(_) => return, Ok(n) => n };
                            if sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > k.load(Ordering::SeqCst) {
                                d.send_replace(true);
                                return;
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let down = tokio::io::copy(&mut sr, &mut cw);
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                        _ = dead_rx.wait_for(|dead| *dead) => {}
                    }
                });
            }
        });
        FlakyRelay { endpoint, dead, kill_after }
    }

    fn revive(&self) {
        self.kill_after.store(u64::MAX, Ordering::SeqCst);
        self.dead.send_replace(false);
    }
}

#[tokio::test]
async fn an_endpoint_dying_mid_create_leaves_nothing_and_the_server_goes_on() {
    let bucket = new_bucket(moto()).await;
    let relay = FlakyRelay::start(moto()).await;
    let s = TestServer::start_with(Options { s3: Some(config(&relay.endpoint, &bucket, "")), ..Default::default() }).await;
    let su = s.superuser_token().await;

    // About 24 MiB of incompressible data: a multipart upload of five parts, streamed while
    // the archive is made; the endpoint dies after about 12 MiB, inside the third.
    std::fs::write(s.data_dir().join("blob.bin"), random_bytes(&mut rand::rng(), 24 << 20)).unwrap();
    relay.kill_after.store(12 << 20, Ordering::SeqCst);
    assert_eq!(create(&s, &su, json!({"name": "big.zip"})).await, (400, error_body(400, STORAGE_FAILURE)));
    assert!(*relay.dead.borrow(), "the endpoint died during the upload");
    // Still serving, with the storage error while the endpoint is gone.
    assert_eq!(list(&s, &su).await, (400, error_body(400, STORAGE_FAILURE)));
    assert_eq!(s.client.get(s.url("/api/health")).send().await.unwrap().status(), 200);

    relay.revive();
    assert_eq!(keys(&s, &su).await, Vec::<String>::new(), "no partial backup listed");
    assert!(object_names(&raw(moto(), &bucket)).await.is_empty());
    let temp = std::fs::read_dir(s.data_dir().join(".pb_temp")).unwrap().count();
    assert_eq!(temp, 0, "the local archive was cleaned up");
    std::fs::remove_file(s.data_dir().join("blob.bin")).unwrap();
    assert_eq!(create(&s, &su, json!({"name": "small.zip"})).await, (204, Value::Null), "not left busy");
    assert_eq!(keys(&s, &su).await, vec!["small.zip"]);
    s.stop().await;
}

#[tokio::test]
async fn an_unreachable_endpoint_or_missing_bucket_is_the_storage_400() {
    // A port with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unreachable = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    for (what, endpoint, bucket) in [("unreachable", unreachable.as_str(), "some-bucket"), ("no bucket", moto(), "never-created")] {
        let s = TestServer::start_with(Options { s3: Some(config(endpoint, bucket, "x")), ..Default::default() }).await;
        let su = s.superuser_token().await;
        let ft = s.file_token(&su).await;
        let failure = (400, error_body(400, STORAGE_FAILURE));
        assert_eq!(list(&s, &su).await, failure, "{what}: list");
        assert_eq!(create(&s, &su, json!({"name": "a.zip"})).await, failure, "{what}: create");
        assert_eq!(create(&s, &su, json!({})).await, failure, "{what}: create, generated name");
        assert_eq!(upload(&s, &su, "u.zip", zip_with(&[("data.db", b"x")])).await, failure, "{what}: upload");
        assert_eq!(delete(&s, &su, "a.zip").await, failure, "{what}: delete");
        assert_eq!(restore(&s, &su, "a.zip").await, failure, "{what}: restore");
        let r = s.client.get(s.url(&format!("/api/backups/a.zip?token={ft}"))).send().await.unwrap();
        assert_eq!(status_json(r).await, failure, "{what}: download");
        let r = s.client.get(s.url("/api/backups")).header("Authorization", &su).header("Accept-Language", "en").send().await.unwrap();
        assert_eq!(status_json(r).await, (400, error_body(400, STORAGE_FAILURE_EN)), "{what}: en");
        s.stop().await;
    }
}

/// Keys of the SDK test's server (moto takes any): unlike "test", found in a log only if
/// the server wrote them there.
const LEAK_ACCESS_KEY: &str = "AKIAPBBACKUPSLEAKCHECK";
const LEAK_SECRET_KEY: &str = "pb-s3-secret-never-logged-4d1c";

#[test]
fn official_js_sdk_on_s3() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(new_bucket(moto()));
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    // The real binary, configured from the environment as in a container.
    let server = BinaryServer::start_with(
        &dir,
        &[
            ("PB_BACKUPS_S3_ENDPOINT", moto()),
            ("PB_BACKUPS_S3_BUCKET", &bucket),
            ("PB_BACKUPS_S3_PREFIX", "sdk"),
            ("PB_BACKUPS_S3_PATH_STYLE", "true"),
            ("PB_BACKUPS_S3_ACCESS_KEY", LEAK_ACCESS_KEY),
            ("PB_BACKUPS_S3_SECRET_KEY", LEAK_SECRET_KEY),
        ],
    );
    server.wait_for_line(&format!("S3 bucket {bucket}"), Duration::from_secs(30));
    let base = server.base.clone();
    let output = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/run.sh"))
        .env("PB_URL", &base)
        .env("PB_SUPERUSER_EMAIL", SUPERUSER.0)
        .env("PB_SUPERUSER_PASSWORD", SUPERUSER.1)
        .env("PB_USER_EMAIL", USER.0)
        .env("PB_USER_PASSWORD", USER.1)
        .output()
        .expect("bash and node are needed for the SDK test");
    let log = server.log.clone();
    drop(server);
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Read it or fail: a log that cannot be read must not pass for one without the keys.
    let server_log = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("the server's log {}: {e}", log.display()));
    assert!(
        output.status.success() && stdout.contains("# fail 0") && !stdout.contains("# pass 0"),
        "SDK test failed\n--- stdout\n{stdout}\n--- stderr\n{}\n--- server log\n{server_log}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(server_log.contains("backup created"), "the log of this run, with the SDK's create in it:\n{server_log}");
    for key in [LEAK_ACCESS_KEY, LEAK_SECRET_KEY] {
        assert!(!server_log.contains(key), "a key in the server's log:\n{server_log}");
    }
    let local = std::fs::read_dir(dir.join("backups")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(local, 0, "nothing stored in the data dir");
}

/// Not a check: prints how long a create and a restore of a data dir (`PB_MEASURE_MIB`) take on S3
/// (moto) and on the local folder. `cargo test --test s3 -- --ignored --nocapture measure`
#[tokio::test]
#[ignore]
async fn measure_create_and_restore() {
    // `PB_MEASURE_MIB` sets the data dir's size (64 MiB by default).
    let mib: usize = std::env::var("PB_MEASURE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let bucket = new_bucket(moto()).await;
    for backend in ["local", "s3"] {
        let s = match backend {
            "s3" => s3_server(&bucket, "").await,
            _ => TestServer::start().await,
        };
        let su = s.superuser_token().await;
        // Half random, half text-like.
        std::fs::write(s.data_dir().join("random.bin"), random_bytes(&mut rand::rng(), (mib / 2) << 20)).unwrap();
        let text: String = (0..).map(|i| format!("{{\"id\":{i},\"name\":\"record {i}\"}}\n")).take_while({
            let mut len = 0;
            move |l: &String| { len += l.len(); len <= (mib / 2) << 20 }
        }).collect();
        std::fs::write(s.data_dir().join("records.json"), text).unwrap();
        std::fs::write(s.data_dir().join("marker.txt"), "before").unwrap();

        let started = Instant::now();
        assert_eq!(create(&s, &su, json!({"name": "m.zip"})).await.0, 204);
        let create_time = started.elapsed();
        std::fs::write(s.data_dir().join("marker.txt"), "after").unwrap();
        let started = Instant::now();
        assert_eq!(restore(&s, &su, "m.zip").await.0, 204);
        eventually(Duration::from_secs(120), "the restored server", || async {
            let marker = std::fs::read_to_string(s.data_dir().join("marker.txt")).ok()?;
            let r = s.client.get(s.url("/api/health")).send().await.ok()?;
            (marker == "before" && r.status() == 200).then_some(())
        })
        .await;
        let restore_time = started.elapsed();
        let size = list(&s, &s.superuser_token().await).await.1[0]["size"].as_u64().unwrap();
        println!("{backend}: create {create_time:?}, restore {restore_time:?} (archive {} MiB)", size >> 20);
        s.stop().await;
    }
}

// ---- the bucket the settings choose (`backups.s3`) ----

/// `backups.s3` on, for `bucket` on moto (whose keys are anything).
fn s3_on(bucket: &str) -> Value {
    json!({"enabled": true, "bucket": bucket, "region": "us-east-1", "endpoint": moto(),
           "accessKey": "test", "secret": "test", "forcePathStyle": true})
}

async fn patch_settings(s: &TestServer, token: &str, body: Value) -> (u16, Value) {
    status_json(s.client.patch(s.url("/api/settings")).header("Authorization", token).json(&body).send().await.unwrap()).await
}

async fn get_settings(s: &TestServer, token: &str) -> Value {
    let (status, body) = status_json(s.client.get(s.url("/api/settings")).header("Authorization", token).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The backups in the data dir's own folder, sorted.
fn local_backups(s: &TestServer) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(s.data_dir().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".zip"))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn the_settings_choose_the_storage_for_each_operation_and_a_running_create_keeps_its_own() {
    let bucket = new_bucket(moto()).await;
    let store = raw(moto(), &bucket);
    let gate = Gate::new();
    let s = TestServer::start_with(Options { create_gate: Some(gate.hook()), ..Default::default() }).await;
    let su = s.superuser_token().await;

    // Off (a new data dir): the local folder.
    assert_eq!(create(&s, &su, json!({"name": "local.zip"})).await, (204, Value::Null));
    assert_eq!(local_backups(&s), ["local.zip"]);

    // On: the bucket, from the very next request, without a restart.
    let (status, body) = patch_settings(&s, &su, json!({"backups": {"s3": s3_on(&bucket)}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backups"]["s3"]["bucket"], bucket.as_str());
    assert!(body["backups"]["s3"].get("secret").is_none(), "the secret is never served: {body}");
    assert!(body["backups"].get("s3Override").is_none(), "no flags, no override: {body}");
    assert_eq!(keys(&s, &su).await, Vec::<String>::new());
    assert_eq!(create(&s, &su, json!({"name": "in_bucket.zip"})).await, (204, Value::Null));
    assert_eq!(object_names(&store).await, ["in_bucket.zip"]);
    assert_eq!(local_backups(&s), ["local.zip"]);

    // A create held at its gate while S3 is switched off finishes in the bucket it started in.
    gate.hold_next();
    let creating = {
        let (client, url, su) = (s.client.clone(), s.url("/api/backups"), su.clone());
        tokio::spawn(async move {
            let r = client.post(url).header("Authorization", su).json(&json!({"name": "held.zip"})).send().await.unwrap();
            status_json(r).await
        })
    };
    gate.held().await;
    let (status, body) = patch_settings(&s, &su, json!({"backups": {"s3": {"enabled": false}}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(keys(&s, &su).await, ["local.zip"], "the next request lists the folder");
    // The server still runs one create at a time, whatever storage each works on.
    assert_eq!(create(&s, &su, json!({"name": "meanwhile.zip"})).await, (400, error_body(400, BUSY_CREATE)));
    gate.release();
    assert_eq!(creating.await.unwrap(), (204, Value::Null));
    assert_eq!(object_names(&store).await, ["held.zip", "in_bucket.zip"]);
    assert_eq!(local_backups(&s), ["local.zip"], "nothing of the held create in the folder");
    assert_eq!(keys(&s, &su).await, ["local.zip"]);

    // On again, the secret left out: the stored one is kept and works.
    let (status, body) = patch_settings(&s, &su, json!({"backups": {"s3": {"enabled": true}}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(keys(&s, &su).await, ["held.zip", "in_bucket.zip"]);
    let bytes = download(&s, &su, "held.zip").await;
    assert_eq!(&bytes[..4], b"PK\x03\x04");
    assert_eq!(delete(&s, &su, "in_bucket.zip").await, (204, Value::Null));
    assert_eq!(object_names(&store).await, ["held.zip"]);
    assert_eq!(upload(&s, &su, "uploaded.zip", bytes).await, (204, Value::Null));
    assert_eq!(object_names(&store).await, ["held.zip", "uploaded.zip"]);
    assert_eq!(local_backups(&s), ["local.zip"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_flags_win_over_the_settings_and_the_settings_say_so() {
    let (flagged, named) = (new_bucket(moto()).await, new_bucket(moto()).await);
    let s = s3_server(&flagged, "").await;
    let su = s.superuser_token().await;
    let (status, body) = patch_settings(&s, &su, json!({"backups": {"s3": s3_on(&named)}})).await;
    assert_eq!(status, 200, "{body}");
    let settings = get_settings(&s, &su).await;
    assert_eq!(settings["backups"]["s3"]["bucket"], named.as_str(), "stored as sent");
    assert_eq!(
        settings["backups"]["s3Override"],
        json!({"bucket": flagged, "endpoint": moto(), "region": "us-east-1", "prefix": ""})
    );
    assert_eq!(create(&s, &su, json!({"name": "flagged.zip"})).await, (204, Value::Null));
    assert_eq!(object_names(&raw(moto(), &flagged)).await, ["flagged.zip"]);
    assert!(object_names(&raw(moto(), &named)).await.is_empty());
    s.stop().await;
}

/// `pb-backups ARGS` with `env` and no other S3 variable; (success, stdout, stderr).
fn cli_with(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pb-backups"));
    cmd.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("PB_BACKUPS_S3_") || name.starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn cli(args: &[&str]) -> (bool, String, String) {
    cli_with(args, &[])
}

#[tokio::test(flavor = "multi_thread")]
async fn the_offline_commands_and_check_s3_use_the_bucket_the_settings_enable() {
    let bucket = new_bucket(moto()).await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let d = dir.to_str().unwrap();
    let (ok, _, err) = cli(&["backups", "check-s3", "--dir", d]);
    assert!(!ok && err.contains("nothing to check"), "{err}");

    let on = pb_backups::settings::S3Patch {
        enabled: Some(true),
        bucket: Some(bucket.clone()),
        region: Some("us-east-1".into()),
        endpoint: Some(moto().to_string()),
        access_key: Some("test".into()),
        secret: Some("test".into()),
        force_path_style: Some(true),
    };
    let patch = pb_backups::settings::SettingsPatch { backups_s3: on, ..Default::default() };
    pb_backups::settings::update(&dir, &patch).unwrap();
    let (ok, out, err) = cli(&["backups", "check-s3", "--dir", d]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("from the settings' backups.s3") && out.contains("the configuration works"), "{out}");
    assert!(!out.contains("test\"") && !err.contains("secret"), "no key is shown: {out}{err}");

    let (ok, out, err) = cli(&["backups", "create", "offline.zip", "--dir", d]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(object_names(&raw(moto(), &bucket)).await, ["offline.zip"]);
    let (ok, out, _) = cli(&["backups", "list", "--dir", d]);
    assert!(ok && out.starts_with("offline.zip\t"), "{out}");
    let (ok, out, err) = cli(&["backups", "verify", "--all", "--dir", d]);
    assert!(ok && out.contains("ok   offline.zip"), "{out}\n{err}");
    assert!(!dir.join("backups").join("offline.zip").exists());
    // The flags still win: another bucket, named on the command line.
    let other = new_bucket(moto()).await;
    let flags = ["--backups-s3-bucket", other.as_str(), "--backups-s3-endpoint", moto(), "--backups-s3-path-style"];
    let mut list = vec!["backups", "list", "--dir", d];
    list.extend(flags);
    let keys = [("PB_BACKUPS_S3_ACCESS_KEY", "test"), ("PB_BACKUPS_S3_SECRET_KEY", "test")];
    let (ok, out, err) = cli_with(&list, &keys);
    assert!(ok && out.trim().is_empty(), "{out}\n{err}");
}

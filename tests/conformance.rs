//! Every documented response of the Backups API (the 27 of `pb_backups_spec::catalog`),
//! produced by a live in-process server over HTTP, triggered as the rules in `spec/src/rules.rs` say, in the
//! spec's Chinese (default) and in English (`Accept-Language: en`). Each is compared with
//! its catalog entry and pinned as an insta snapshot in `tests/snapshots/`.
//!
//! The table in `conformance!` below generates one test per (operation, status), each doing
//! both languages; `the_table_covers_the_catalog` fails when the catalog and the table differ.
//!
//! Backups are stored in the data dir, or in a fresh S3 bucket per test (moto) with
//! `PB_TEST_BACKEND=s3`; both runs compare against the same snapshots.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use pb_backups_spec::{catalog, BodyKind, DocumentedResponse, Lang, Operation};
use serde_json::{json, Value};
use support::gate::Gate;
use support::*;

const MODIFIED_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]Z");

macro_rules! conformance {
    ($($name:ident: $op:ident $status:literal;)*) => {
        /// (operation, status, test) for every generated test.
        const TABLE: &[(Operation, u16, &str)] = &[$((Operation::$op, $status, stringify!($name))),*];
        $(
            #[tokio::test]
            async fn $name() {
                let documented = catalog::find(Operation::$op, $status)
                    .expect(concat!(stringify!($name), " is not documented in the catalog"));
                let f = Fixture::start().await;
                for lang in Lang::ALL {
                    let got = cases::$name(&f, lang).await;
                    verify(documented, lang, &got);
                    snapshot(stringify!($name), documented, lang, &got);
                }
                f.s.stop().await;
            }
        )*
    };
}

conformance! {
    list_200: List 200;
    list_400: List 400;
    list_401: List 401;
    list_403: List 403;
    create_204: Create 204;
    create_400: Create 400;
    create_401: Create 401;
    create_403: Create 403;
    upload_204: Upload 204;
    upload_400: Upload 400;
    upload_401: Upload 401;
    upload_403: Upload 403;
    delete_204: Delete 204;
    delete_400: Delete 400;
    delete_401: Delete 401;
    delete_403: Delete 403;
    delete_404: Delete 404;
    restore_204: Restore 204;
    restore_400: Restore 400;
    restore_401: Restore 401;
    restore_403: Restore 403;
    restore_404: Restore 404;
    download_200: Download 200;
    download_400: Download 400;
    download_401: Download 401;
    download_403: Download 403;
    download_404: Download 404;
}

#[test]
fn the_table_covers_the_catalog() {
    let documented: BTreeSet<(Operation, u16)> = catalog::RESPONSES.iter().map(|r| (r.operation, r.status)).collect();
    let tested: BTreeSet<(Operation, u16)> = TABLE.iter().map(|&(op, status, _)| (op, status)).collect();
    assert_eq!(TABLE.len(), tested.len(), "an (operation, status) is tested twice");
    let untested: Vec<_> = documented.difference(&tested).collect();
    let undocumented: Vec<_> = tested.difference(&documented).collect();
    assert!(untested.is_empty(), "documented but not tested: {untested:?}");
    assert!(undocumented.is_empty(), "tested but not documented: {undocumented:?}");
    for &(op, status, name) in TABLE {
        assert_eq!(name, format!("{}_{status}", format!("{op:?}").to_lowercase()), "test names say (operation, status)");
    }
}

/// One response as received, with the request that produced it (tokens replaced by labels).
struct Got {
    request: String,
    when: &'static str,
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {:?}", self.request, self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("an ASCII header"))
    }
}

/// A server whose creates pass through, except while `hold_create` holds one.
struct Fixture {
    s: TestServer,
    /// Where the backups are when they are on S3 (else in the data dir's `backups/`).
    bucket: Option<Bucket>,
    su: String,
    user: String,
    su_file: String,
    user_file: String,
    gate: Arc<Gate>,
}

struct Bucket {
    name: String,
    store: AmazonS3,
    removed: AtomicBool,
}

/// The server's prefix in the bucket.
const PREFIX: &str = "backups";

/// A create held at the gate: the server is busy with it until `finish`.
struct Held {
    task: tokio::task::JoinHandle<(u16, Value)>,
    gate: Arc<Gate>,
}

impl Held {
    async fn finish(self) {
        self.gate.release();
        assert_eq!(self.task.await.unwrap(), (204, Value::Null), "the held create completes");
    }
}

impl Fixture {
    async fn start() -> Fixture {
        let gate = Gate::new();
        let mut options = Options { create_gate: Some(gate.hook()), ..Default::default() };
        let mut bucket = None;
        if support::s3::selected() {
            let endpoint = support::s3::moto();
            let name = support::s3::new_bucket(endpoint).await;
            options.s3 = Some(support::s3::config(endpoint, &name, PREFIX));
            bucket = Some(Bucket { store: support::s3::raw(endpoint, &name), name, removed: AtomicBool::new(false) });
        }
        let s = TestServer::start_with(options).await;
        let su = s.superuser_token().await;
        let user = s.user_token().await;
        let su_file = s.file_token(&su).await;
        let user_file = s.file_token(&user).await;
        Fixture { s, bucket, su, user, su_file, user_file, gate }
    }

    fn request(&self, lang: Lang, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.s.client.request(method, self.s.url(path));
        match lang {
            Lang::Zh => r,
            Lang::En => r.header("Accept-Language", "en"),
        }
    }

    fn get(&self, lang: Lang, path: &str) -> reqwest::RequestBuilder {
        self.request(lang, reqwest::Method::GET, path)
    }

    fn post(&self, lang: Lang, path: &str) -> reqwest::RequestBuilder {
        self.request(lang, reqwest::Method::POST, path)
    }

    fn delete(&self, lang: Lang, path: &str) -> reqwest::RequestBuilder {
        self.request(lang, reqwest::Method::DELETE, path)
    }

    /// Sends the request and reads the whole response; `when` says what state it was sent in.
    async fn send(&self, request: reqwest::RequestBuilder, when: &'static str) -> Got {
        let request = request.build().unwrap();
        let url = request.url();
        let mut line = format!("{} {}", request.method(), url.path());
        if let Some(query) = url.query() {
            line.push_str(&format!("?{query}"));
        }
        for (name, value) in request.headers() {
            if matches!(name.as_str(), "authorization" | "accept-language") {
                line.push_str(&format!(", {}: {}", name, value.to_str().unwrap()));
            }
        }
        // Tokens change on every run; name them instead.
        for (token, label) in [
            (&self.su_file, "[superuser file token]"),
            (&self.user_file, "[user file token]"),
            (&self.su, "[superuser token]"),
            (&self.user, "[user token]"),
        ] {
            line = line.replace(token.as_str(), label);
        }
        let r = self.s.client.execute(request).await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap();
        Got { request: line, when, status, headers, body }
    }

    async fn create(&self, name: &str) -> (u16, Value) {
        let r = self.s.client.post(self.s.url("/api/backups")).header("Authorization", &self.su);
        status_json(r.json(&json!({"name": name})).send().await.unwrap()).await
    }

    /// Makes backup `name` unless it exists.
    async fn backup(&self, name: &str) {
        if self.stored(name).await.is_none() {
            assert_eq!(self.create(name).await, (204, Value::Null), "create {name}");
        }
    }

    /// Starts a create of `name` and returns once it is running (held at the gate).
    async fn hold_create(&self, name: &str) -> Held {
        self.gate.hold_next();
        let task = tokio::spawn({
            let (client, url, su, name) = (self.s.client.clone(), self.s.url("/api/backups"), self.su.clone(), name.to_string());
            async move { status_json(client.post(url).header("Authorization", su).json(&json!({"name": name})).send().await.unwrap()).await }
        });
        self.gate.held().await;
        Held { task, gate: self.gate.clone() }
    }

    async fn keys(&self) -> Vec<String> {
        keys(&self.s, &self.su).await
    }

    fn backups_dir(&self) -> std::path::PathBuf {
        self.s.data_dir().join("backups")
    }

    fn object(key: &str) -> ObjPath {
        ObjPath::parse(format!("{PREFIX}/{key}")).unwrap()
    }

    /// The stored bytes of backup `key`, read behind the server's back.
    async fn stored(&self, key: &str) -> Option<Vec<u8>> {
        match &self.bucket {
            None => std::fs::read(self.backups_dir().join(key)).ok(),
            Some(b) => Some(b.store.get(&Self::object(key)).await.ok()?.bytes().await.unwrap().to_vec()),
        }
    }

    /// Dates backup `key` at `modified`. S3 cannot set times: there the backup is uploaded
    /// again until it is newer than every other one, which keeps the order of the calls.
    async fn set_modified(&self, key: &str, modified: SystemTime) {
        let Some(b) = &self.bucket else {
            std::fs::File::options().write(true).open(self.backups_dir().join(key)).unwrap().set_modified(modified).unwrap();
            return;
        };
        let (path, bytes) = (Self::object(key), PutPayload::from(self.stored(key).await.unwrap()));
        eventually(Duration::from_secs(10), "an upload newer than the other backups", || async {
            let prefix = ObjPath::from(PREFIX);
            let all: Vec<_> = b.store.list(Some(&prefix)).try_collect().await.unwrap();
            let mine = all.iter().find(|m| m.location == path).expect("the backup is stored").last_modified;
            if all.iter().all(|m| m.location == path || m.last_modified < mine) {
                return Some(());
            }
            b.store.put(&path, bytes.clone()).await.unwrap();
            None
        })
        .await;
    }

    /// Makes the storage impossible to open: the backups folder becomes a regular file, or
    /// the bucket is deleted (the snapshots' `when` names the local way).
    async fn break_storage(&self) {
        if let Some(b) = &self.bucket {
            if !b.removed.swap(true, Ordering::SeqCst) {
                support::s3::remove_bucket(support::s3::moto(), &b.name).await;
            }
            return;
        }
        let backups = self.backups_dir();
        if backups.is_dir() {
            std::fs::remove_dir_all(&backups).unwrap();
            std::fs::write(&backups, b"not a folder").unwrap();
        }
    }
}

/// The catalog's body for `lang` (JSON responses only).
fn documented_body(documented: &DocumentedResponse, lang: Lang) -> Value {
    documented.body(lang).expect("a JSON body")
}

/// The checks that do not depend on the trigger: status, and the body against the catalog.
fn verify(documented: &DocumentedResponse, lang: Lang, got: &Got) {
    let what = format!("{:?} {} {lang:?} ({})", documented.operation, documented.status, got.request);
    assert_eq!(got.status, documented.status, "{what}: body {:?}", got.body);
    match documented.kind {
        BodyKind::NoContent => assert!(got.body.is_empty(), "{what}: a 204 has no body"),
        BodyKind::Json if documented.status >= 400 => {
            let body = got.json();
            let expected = documented_body(documented, lang);
            assert_eq!(body, expected, "{what}");
            // Same fields in the same order as the spec's block.
            assert_eq!(body.to_string(), expected.to_string(), "{what}: field order");
            assert_eq!(got.header("content-type"), Some("application/json; charset=utf-8"), "{what}");
        }
        BodyKind::Json => {
            // The list: an array of {key, modified, size} like the spec's example.
            let example = documented_body(documented, lang);
            let example_fields: Vec<&String> = example[0].as_object().unwrap().keys().collect();
            let body = got.json();
            let items = body.as_array().unwrap_or_else(|| panic!("{what}: an array"));
            assert!(!items.is_empty(), "{what}: the case lists some backups");
            for item in items {
                let fields: Vec<&String> = item.as_object().unwrap().keys().collect();
                assert_eq!(fields, example_fields, "{what}");
                assert!(item["key"].is_string(), "{what}");
                assert!(item["size"].as_u64().is_some_and(|s| s > 0), "{what}: size");
                let modified = item["modified"].as_str().unwrap();
                assert!(time::PrimitiveDateTime::parse(modified, MODIFIED_FORMAT).is_ok(), "{what}: modified {modified}");
            }
            assert_eq!(got.header("content-type"), Some("application/json; charset=utf-8"), "{what}");
        }
        BodyKind::FileStream => {
            assert_eq!(got.header("content-type"), Some("application/zip"), "{what}");
            assert_eq!(got.header("accept-ranges"), Some("bytes"), "{what}");
            let disposition = got.header("content-disposition").unwrap_or_default();
            assert!(disposition.starts_with("attachment; filename=\""), "{what}: {disposition}");
            assert_eq!(got.header("content-length"), Some(got.body.len().to_string().as_str()), "{what}");
            assert!(got.header("last-modified").is_some_and(|d| httpdate::parse_http_date(d).is_ok()), "{what}");
            let zip = zip::ZipArchive::new(std::io::Cursor::new(got.body.to_vec())).expect("a zip archive");
            assert!(zip.file_names().any(|n| n.is_ok_and(|n| n == "data.db")), "{what}: the backup holds data.db");
        }
    }
}

/// Pins the response as `conformance__{name}_{lang}.snap`, with the spec's body in the
/// header (`info`) so that the two read side by side.
fn snapshot(name: &str, documented: &DocumentedResponse, lang: Lang, got: &Got) {
    let mut headers = serde_json::Map::new();
    let zip = got.header("content-type") == Some("application/zip");
    for name in ["content-type", "content-disposition", "accept-ranges", "content-length", "last-modified"] {
        if name == "content-length" && !zip {
            continue; // Only the size of a generated zip varies; JSON lengths say nothing more.
        }
        if let Some(value) = got.header(name) {
            headers.insert(name.into(), value.into());
        }
    }
    let body = if got.body.is_empty() {
        Value::Null
    } else if zip {
        let zip = zip::ZipArchive::new(std::io::Cursor::new(got.body.to_vec())).unwrap();
        let mut entries: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
        entries.sort();
        json!({"zip": {"bytes": got.body.len(), "entries": entries}})
    } else {
        got.json()
    };
    let value = json!({
        "request": got.request,
        "when": got.when,
        "status": got.status,
        "headers": headers,
        "body": body,
    });
    let code = match lang {
        Lang::Zh => "zh",
        Lang::En => "en",
    };
    let op = documented.operation;
    let description = format!("{} {} {}, {code}; info: the spec's body", op.method().as_str(), op.path(), documented.status);
    let spec_body = documented.body(lang).unwrap_or_else(|| documented.text(lang).into());
    insta::with_settings!({ description => description, info => &spec_body, omit_expression => true }, {
        insta::assert_json_snapshot!(format!("{name}_{code}"), value, {
            ".body[].size" => "[size]",
            ".body.zip.bytes" => "[size]",
            ".headers[\"content-length\"]" => "[size]",
            ".headers[\"last-modified\"]" => "[http date]",
        });
    });
}

/// One function per documented response: set the state up, send the request, return what
/// came back (plus checks that only make sense for that trigger).
mod cases {
    use super::*;

    const MISSING: &str = "/api/backups/missing.zip";
    /// The spec's example key, for requests that must fail before the key matters.
    const KEY: &str = "/api/backups/pb_backup_20230519162514.zip";

    fn key(lang: Lang, stem: &str) -> String {
        format!("{stem}_{}.zip", if lang == Lang::Zh { "zh" } else { "en" })
    }

    fn a_zip() -> Vec<u8> {
        zip_with(&[("data.db", b"SQLite format 3\0")])
    }

    // --- list

    pub async fn list_200(f: &Fixture, lang: Lang) -> Got {
        // The spec's two backups, with the spec's modification times.
        let example = documented_body(catalog::find(Operation::List, 200).unwrap(), lang);
        for item in example.as_array().unwrap().iter().rev() {
            let key = item["key"].as_str().unwrap();
            f.backup(key).await;
            let modified = time::PrimitiveDateTime::parse(item["modified"].as_str().unwrap(), MODIFIED_FORMAT).unwrap();
            f.set_modified(key, SystemTime::from(modified.assume_utc())).await;
        }
        let mut got = f.send(f.get(lang, "/api/backups").header("Authorization", &f.su), "two backups exist").await;
        // Everything but the sizes is the spec's example, in its order; on S3 the times are
        // the uploads' (`verify` checks their format).
        let mut body = got.json();
        for (item, path) in body.as_array_mut().unwrap().iter_mut().zip(example.as_array().unwrap()) {
            let stored = f.stored(path["key"].as_str().unwrap()).await.expect("listed backups are stored");
            assert_eq!(item["size"], stored.len(), "size is the file's");
            item["size"] = path["size"].clone();
            if f.bucket.is_some() {
                item["modified"] = path["modified"].clone();
            }
        }
        assert_eq!(body, example);
        if f.bucket.is_some() {
            // The real times pass `verify` here; shown as the spec's, the response matches the
            // snapshot that the local run pins (keys, order and sizes stay the server's).
            verify(catalog::find(Operation::List, 200).unwrap(), lang, &got);
            let mut shown = got.json();
            for (item, path) in shown.as_array_mut().unwrap().iter_mut().zip(example.as_array().unwrap()) {
                item["modified"] = path["modified"].clone();
            }
            got.body = serde_json::to_vec(&shown).unwrap().into();
        }
        got
    }

    pub async fn list_400(f: &Fixture, lang: Lang) -> Got {
        f.break_storage().await;
        f.send(f.get(lang, "/api/backups").header("Authorization", &f.su), "the backups storage is a regular file").await
    }

    pub async fn list_401(f: &Fixture, lang: Lang) -> Got {
        f.send(f.get(lang, "/api/backups"), "no token").await
    }

    pub async fn list_403(f: &Fixture, lang: Lang) -> Got {
        f.send(f.get(lang, "/api/backups").header("Authorization", &f.user), "a regular user's token").await
    }

    // --- create

    pub async fn create_204(f: &Fixture, lang: Lang) -> Got {
        let name = key(lang, "made");
        let r = f.post(lang, "/api/backups").header("Authorization", &f.su).json(&json!({"name": name}));
        let got = f.send(r, "nothing else runs").await;
        assert!(f.keys().await.contains(&name), "the backup is stored when the 204 comes");
        got
    }

    pub async fn create_400(f: &Fixture, lang: Lang) -> Got {
        let held = f.hold_create(&key(lang, "held")).await;
        let r = f.post(lang, "/api/backups").header("Authorization", &f.su).json(&json!({"name": key(lang, "other")}));
        let got = f.send(r, "another create runs").await;
        held.finish().await;
        assert!(!f.keys().await.contains(&key(lang, "other")));
        got
    }

    pub async fn create_401(f: &Fixture, lang: Lang) -> Got {
        f.send(f.post(lang, "/api/backups").json(&json!({})), "no token").await
    }

    pub async fn create_403(f: &Fixture, lang: Lang) -> Got {
        let r = f.post(lang, "/api/backups").header("Authorization", &f.user).json(&json!({}));
        let got = f.send(r, "a regular user's token").await;
        assert_eq!(f.keys().await, Vec::<String>::new());
        got
    }

    // --- upload

    pub async fn upload_204(f: &Fixture, lang: Lang) -> Got {
        let name = key(lang, "uploaded");
        let r = f.post(lang, "/api/backups/upload").header("Authorization", &f.su).multipart(multipart_file(&name, a_zip()));
        let got = f.send(r, "the file is a zip archive").await;
        assert_eq!(f.stored(&name).await, Some(a_zip()), "stored as sent, under its name");
        got
    }

    pub async fn upload_400(f: &Fixture, lang: Lang) -> Got {
        let r = f
            .post(lang, "/api/backups/upload")
            .header("Authorization", &f.su)
            .multipart(multipart_file(&key(lang, "notzip"), b"plain text, not a zip".to_vec()));
        let got = f.send(r, "the file is not a zip archive").await;
        assert_eq!(f.keys().await, Vec::<String>::new());
        got
    }

    pub async fn upload_401(f: &Fixture, lang: Lang) -> Got {
        let r = f.post(lang, "/api/backups/upload").multipart(multipart_file("a.zip", a_zip()));
        f.send(r, "no token").await
    }

    pub async fn upload_403(f: &Fixture, lang: Lang) -> Got {
        let r = f.post(lang, "/api/backups/upload").header("Authorization", &f.user).multipart(multipart_file("a.zip", a_zip()));
        let got = f.send(r, "a regular user's token").await;
        assert_eq!(f.keys().await, Vec::<String>::new());
        got
    }

    // --- delete

    pub async fn delete_204(f: &Fixture, lang: Lang) -> Got {
        let name = key(lang, "doomed");
        f.backup(&name).await;
        let got = f.send(f.delete(lang, &format!("/api/backups/{name}")).header("Authorization", &f.su), "the backup exists").await;
        assert!(!f.keys().await.contains(&name));
        got
    }

    pub async fn delete_400(f: &Fixture, lang: Lang) -> Got {
        let name = key(lang, "held");
        let held = f.hold_create(&name).await;
        let got = f.send(f.delete(lang, &format!("/api/backups/{name}")).header("Authorization", &f.su), "this key is being created").await;
        held.finish().await;
        assert!(f.keys().await.contains(&name), "the create was not disturbed");
        got
    }

    pub async fn delete_401(f: &Fixture, lang: Lang) -> Got {
        f.send(f.delete(lang, KEY), "no token").await
    }

    pub async fn delete_403(f: &Fixture, lang: Lang) -> Got {
        f.backup("pb_backup_20230519162514.zip").await;
        let got = f.send(f.delete(lang, KEY).header("Authorization", &f.user), "a regular user's token").await;
        assert_eq!(f.keys().await, ["pb_backup_20230519162514.zip"]);
        got
    }

    pub async fn delete_404(f: &Fixture, lang: Lang) -> Got {
        f.send(f.delete(lang, MISSING).header("Authorization", &f.su), "no such backup").await
    }

    // --- restore

    pub async fn restore_204(f: &Fixture, lang: Lang) -> Got {
        let name = key(lang, "snapshot");
        f.backup(&name).await;
        // Made after the backup: a real restore takes it away.
        let marker = f.s.data_dir().join("made_after_the_backup.txt");
        std::fs::write(&marker, b"x").unwrap();
        let r = f.post(lang, &format!("/api/backups/{name}/restore")).header("Authorization", &f.su);
        let got = f.send(r, "the backup exists and nothing else runs").await;
        // The server restarts in-process; it is back once it serves and takes a create again
        // (the restore keeps it busy until then).
        eventually(Duration::from_secs(60), "the server back after the restore", || async {
            let health = f.s.client.get(f.s.url("/api/health")).send().await.ok()?;
            (health.status() == 200).then_some(())
        })
        .await;
        let after = key(lang, "after_restore");
        eventually(Duration::from_secs(60), "a create after the restore", || async {
            let r = f.s.client.post(f.s.url("/api/backups")).header("Authorization", &f.su).json(&json!({"name": after}));
            let r = r.send().await.ok()?;
            (r.status() == 204).then_some(())
        })
        .await;
        assert!(!marker.exists(), "the data is the backup's");
        assert!(f.keys().await.contains(&name), "backups survive a restore");
        got
    }

    pub async fn restore_400(f: &Fixture, lang: Lang) -> Got {
        f.backup("done.zip").await;
        let held = f.hold_create(&key(lang, "held")).await;
        let got = f.send(f.post(lang, "/api/backups/done.zip/restore").header("Authorization", &f.su), "a create runs").await;
        held.finish().await;
        got
    }

    pub async fn restore_401(f: &Fixture, lang: Lang) -> Got {
        f.send(f.post(lang, &format!("{KEY}/restore")), "no token").await
    }

    pub async fn restore_403(f: &Fixture, lang: Lang) -> Got {
        f.backup("pb_backup_20230519162514.zip").await;
        f.send(f.post(lang, &format!("{KEY}/restore")).header("Authorization", &f.user), "a regular user's token").await
    }

    pub async fn restore_404(f: &Fixture, lang: Lang) -> Got {
        f.send(f.post(lang, &format!("{MISSING}/restore")).header("Authorization", &f.su), "no such backup").await
    }

    // --- download

    pub async fn download_200(f: &Fixture, lang: Lang) -> Got {
        let name = key(lang, "download");
        f.backup(&name).await;
        let got = f.send(f.get(lang, &format!("/api/backups/{name}?token={}", f.su_file)), "the backup exists").await;
        assert_eq!(got.header("content-disposition"), Some(format!("attachment; filename=\"{name}\"").as_str()));
        assert_eq!(Some(got.body.to_vec()), f.stored(&name).await, "the stored bytes");
        got
    }

    pub async fn download_400(f: &Fixture, lang: Lang) -> Got {
        f.break_storage().await;
        let r = f.get(lang, &format!("{MISSING}?token={}", f.su_file));
        f.send(r, "the backups storage is a regular file").await
    }

    pub async fn download_401(f: &Fixture, lang: Lang) -> Got {
        f.backup("pb_backup_20230519162514.zip").await;
        f.send(f.get(lang, KEY), "no token").await
    }

    pub async fn download_403(f: &Fixture, lang: Lang) -> Got {
        f.backup("pb_backup_20230519162514.zip").await;
        f.send(f.get(lang, &format!("{KEY}?token={}", f.user_file)), "a regular user's file token").await
    }

    pub async fn download_404(f: &Fixture, lang: Lang) -> Got {
        f.send(f.get(lang, &format!("{MISSING}?token={}", f.su_file)), "no such backup").await
    }
}

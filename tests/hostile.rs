//! Hostile inputs over HTTP: forged and misused tokens, keys that try to leave the backups
//! folder, names that are not names, archives built to escape or to lie, and the promise
//! that no error body ever shows a path or an OS error.
//!
//! Every request goes through a `Probe`, which keeps each error body it saw; each test ends
//! with `assert_no_leaks`, which also checks that every body has the documented shape.

mod support;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey};
use pb_backups::accounts::{Accounts, Collection};
use pb_backups::i18n::{Lang, Message};
use reqwest::Method;
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NOT_FOUND: &str = pb_backups_spec::Lang::Zh.messages().not_found;
const UNAUTHORIZED: &str = pb_backups_spec::Lang::Zh.messages().unauthorized;
const FORBIDDEN: &str = pb_backups_spec::Lang::Zh.messages().forbidden;
const UPLOAD_FAILED: &str = pb_backups_spec::Lang::Zh.messages().upload_failure;

// ---------------------------------------------------------------------------------------
// Requests that remember their error bodies
// ---------------------------------------------------------------------------------------

struct Probe<'a> {
    s: &'a TestServer,
    /// (what was sent, status, raw body) of every answer with status >= 400.
    errors: Mutex<Vec<(String, u16, String)>>,
}

impl<'a> Probe<'a> {
    fn new(s: &'a TestServer) -> Self {
        Probe { s, errors: Mutex::new(Vec::new()) }
    }

    fn keep(&self, what: &str, status: u16, body: &str) -> Value {
        if status >= 400 {
            self.errors.lock().unwrap().push((what.to_string(), status, body.to_string()));
        }
        if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()))
        }
    }

    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> (u16, Value) {
        let r = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        (status, self.keep(what, status, &body))
    }

    /// `method` on `path` with `Authorization: auth` (none when `None`), raw bytes allowed.
    async fn authed(&self, what: &str, method: Method, path: &str, auth: Option<&[u8]>) -> (u16, Value) {
        let mut req = self.s.client.request(method.clone(), self.s.url(path));
        req = match path {
            "/api/backups/upload" => {
                let (ct, body) = multipart_raw(b"auth-probe.zip", &benign_zip());
                req.header("Content-Type", ct).body(body)
            }
            _ if method == Method::POST => req.json(&json!({})),
            _ => req,
        };
        if let Some(a) = auth {
            req = req.header("Authorization", reqwest::header::HeaderValue::from_bytes(a).unwrap());
        }
        self.send(what, req).await
    }

    /// A request written byte for byte on a fresh connection, so that nothing on the client
    /// side normalises or re-encodes the target (`..`, `%2e%2e`, `%C0%AF`).
    async fn raw(&self, what: &str, method: &str, target: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let (status, body) = raw_http(&self.s.base, method, target, headers).await;
        (status, self.keep(what, status, &body))
    }

    /// Every error body seen: the documented shape, its status repeated, and nothing that
    /// tells a client where the data lives or what the OS said.
    fn assert_no_leaks(&self) {
        let errors = self.errors.lock().unwrap();
        assert!(!errors.is_empty(), "the test produced no error body to check");
        let data_dir = self.s.data_dir().to_string_lossy().to_string();
        let forbidden = std::iter::once(data_dir.as_str()).chain(LEAK_MARKERS.iter().copied());
        for (what, status, body) in errors.iter() {
            for bad in forbidden.clone() {
                assert!(!body.contains(bad), "{what}: the body shows {bad:?}: {body}");
            }
            let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: not JSON: {body}"));
            let obj = v.as_object().unwrap_or_else(|| panic!("{what}: not an object: {body}"));
            let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            keys.sort();
            assert_eq!(keys, ["data", "message", "status"], "{what}: {body}");
            assert_eq!(v["status"], *status, "{what}: {body}");
            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
            assert!(v["data"].is_object(), "{what}: {body}");
        }
    }
}

async fn raw_http(base: &str, method: &str, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut body = buf[split + 4..].to_vec();
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, String::from_utf8_lossy(&body).to_string())
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size_text = String::from_utf8_lossy(&data[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A multipart form with one `file` part whose `filename` is exactly `file_name`.
fn multipart_raw(file_name: &[u8], bytes: &[u8]) -> (String, Vec<u8>) {
    const BOUNDARY: &str = "hostile-7c1e2f";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"").as_bytes());
    body.extend_from_slice(file_name);
    body.extend_from_slice(b"\"\r\nContent-Type: application/zip\r\n\r\n");
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

async fn upload(p: &Probe<'_>, su: &str, file_name: &[u8], bytes: &[u8]) -> (u16, Value) {
    let (ct, body) = multipart_raw(file_name, bytes);
    let what = format!("upload {:?}", String::from_utf8_lossy(file_name));
    let req = p.s.client.post(p.s.url("/api/backups/upload")).header("Authorization", su).header("Content-Type", ct).body(body);
    p.send(&what, req).await
}

async fn keys(p: &Probe<'_>, su: &str) -> Vec<String> {
    let (status, body) = p.send("list", p.s.client.get(p.s.url("/api/backups")).header("Authorization", su)).await;
    assert_eq!(status, 200, "{body}");
    sorted_keys(&body)
}

/// Polls until the server takes a new create or restore again (a restore of a missing key
/// answers 404 only when nothing is running, 400 while busy).
async fn wait_not_busy(p: &Probe<'_>, su: &str) {
    eventually(Duration::from_secs(20), "the server to be free", || async {
        let req = p.s.client.post(p.s.url("/api/backups/no-such-backup.zip/restore")).header("Authorization", su);
        (p.send("restore probe", req).await.0 == 404).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Data dir snapshots
// ---------------------------------------------------------------------------------------

/// Every file of the data dir outside `backups/`, with its size, mtime and content hash.
/// Directories are left out (their mtime moves whenever the temp folder is used), and so is
/// SQLite's `-shm` index, which readers update through a memory map.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime, u64)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (u64, SystemTime, u64)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if rel == Path::new("backups") || rel.to_string_lossy().ends_with("-shm") {
                continue;
            }
            let md = entry.path().symlink_metadata().unwrap();
            if md.is_dir() {
                walk(root, &path, out);
            } else {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&path).unwrap().hash(&mut h);
                out.insert(rel, (md.len(), md.modified().unwrap(), h.finish()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn assert_same(before: &BTreeMap<PathBuf, (u64, SystemTime, u64)>, dir: &Path, what: &str) {
    let after = snapshot(dir);
    assert_eq!(before, &after, "{what}: files outside backups/ changed");
}

// ---------------------------------------------------------------------------------------
// Archives made by hand, so that they can be wrong in every way the zip crate refuses to write
// ---------------------------------------------------------------------------------------

/// A database file as far as a restore looks at it: the SQLite header and a page of zeros.
fn sqlite_bytes() -> Vec<u8> {
    let mut b = b"SQLite format 3\0".to_vec();
    b.resize(512, 0);
    b
}

fn benign_zip() -> Vec<u8> {
    zip_with(&[("data.db", &sqlite_bytes()), ("storage/a.txt", b"hello")])
}

#[derive(Clone)]
struct RawEntry {
    name: Vec<u8>,
    data: Vec<u8>,
    /// Unix `st_mode` (type and permission bits) recorded in the external attributes.
    mode: Option<u32>,
    /// Uncompressed size to declare instead of the real one.
    declared_size: Option<u32>,
    flags: u16,
    /// Deflated, else stored.
    deflate: bool,
    /// More names, each a central record of its own pointing at this entry's local header
    /// and data (entries that overlap).
    aliases: Vec<Vec<u8>>,
}

fn entry(name: &str, data: &[u8]) -> RawEntry {
    RawEntry {
        name: name.as_bytes().to_vec(),
        data: data.to_vec(),
        mode: None,
        declared_size: None,
        flags: 0,
        deflate: false,
        aliases: Vec::new(),
    }
}

fn db() -> RawEntry {
    entry("data.db", &sqlite_bytes())
}

/// A zip written field by field (local headers, central directory, end record), trusting
/// `entries` completely.
fn raw_zip(entries: &[RawEntry]) -> Vec<u8> {
    fn u16le(out: &mut Vec<u8>, v: u16) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    fn u32le(out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mut out = Vec::new();
    let mut central = Vec::new();
    let mut records = 0u16;
    for e in entries {
        let offset = out.len() as u32;
        let mut crc = flate2::Crc::new();
        crc.update(&e.data);
        let stored = if e.deflate {
            let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            std::io::Write::write_all(&mut encoder, &e.data).unwrap();
            encoder.finish().unwrap()
        } else {
            e.data.clone()
        };
        let method = if e.deflate { 8 } else { 0 };
        let (crc, csize) = (crc.sum(), stored.len() as u32);
        let usize_ = e.declared_size.unwrap_or(e.data.len() as u32);
        // Local file header.
        u32le(&mut out, 0x0403_4b50);
        u16le(&mut out, 20);
        u16le(&mut out, e.flags);
        u16le(&mut out, method);
        u16le(&mut out, 0);
        u16le(&mut out, 0x21); // 1980-01-01
        u32le(&mut out, crc);
        u32le(&mut out, csize);
        u32le(&mut out, usize_);
        u16le(&mut out, e.name.len() as u16);
        u16le(&mut out, 0);
        out.extend_from_slice(&e.name);
        out.extend_from_slice(&stored);
        // Central directory headers: the entry's, then its aliases'.
        for name in std::iter::once(&e.name).chain(&e.aliases) {
            u32le(&mut central, 0x0201_4b50);
            u16le(&mut central, if e.mode.is_some() { (3 << 8) | 20 } else { 20 });
            u16le(&mut central, 20);
            u16le(&mut central, e.flags);
            u16le(&mut central, method);
            u16le(&mut central, 0);
            u16le(&mut central, 0x21);
            u32le(&mut central, crc);
            u32le(&mut central, csize);
            u32le(&mut central, usize_);
            u16le(&mut central, name.len() as u16);
            u16le(&mut central, 0);
            u16le(&mut central, 0);
            u16le(&mut central, 0);
            u16le(&mut central, 0);
            u32le(&mut central, e.mode.map_or(0, |m| m << 16));
            u32le(&mut central, offset);
            central.extend_from_slice(name);
            records += 1;
        }
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    u32le(&mut out, 0x0605_4b50);
    u16le(&mut out, 0);
    u16le(&mut out, 0);
    u16le(&mut out, records);
    u16le(&mut out, records);
    u32le(&mut out, central.len() as u32);
    u32le(&mut out, cd_offset);
    u16le(&mut out, 0);
    out
}

fn with_mode(mut e: RawEntry, mode: u32) -> RawEntry {
    e.mode = Some(mode);
    e
}

/// A zip bomb made of overlapping entries: 200 central records pointing at one deflated
/// entry of 4 MiB of zeros. About 14 KiB that would extract to 800 MiB, and every record
/// alone is honest (sizes, CRC, ratio).
fn overlapping_bomb() -> Vec<u8> {
    let mut zeros = entry("zeros-000.bin", &vec![0u8; 4 << 20]);
    zeros.deflate = true;
    zeros.aliases = (1..200).map(|i| format!("zeros-{i:03}.bin").into_bytes()).collect();
    let bytes = raw_zip(&[db(), zeros]);
    assert!(bytes.len() < 32 * 1024, "{}", bytes.len());
    bytes
}

/// 40 files whose names are 2,000 folders deep (4 KB each).
fn deep_names() -> Vec<u8> {
    let deep = "a/".repeat(2000);
    let mut entries = vec![db()];
    entries.extend((0..40).map(|i| entry(&format!("{deep}f{i}"), b"x")));
    raw_zip(&entries)
}

// ---------------------------------------------------------------------------------------
// Tokens made by hand
// ---------------------------------------------------------------------------------------

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.claims.signature`, the signature an HMAC of `alg` under `key` (HS256/384/512).
fn jwt(header: &Value, claims: &Value, key: &[u8], alg: Algorithm) -> String {
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let sig = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &EncodingKey::from_secret(key), alg).unwrap();
    format!("{signing_input}.{sig}")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

const SUPERUSERS_ID: &str = "pbc_3142635823";

/// The record id and the auth and file signing keys of a superuser, read from `data.db` the
/// way PocketBase builds them (record `tokenKey` followed by the collection's secret).
fn superuser_keys(dir: &Path, email: &str) -> (String, Vec<u8>, Vec<u8>) {
    let conn = rusqlite::Connection::open(dir.join("data.db")).unwrap();
    let (id, token_key): (String, String) = conn
        .query_row("SELECT id, tokenKey FROM _superusers WHERE email = ?1", [email], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    let (auth, file): (String, String) = conn
        .query_row(
            "SELECT json_extract(options, '$.authToken.secret'), json_extract(options, '$.fileToken.secret')
             FROM _collections WHERE id = ?1",
            [SUPERUSERS_ID],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    (id, [token_key.as_bytes(), auth.as_bytes()].concat(), [token_key.as_bytes(), file.as_bytes()].concat())
}

fn claims(id: &str, kind: &str, exp: u64) -> Value {
    json!({"collectionId": SUPERUSERS_ID, "exp": exp, "id": id, "refreshable": true, "type": kind})
}

fn hs256() -> Value {
    json!({"alg": "HS256", "typ": "JWT"})
}

/// The five endpoints that take `Authorization`, acting on the existing backup `k.zip`.
const AUTHED: [(&str, Method, &str); 5] = [
    ("list", Method::GET, "/api/backups"),
    ("create", Method::POST, "/api/backups"),
    ("upload", Method::POST, "/api/backups/upload"),
    ("delete", Method::DELETE, "/api/backups/k.zip"),
    ("restore", Method::POST, "/api/backups/k.zip/restore"),
];

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn token_matrix() {
    let s = TestServer::start().await;
    let p = Probe::new(&s);
    let su = s.superuser_token().await;
    let (status, _) = p.send("create k.zip", s.client.post(s.url("/api/backups")).header("Authorization", &su).json(&json!({"name": "k.zip"}))).await;
    assert_eq!(status, 204);

    let (id, auth_key, file_key) = superuser_keys(s.data_dir(), SUPERUSER.0);
    let user_id: String = rusqlite::Connection::open(s.data_dir().join("data.db"))
        .unwrap()
        .query_row("SELECT id FROM users WHERE email = ?1", [USER.0], |r| r.get(0))
        .unwrap();
    let later = now() + 3600;

    // The builder is right: this hand-made token is accepted, so each variant below is
    // refused for the one thing it changes.
    let good = jwt(&hs256(), &claims(&id, "auth", later), &auth_key, Algorithm::HS256);
    let (status, body) = p.authed("hand-made token", Method::GET, "/api/backups", Some(good.as_bytes())).await;
    assert_eq!(status, 200, "{body}");
    let good_file = jwt(&hs256(), &json!({"collectionId": SUPERUSERS_ID, "exp": later, "id": id, "type": "file"}), &file_key, Algorithm::HS256);
    let r = s.client.get(s.url(&format!("/api/backups/k.zip?token={good_file}"))).send().await.unwrap();
    assert_eq!(r.status(), 200, "hand-made file token");

    // Accounts that stop being valid: one deleted, one whose password changes.
    let accounts = Accounts::open(s.data_dir()).unwrap();
    accounts.upsert(Collection::Superusers, "gone@example.com", "gone-password").unwrap();
    accounts.upsert(Collection::Superusers, "moved@example.com", "moved-password").unwrap();
    let gone = s.token("_superusers", ("gone@example.com", "gone-password")).await;
    let moved = s.token("_superusers", ("moved@example.com", "moved-password")).await;
    let gone_file = s.file_token(&gone).await;
    let moved_file = s.file_token(&moved).await;
    assert!(accounts.delete(Collection::Superusers, "gone@example.com").unwrap());
    accounts.upsert(Collection::Superusers, "moved@example.com", "another-password").unwrap();

    let real_parts: Vec<&str> = su.split('.').collect();
    let tampered_exp = format!("{}.{}.{}", real_parts[0], b64(claims(&id, "auth", later + 999_999).to_string().as_bytes()), real_parts[2]);
    let mut as_user = claims(&user_id, "auth", later);
    as_user["collectionId"] = json!("_pb_users_auth_");
    let tampered_id = format!("{}.{}.{}", real_parts[0], b64(as_user.to_string().as_bytes()), real_parts[2]);
    let unsigned = format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()), b64(claims(&id, "auth", later).to_string().as_bytes()));
    let none_with_sig = {
        let g: Vec<&str> = good.split('.').collect();
        format!("{}.{}.{}", b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()), g[1], g[2])
    };
    let su_file = s.file_token(&su).await;
    let su_at = |s: &str| format!("Bearer {s}");

    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("alg none, no signature", unsigned.clone().into_bytes()),
        ("alg none, signature kept", none_with_sig.into_bytes()),
        ("alg None", jwt(&json!({"alg": "None", "typ": "JWT"}), &claims(&id, "auth", later), &auth_key, Algorithm::HS256).into_bytes()),
        ("HS512, right key", jwt(&json!({"alg": "HS512", "typ": "JWT"}), &claims(&id, "auth", later), &auth_key, Algorithm::HS512).into_bytes()),
        ("HS384, right key", jwt(&json!({"alg": "HS384", "typ": "JWT"}), &claims(&id, "auth", later), &auth_key, Algorithm::HS384).into_bytes()),
        ("RS256 header, HMAC signature", jwt(&json!({"alg": "RS256", "typ": "JWT"}), &claims(&id, "auth", later), &auth_key, Algorithm::HS256).into_bytes()),
        ("extra kid header", jwt(&json!({"alg": "HS256", "typ": "JWT", "kid": "../../dev/null"}), &claims(&id, "auth", later), &auth_key, Algorithm::HS256).into_bytes()),
        ("wrong key", jwt(&hs256(), &claims(&id, "auth", later), b"not-the-key", Algorithm::HS256).into_bytes()),
        ("empty key", jwt(&hs256(), &claims(&id, "auth", later), b"", Algorithm::HS256).into_bytes()),
        ("file key for an auth token", jwt(&hs256(), &claims(&id, "auth", later), &file_key, Algorithm::HS256).into_bytes()),
        ("expired", jwt(&hs256(), &claims(&id, "auth", now() - 1), &auth_key, Algorithm::HS256).into_bytes()),
        ("expires now", jwt(&hs256(), &claims(&id, "auth", now()), &auth_key, Algorithm::HS256).into_bytes()),
        ("exp as a string", jwt(&hs256(), &json!({"collectionId": SUPERUSERS_ID, "exp": later.to_string(), "id": id, "type": "auth"}), &auth_key, Algorithm::HS256).into_bytes()),
        ("no exp", jwt(&hs256(), &json!({"collectionId": SUPERUSERS_ID, "id": id, "type": "auth"}), &auth_key, Algorithm::HS256).into_bytes()),
        ("unknown collection", jwt(&hs256(), &json!({"collectionId": "_superusers", "exp": later, "id": id, "type": "auth"}), &auth_key, Algorithm::HS256).into_bytes()),
        ("unknown type", jwt(&hs256(), &claims(&id, "admin", later), &auth_key, Algorithm::HS256).into_bytes()),
        ("tampered exp", tampered_exp.into_bytes()),
        ("tampered id", tampered_id.into_bytes()),
        ("signature of another token", format!("{}.{}.{}", real_parts[0], real_parts[1], su_file.split('.').nth(2).unwrap()).into_bytes()),
        ("trailing part", format!("{su}.x").into_bytes()),
        ("padded signature", format!("{su}=").into_bytes()),
        ("file token as auth", su_file.clone().into_bytes()),
        ("file token as auth, Bearer", su_at(&su_file).into_bytes()),
        ("file-typed token signed with the file key", good_file.clone().into_bytes()),
        ("deleted account", gone.clone().into_bytes()),
        ("deleted account, Bearer", su_at(&gone).into_bytes()),
        ("changed password", moved.clone().into_bytes()),
        ("garbage", b"garbage".to_vec()),
        ("three dots", b"..".to_vec()),
        ("a.b.c", b"a.b.c".to_vec()),
        ("empty", b"".to_vec()),
        ("blank", b"   ".to_vec()),
        ("Bearer alone", b"Bearer".to_vec()),
        ("Bearer and a space", b"Bearer ".to_vec()),
        ("Bearer twice", format!("Bearer Bearer {su}").into_bytes()),
        ("Basic scheme", format!("Basic {su}").into_bytes()),
        ("a tab inside", format!("{su}\t").into_bytes().into_iter().chain(*b"x").collect()),
        ("non-UTF-8 bytes", b"\xff\xfe\xfd".to_vec()),
        ("huge", "a".repeat(60_000).into_bytes()),
    ];
    for (name, method, path) in &AUTHED {
        for (case, auth) in &bad {
            let what = format!("{name} with {case}");
            let got = p.authed(&what, method.clone(), path, Some(auth)).await;
            assert_eq!(got, (401, error_body(401, UNAUTHORIZED)), "{what}");
        }
        let what = format!("{name} without Authorization");
        assert_eq!(p.authed(&what, method.clone(), path, None).await, (401, error_body(401, UNAUTHORIZED)), "{what}");
        let user = s.user_token().await;
        let what = format!("{name} as a regular user");
        assert_eq!(p.authed(&what, method.clone(), path, Some(user.as_bytes())).await, (403, error_body(403, FORBIDDEN)), "{what}");
        let what = format!("{name} as a regular user, Bearer");
        assert_eq!(p.authed(&what, method.clone(), path, Some(su_at(&user).as_bytes())).await, (403, error_body(403, FORBIDDEN)), "{what}");
    }

    // Download: the `token` query parameter must be a superuser's file token.
    let user_file = s.file_token(&s.user_token().await).await;
    let expired_file = jwt(&hs256(), &json!({"collectionId": SUPERUSERS_ID, "exp": now() - 1, "id": id, "type": "file"}), &file_key, Algorithm::HS256);
    let auth_key_file = jwt(&hs256(), &json!({"collectionId": SUPERUSERS_ID, "exp": later, "id": id, "type": "file"}), &auth_key, Algorithm::HS256);
    let hs512_file = jwt(&json!({"alg": "HS512", "typ": "JWT"}), &json!({"collectionId": SUPERUSERS_ID, "exp": later, "id": id, "type": "file"}), &file_key, Algorithm::HS512);
    let download_bad: Vec<(&str, String)> = vec![
        ("auth token", su.clone()),
        ("hand-made auth token", good.clone()),
        ("Bearer file token", format!("Bearer%20{su_file}")),
        ("expired file token", expired_file),
        ("file token signed with the auth key", auth_key_file),
        ("HS512 file token", hs512_file),
        ("alg none", unsigned),
        ("deleted account", gone_file),
        ("changed password", moved_file),
        ("garbage", "garbage".into()),
        ("empty", String::new()),
        ("percent-encoded NUL", format!("{su_file}%00")),
    ];
    for (case, token) in &download_bad {
        let what = format!("download with {case}");
        let got = p.send(&what, s.client.get(s.url(&format!("/api/backups/k.zip?token={token}")))).await;
        assert_eq!(got, (401, error_body(401, UNAUTHORIZED)), "{what}");
    }
    let got = p.send("download without token", s.client.get(s.url("/api/backups/k.zip"))).await;
    assert_eq!(got, (401, error_body(401, UNAUTHORIZED)));
    let got = p.send("download with the token as a header", s.client.get(s.url("/api/backups/k.zip")).header("Authorization", &su_file)).await;
    assert_eq!(got, (401, error_body(401, UNAUTHORIZED)));
    let got = p.send("download as a regular user", s.client.get(s.url(&format!("/api/backups/k.zip?token={user_file}")))).await;
    assert_eq!(got, (403, error_body(403, FORBIDDEN)));

    // Nothing happened: the one backup is still there, alone, and the server is free.
    assert_eq!(keys(&p, &su).await, ["k.zip"]);
    wait_not_busy(&p, &su).await;
    p.assert_no_leaks();
    s.stop().await;
}

#[tokio::test]
async fn impossible_keys_are_404_and_touch_nothing() {
    let s = TestServer::start().await;
    let p = Probe::new(&s);
    let su = s.superuser_token().await;
    let ft = s.file_token(&su).await;
    // Targets a traversal would reach: zips beside and above the backups folder, and one
    // real backup that normalising keys could reach.
    let victim = benign_zip();
    std::fs::write(s.data_dir().join("victim.zip"), &victim).unwrap();
    std::fs::create_dir(s.data_dir().join("sub")).unwrap();
    std::fs::write(s.data_dir().join("sub/victim.zip"), &victim).unwrap();
    assert_eq!(upload(&p, &su, b"real.zip", &victim).await.0, 204);
    let before = snapshot(s.data_dir());
    let real = s.data_dir().join("backups/real.zip");
    let real_mtime = real.metadata().unwrap().modified().unwrap();

    let long = format!("{}.zip", "a".repeat(147));
    let keys_in_path: Vec<String> = [
        "%2E", "%2e%2e", "..%2F", "%2E%2E%2Fvictim.zip", "..%2Fvictim.zip", "..%5Cvictim.zip", "%2e%2e%2fvictim.zip",
        "%2e%2e%5cvictim.zip", "..%2F..%2Fvictim.zip", 
        "..%E2%88%95victim.zip", "..%EF%BC%8Fvictim.zip", "sub%2Fvictim.zip", "%2Fetc%2Fpasswd", "%2Fvictim.zip",
        "..%2Fdata.db", "%2E%2E%2Fdata.db", "..%2F..%2Fdata.db", "data.db", "data.db-wal", "backups", ".pb_temp",
        "%2Epb_temp", "%00", "%00.zip", "real.zip%00", "real%00.zip", "real.zip%00.zip", "real.zip%2F", "real.zip%2F.",
        ".%2Freal.zip", "%2E%2Freal.zip", "real.zip%5C", "a%01.zip", "a%0A.zip", "a%0D%0A.zip", "a%7F.zip",
        "a%C2%85.zip", "a%09.zip", ".hidden.zip", ".zip", "zip", "real", "REAL.ZIP",
        "real.zip.", "real.zip%20", "real.zip.tmp", "%2E%2E", "C%3A%5Cvictim.zip", "%5C%5Cserver%5Cshare.zip",
        "missing.zip",
    ]
    .iter()
    .map(|k| k.to_string())
    .chain([long.clone(), format!("{}.zip", "%C3%A9".repeat(147)), format!("..%2F{long}")])
    .collect();

    for key in &keys_in_path {
        let what = format!("delete {key}");
        let got = p.raw(&what, "DELETE", &format!("/api/backups/{key}"), &[("Authorization", &su)]).await;
        assert_eq!(got, (404, error_body(404, NOT_FOUND)), "{what}");
        let what = format!("restore {key}");
        let got = p.raw(&what, "POST", &format!("/api/backups/{key}/restore"), &[("Authorization", &su)]).await;
        assert_eq!(got, (404, error_body(404, NOT_FOUND)), "{what}");
        let what = format!("download {key}");
        let got = p.raw(&what, "GET", &format!("/api/backups/{key}?token={ft}"), &[]).await;
        assert_eq!(got, (404, error_body(404, NOT_FOUND)), "{what}");
    }
    // Unencoded dot segments reach no backup operation either.
    for target in ["/api/backups/..", "/api/backups/../data.db", "/api/backups/../../victim.zip", "/api/backups/./..", "/api/backups//victim.zip"] {
        let what = format!("DELETE {target}");
        let (status, body) = p.raw(&what, "DELETE", target, &[("Authorization", &su)]).await;
        assert_eq!(status, 404, "{what}: {body}");
        let what = format!("GET {target}");
        let (status, body) = p.raw(&what, "GET", &format!("{target}?token={ft}"), &[]).await;
        assert_eq!(status, 404, "{what}: {body}");
    }

    assert_same(&before, s.data_dir(), "impossible keys");
    assert_eq!(real.metadata().unwrap().modified().unwrap(), real_mtime, "real.zip untouched");
    assert_eq!(std::fs::read(s.data_dir().join("victim.zip")).unwrap(), victim);
    assert_eq!(keys(&p, &su).await, ["real.zip"]);
    wait_not_busy(&p, &su).await;
    p.assert_no_leaks();
    s.stop().await;
}

#[tokio::test]
async fn create_names_and_upload_names() {
    let s = TestServer::start().await;
    let p = Probe::new(&s);
    let su = s.superuser_token().await;
    let create = |name: Value| {
        let what = format!("create {}", name.to_string().chars().take(60).collect::<String>());
        let req = s.client.post(s.url("/api/backups")).header("Authorization", &su).json(&json!({"name": name}));
        let p = &p;
        async move { p.send(&what, req).await }
    };
    assert_eq!(create(json!("taken.zip")).await.0, 204);
    let before = snapshot(s.data_dir());

    let exactly_150 = format!("{}.zip", "a".repeat(146));
    let cases: Vec<(String, &str)> = vec![
        ("Bad.zip".into(), "validation_match_invalid"),
        ("a.ZIP".into(), "validation_match_invalid"),
        ("a b.zip".into(), "validation_match_invalid"),
        ("a.b.zip".into(), "validation_match_invalid"),
        (".zip".into(), "validation_match_invalid"),
        ("..zip".into(), "validation_match_invalid"),
        (".hidden.zip".into(), "validation_match_invalid"),
        ("zip".into(), "validation_match_invalid"),
        ("a.zip.tmp".into(), "validation_match_invalid"),
        ("a.zip\n".into(), "validation_match_invalid"),
        ("a\u{0}.zip".into(), "validation_match_invalid"),
        ("a\u{7f}.zip".into(), "validation_match_invalid"),
        ("../x.zip".into(), "validation_match_invalid"),
        ("..\\x.zip".into(), "validation_match_invalid"),
        ("a/b.zip".into(), "validation_match_invalid"),
        ("/abs.zip".into(), "validation_match_invalid"),
        ("a%2Fb.zip".into(), "validation_match_invalid"),
        ("é.zip".into(), "validation_match_invalid"),
        ("ａ.zip".into(), "validation_match_invalid"),
        ("taken.zip".into(), "validation_backup_name_exists"),
        (format!("a{exactly_150}"), "validation_length_out_of_range"),
        (format!("{}.zip", "é".repeat(147)), "validation_length_out_of_range"),
        
    ];
    for (name, code) in &cases {
        let (status, body) = create(json!(name)).await;
        assert_eq!(status, 400, "{name:?}: {body}");
        assert_eq!(body["message"], "创建备份失败。", "{name:?}: {body}");
        assert_eq!(body["data"]["name"]["code"], *code, "{name:?}: {body}");
    }
    // Not a string at all: refused, in the documented shape.
    for name in [json!(1), json!(["a.zip"]), json!({"a": "b"}), json!(true)] {
        let (status, _) = create(name.clone()).await;
        assert_eq!(status, 400, "{name}");
    }
    assert_same(&before, s.data_dir(), "refused creates");
    assert_eq!(keys(&p, &su).await, ["taken.zip"]);
    assert_eq!(create(json!(exactly_150)).await.0, 204, "150 characters is allowed");

    // Upload file names: the base name must be a key; a path in front is dropped.
    let zip = benign_zip();
    let long_base = format!("{}.zip", "b".repeat(147));
    let refused: Vec<(Vec<u8>, &str)> = vec![
        (b"a.txt".to_vec(), "validation_match_invalid"),
        (b"data.db".to_vec(), "validation_match_invalid"),
        (b".zip".to_vec(), "validation_match_invalid"),
        (b".hidden.zip".to_vec(), "validation_match_invalid"),
        (b"dir/.hidden.zip".to_vec(), "validation_match_invalid"),
        (b"..".to_vec(), "validation_match_invalid"),
        (b"../".to_vec(), "validation_match_invalid"),
        (b"dir/".to_vec(), "validation_match_invalid"),
        (b"a.zip/".to_vec(), "validation_match_invalid"),
        (b"a.zip\\".to_vec(), "validation_match_invalid"),
        (b"a.zip.".to_vec(), "validation_match_invalid"),
        (b"".to_vec(), "validation_match_invalid"),
        // Raw control bytes make the part header itself malformed (see `codes` below).
        (b"a\x01.zip".to_vec(), "validation_match_invalid"),
        (b"a\x7f.zip".to_vec(), "validation_match_invalid"),
        (b"a\xc2\x85.zip".to_vec(), "validation_match_invalid"),
        (b"a\tb.zip".to_vec(), "validation_match_invalid"),
        (long_base.clone().into_bytes(), "validation_length_out_of_range"),
        (b"taken.zip".to_vec(), "validation_backup_name_exists"),
        (b"../../taken.zip".to_vec(), "validation_backup_name_exists"),
    ];
    for (name, code) in &refused {
        let (status, body) = upload(&p, &su, name, &zip).await;
        let shown = String::from_utf8_lossy(name);
        assert_eq!(status, 400, "{shown:?}: {body}");
        assert_eq!(body["message"], UPLOAD_FAILED, "{shown:?}: {body}");
        // Raw control bytes make the part header itself malformed: the multipart parser may
        // refuse the body before any name is looked at (no field error, or a missing file).
        let header_broken = name.iter().any(|b| b.is_ascii_control() && *b != b'\t');
        let got = body["data"]["file"]["code"].as_str().unwrap_or_default();
        let broken_ok = got == "validation_required" || body["data"] == json!({});
        assert!(got == *code || (header_broken && broken_ok), "{shown:?}: {body}");
    }
    assert_same(&before, s.data_dir(), "refused uploads");
    // Paths in the file name are reduced to the base name, which lands in backups/.
    let accepted: [(&[u8], &str); 5] = [
        (b"../../up1.zip", "up1.zip"),
        (b"/etc/up2.zip", "up2.zip"),
        (b"..\\..\\up3.zip", "up3.zip"),
        (b"C:\\Users\\x\\..\\up4.zip", "up4.zip"),
        (b"./sub/../up5.zip", "up5.zip"),
    ];
    for (name, key) in accepted {
        assert_eq!(upload(&p, &su, name, &zip).await.0, 204, "{}", String::from_utf8_lossy(name));
        assert!(s.data_dir().join("backups").join(key).is_file(), "{key}");
    }
    let mut want = vec!["taken.zip".to_string(), exactly_150.clone()];
    want.extend((1..=5).map(|i| format!("up{i}.zip")));
    want.sort();
    assert_eq!(keys(&p, &su).await, want);
    assert_same(&before, s.data_dir(), "accepted uploads");
    p.assert_no_leaks();
    s.stop().await;
}

/// How an upload of a hostile archive must be answered.
enum OnUpload {
    /// 400 with `data.file.code` and the archive's own message.
    Refused(&'static str, Message),
    /// Stored: it is a zip and nothing in it is unsafe; only a restore can refuse it.
    Stored,
}

#[tokio::test]
async fn hostile_archives_on_upload_and_restore() {
    let s = TestServer::start().await;
    let p = Probe::new(&s);
    let su = s.superuser_token().await;
    let invalid = "validation_invalid_archive";
    let mime = "validation_invalid_mime_type";
    let mut nul_name = db();
    nul_name.name = b"a\0b".to_vec();
    let mut encrypted = db();
    encrypted.flags = 1;
    let mut bigger = db();
    bigger.declared_size = Some(4_000_000_000);
    let mut dir_with_data = entry("dir/", b"");
    dir_with_data.data = b"x".to_vec();
    let benign = benign_zip();
    let truncated = benign[..benign.len() / 2].to_vec();

    let cases: Vec<(&str, Vec<u8>, OnUpload, Message)> = vec![
        ("zip-slip", raw_zip(&[db(), entry("../evil.txt", b"x")]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("deep zip-slip", raw_zip(&[db(), entry("a/b/../../../evil.txt", b"x")]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("slip over data.db", raw_zip(&[entry("x/../data.db", &sqlite_bytes())]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("absolute path", raw_zip(&[db(), entry("/tmp/evil.txt", b"x")]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("absolute data.db", raw_zip(&[entry("/data.db", &sqlite_bytes())]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("backslash traversal", raw_zip(&[db(), entry("..\\evil.txt", b"x")]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("drive letter", raw_zip(&[db(), entry("C:/evil.txt", b"x")]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("NUL in a name", raw_zip(&[db(), nul_name]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("symlink entry", raw_zip(&[db(), with_mode(entry("link", b"/etc/passwd"), 0o120_777)]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("symlink as data.db", raw_zip(&[with_mode(entry("data.db", b"/etc/passwd"), 0o120_777)]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("symlink then a file through it", raw_zip(&[db(), with_mode(entry("storage", b"/tmp"), 0o120_777), entry("storage/x", b"x")]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("device entry", raw_zip(&[db(), with_mode(entry("dev", b""), 0o020_644)]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("fifo entry", raw_zip(&[db(), with_mode(entry("fifo", b""), 0o010_644)]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("directory with content", raw_zip(&[db(), dir_with_data]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("duplicate data.db", raw_zip(&[db(), entry("data.db", b"second")]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("duplicate file", raw_zip(&[db(), entry("a.txt", b"1"), entry("a.txt", b"2")]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("file and directory of one name", raw_zip(&[db(), entry("a", b"1"), entry("a/b", b"2")]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("overlapping entries (zip bomb)", overlapping_bomb(), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("names 2,000 folders deep", deep_names(), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("a name over 1,024 bytes", raw_zip(&[db(), entry(&vec!["n".repeat(200); 6].join("/"), b"x")]), OnUpload::Refused(invalid, Message::ArchiveUnsafe), Message::ArchiveUnsafe),
        ("declared size far above the data", raw_zip(&[bigger]), OnUpload::Refused(invalid, Message::ArchiveTooLarge), Message::ArchiveTooLarge),
        ("encrypted entry", raw_zip(&[encrypted]), OnUpload::Refused(invalid, Message::ArchiveCorrupt), Message::ArchiveCorrupt),
        ("not a zip", b"PK\x03\x04 this is not a zip at all".to_vec(), OnUpload::Refused(mime, Message::NotZip), Message::ArchiveCorrupt),
        ("truncated zip", truncated, OnUpload::Refused(mime, Message::NotZip), Message::ArchiveCorrupt),
        ("empty file", Vec::new(), OnUpload::Refused(mime, Message::NotZip), Message::ArchiveCorrupt),
        ("missing data.db", raw_zip(&[entry("other.txt", b"x")]), OnUpload::Stored, Message::ArchiveNoDataDb),
        ("empty zip", raw_zip(&[]), OnUpload::Stored, Message::ArchiveNoDataDb),
        ("data.db only nested", raw_zip(&[entry("sub/data.db", &sqlite_bytes())]), OnUpload::Stored, Message::ArchiveNoDataDb),
        ("data.db a directory", raw_zip(&[entry("data.db/", b""), entry("data.db/x", &sqlite_bytes())]), OnUpload::Stored, Message::ArchiveNoDataDb),
        ("data.db not SQLite", raw_zip(&[entry("data.db", b"just some text that is long enough")]), OnUpload::Stored, Message::ArchiveDataDbNotSqlite),
        ("data.db empty", raw_zip(&[entry("data.db", b"")]), OnUpload::Stored, Message::ArchiveDataDbNotSqlite),
        ("data.db shorter than a header", raw_zip(&[entry("data.db", b"SQLite format")]), OnUpload::Stored, Message::ArchiveDataDbNotSqlite),
    ];

    for (i, (case, bytes, on_upload, on_restore)) in cases.iter().enumerate() {
        // Upload: refused before anything is stored, or stored under its name.
        let up_key = format!("up-{i}.zip");
        let (status, body) = upload(&p, &su, up_key.as_bytes(), bytes).await;
        match on_upload {
            OnUpload::Refused(code, message) => {
                assert_eq!(status, 400, "upload {case}: {body}");
                assert_eq!(body["message"], UPLOAD_FAILED, "upload {case}: {body}");
                assert_eq!(body["data"]["file"]["code"], *code, "upload {case}: {body}");
                assert_eq!(body["data"]["file"]["message"], *message.text(Lang::Zh), "upload {case}: {body}");
                assert!(!s.data_dir().join("backups").join(&up_key).exists(), "upload {case} stored");
            }
            OnUpload::Stored => assert_eq!((status, &body), (204, &Value::Null), "upload {case}"),
        }

        // Restore: a benign backup whose file is then swapped for the hostile one, so that
        // restore's own checks are what stands in the way.
        let key = format!("swap-{i}.zip");
        assert_eq!(upload(&p, &su, key.as_bytes(), &benign).await.0, 204);
        let stored = s.data_dir().join("backups").join(&key);
        let staged = s.data_dir().join("backups").join(format!(".swap-{i}"));
        std::fs::write(&staged, bytes).unwrap();
        std::fs::rename(&staged, &stored).unwrap();
        let before = snapshot(s.data_dir());
        let what = format!("restore {case}");
        let req = s.client.post(s.url(&format!("/api/backups/{key}/restore"))).header("Authorization", &su);
        let got = p.send(&what, req).await;
        assert_eq!(got, (400, error_body(400, on_restore.text(Lang::Zh))), "{what}");
        assert_same(&before, s.data_dir(), &what);
        assert!(stored.is_file(), "{what}: the backup itself stays");
    }
    // The English message is as clear.
    let req = s.client.post(s.url("/api/backups/swap-0.zip/restore")).header("Authorization", &su).header("Accept-Language", "en");
    let got = p.send("restore zip-slip in English", req).await;
    assert_eq!(got, (400, error_body(400, Message::ArchiveUnsafe.text(Lang::En))));

    wait_not_busy(&p, &su).await;
    let temp: Vec<_> = std::fs::read_dir(s.data_dir().join(".pb_temp")).unwrap().collect();
    assert!(temp.is_empty(), "temp folder left with {temp:?}");
    p.assert_no_leaks();
    s.stop().await;
}

/// Entries a backup of the data dir would hold: every file and folder but the backups, the
/// temp folder, the names kept in place and SQLite's side files.
fn backup_entries(dir: &Path) -> usize {
    use pb_backups::layout::{BACKUPS_DIR, KEPT_IN_PLACE, TEMP_DIR};
    let skipped: Vec<&str> = [BACKUPS_DIR, TEMP_DIR].into_iter().chain(KEPT_IN_PLACE).collect();
    fn walk(dir: &Path, top: bool, skipped: &[&str]) -> usize {
        let mut n = 0;
        for child in std::fs::read_dir(dir).unwrap() {
            let child = child.unwrap();
            let name = child.file_name().into_string().unwrap();
            if (top && skipped.contains(&name.as_str())) || ["-wal", "-shm", "-journal"].iter().any(|s| name.ends_with(s)) {
                continue;
            }
            n += 1;
            if child.file_type().unwrap().is_dir() {
                n += walk(&child.path(), false, skipped);
            }
        }
        n
    }
    walk(dir, true, &skipped)
}

/// Limits are symmetric: a create of a data dir past the entry cap is refused up front (it
/// would make a backup that neither upload nor restore takes), one at the cap makes a
/// backup that upload takes back, and an archive past the cap is refused on upload and on
/// restore as "too many entries", with the count and the cap.
#[tokio::test]
async fn the_entry_cap_holds_for_create_upload_and_restore_alike() {
    const CAP: usize = 40;
    let limits = pb_backups::archive::ArchiveLimits { max_entries: CAP, ..Default::default() };
    let s = TestServer::start_with(Options { limits: Some(limits), ..Default::default() }).await;
    let p = Probe::new(&s);
    let su = s.superuser_token().await;
    let files = s.data_dir().join("storage/files");
    std::fs::create_dir_all(&files).unwrap();
    let mut i = 0;
    while backup_entries(s.data_dir()) < CAP {
        std::fs::write(files.join(format!("{i}.txt")), b"x").unwrap();
        i += 1;
    }
    assert_eq!(backup_entries(s.data_dir()), CAP);

    // At the cap: made, and taken back by an upload.
    let create = |name: &'static str| s.client.post(s.url("/api/backups")).header("Authorization", &su).json(&json!({ "name": name }));
    assert_eq!(p.send("create at the cap", create("at-cap.zip")).await, (204, Value::Null));
    let made = std::fs::read(s.data_dir().join("backups/at-cap.zip")).unwrap();
    assert_eq!(upload(&p, &su, b"again.zip", &made).await, (204, Value::Null), "the backup made is taken back");

    // One past it: refused with the count and the cap, nothing stored or changed.
    std::fs::write(files.join("one-more.txt"), b"x").unwrap();
    let before = snapshot(s.data_dir());
    let got = p.send("create past the cap", create("past-cap.zip")).await;
    let msg = Message::BackupTooManyEntries { entries: CAP as u64 + 1, max: CAP as u64 };
    assert_eq!(got, (400, error_body(400, &msg.text(Lang::Zh))));
    assert!(msg.text(Lang::Zh).contains(&format!("{}", CAP + 1)) && msg.text(Lang::Zh).contains("40"));
    let en = create("past-cap.zip").header("Accept-Language", "en");
    let got = p.send("create past the cap, in English", en).await;
    assert_eq!(got, (400, error_body(400, &msg.text(Lang::En))));
    assert!(msg.text(Lang::En).contains("41 entries") && msg.text(Lang::En).contains("40"), "{}", msg.text(Lang::En));
    assert!(!s.data_dir().join("backups/past-cap.zip").exists(), "no backup made");
    assert_same(&before, s.data_dir(), "a refused create");

    // An archive past the cap, on upload and on restore.
    let names: Vec<String> = (0..CAP).map(|i| format!("f{i}")).collect();
    let mut entries = vec![db()];
    entries.extend(names.iter().map(|n| entry(n, b"x")));
    let many = raw_zip(&entries);
    let too_many = Message::ArchiveTooManyEntries { entries: CAP as u64 + 1, max: CAP as u64 };
    let (status, body) = upload(&p, &su, b"many.zip", &many).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["data"]["file"]["message"], *too_many.text(Lang::Zh), "{body}");
    assert!(!s.data_dir().join("backups/many.zip").exists());
    std::fs::write(s.data_dir().join("backups/many.zip"), &many).unwrap();
    let before = snapshot(s.data_dir());
    let req = s.client.post(s.url("/api/backups/many.zip/restore")).header("Authorization", &su).header("Accept-Language", "en");
    let got = p.send("restore past the cap", req).await;
    assert_eq!(got, (400, error_body(400, &too_many.text(Lang::En))));
    assert_same(&before, s.data_dir(), "a refused restore");
    wait_not_busy(&p, &su).await;
    p.assert_no_leaks();
    s.stop().await;
}

/// An entry that declares fewer bytes than it holds passes every check that reads only the
/// central directory, so upload stores it; restore extracts (decodes) every entry before its
/// 204, finds the lie and refuses, and the data dir must come out of it unchanged.
#[tokio::test]
async fn size_lies_found_while_extracting_change_nothing() {
    let s = TestServer::start().await;
    let p = Probe::new(&s);
    let su = s.superuser_token().await;
    let mut lying_db = db();
    lying_db.declared_size = Some(16);
    let mut lying_other = entry("storage/big.bin", &[7u8; 4096]);
    lying_other.declared_size = Some(10);
    let benign = benign_zip();
    for (i, archive) in [raw_zip(&[lying_db]), raw_zip(&[db(), lying_other])].into_iter().enumerate() {
        let key = format!("lie-{i}.zip");
        let (status, _) = upload(&p, &su, key.as_bytes(), &archive).await;
        // Either answer is safe here; what matters is what the restore does with it.
        assert!(status == 204 || status == 400, "upload lie {i}: {status}");
        if status != 204 {
            assert_eq!(upload(&p, &su, key.as_bytes(), &benign).await.0, 204);
            let stored = s.data_dir().join("backups").join(&key);
            std::fs::write(s.data_dir().join("backups/.lie"), &archive).unwrap();
            std::fs::rename(s.data_dir().join("backups/.lie"), &stored).unwrap();
        }
        let before = snapshot(s.data_dir());
        let what = format!("restore lie {i}");
        let req = s.client.post(s.url(&format!("/api/backups/{key}/restore"))).header("Authorization", &su);
        let (status, body) = p.send(&what, req).await;
        // Restore decodes every entry before its 204: the lie is refused up front.
        assert_eq!((status, &body), (400, &error_body(400, Message::ArchiveCorrupt.text(Lang::Zh))), "{what}");
        wait_not_busy(&p, &su).await;
        assert_same(&before, s.data_dir(), &what);
        // The accounts are the old ones: the old token still works.
        assert!(keys(&p, &su).await.contains(&key));
    }
    p.assert_no_leaks();
    s.stop().await;
}

/// Percent-encoded bytes that are not UTF-8 (overlong `/`, a lone continuation byte) still
/// make a key that can never be a backup: 404, as for any other impossible key.
#[tokio::test]
async fn keys_that_are_not_utf8_are_404() {
    let s = TestServer::start().await;
    let p = Probe::new(&s);
    let su = s.superuser_token().await;
    let ft = s.file_token(&su).await;
    std::fs::write(s.data_dir().join("victim.zip"), benign_zip()).unwrap();
    let before = snapshot(s.data_dir());
    for key in ["..%C0%AFvictim.zip", "%C0%AE%C0%AE%C0%AFvictim.zip", "%C3%28.zip", "%FF.zip", "a%ED%A0%80.zip"] {
        let what = format!("delete {key}");
        let got = p.raw(&what, "DELETE", &format!("/api/backups/{key}"), &[("Authorization", &su)]).await;
        assert_eq!(got, (404, error_body(404, NOT_FOUND)), "{what}");
        let what = format!("restore {key}");
        let got = p.raw(&what, "POST", &format!("/api/backups/{key}/restore"), &[("Authorization", &su)]).await;
        assert_eq!(got, (404, error_body(404, NOT_FOUND)), "{what}");
        let what = format!("download {key}");
        let got = p.raw(&what, "GET", &format!("/api/backups/{key}?token={ft}"), &[]).await;
        assert_eq!(got, (404, error_body(404, NOT_FOUND)), "{what}");
    }
    assert_same(&before, s.data_dir(), "non-UTF-8 keys");
    p.assert_no_leaks();
    s.stop().await;
}

/// A create name of any length over 150 is the documented length error on `name`, not a
/// generic refusal of the body.
#[tokio::test]
async fn very_long_create_names_are_a_length_error() {
    let s = TestServer::start().await;
    let p = Probe::new(&s);
    let su = s.superuser_token().await;
    for len in [151, 1024, 1025, 5000] {
        let name = format!("{}.zip", "a".repeat(len - 4));
        let req = s.client.post(s.url("/api/backups")).header("Authorization", &su).json(&json!({"name": name}));
        let (status, body) = p.send(&format!("create a name of {len}"), req).await;
        assert_eq!(status, 400, "{len}: {body}");
        assert_eq!(body["message"], "创建备份失败。", "{len}: {body}");
        assert_eq!(body["data"]["name"]["code"], "validation_length_out_of_range", "{len}: {body}");
    }
    assert!(keys(&p, &su).await.is_empty());
    p.assert_no_leaks();
    s.stop().await;
}

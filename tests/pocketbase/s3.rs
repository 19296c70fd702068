//! Backups in S3 configured the PocketBase way (the settings row's `backups.s3`), against the
//! real PocketBase 0.40.6 and moto: a bucket PocketBase was set to through its own API is the
//! one this server lists, restores from and creates in on the same data dir, and PocketBase
//! lists ours afterwards; the settings API (the served section without its secret, the PATCH's
//! validation, `POST /api/settings/test/s3`) answers with PocketBase's statuses and field
//! codes, asked the same things side by side.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use super::support::s3::{moto, moto_refusing_keys, new_bucket, object_names, raw};
use super::support::{seed_accounts, sorted_keys, BinaryServer, SUPERUSER, USER};
use super::{create_backup, download, login, login_eventually, pocketbase_bin, zip_files, PocketBase, PB_SUPERUSER, PB_USER};

/// `backups.s3` (or `s3`) on, for `bucket` at `endpoint` with moto's keys.
fn s3_on(endpoint: &str, bucket: &str) -> Value {
    json!({"enabled": true, "bucket": bucket, "region": "us-east-1", "endpoint": endpoint,
           "accessKey": "test", "secret": "test", "forcePathStyle": true})
}

/// Status and JSON body (Null when empty) of a request with `token`.
async fn call(method: reqwest::Method, url: String, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut r = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        r = r.header("Authorization", token);
    }
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn patch(base: &str, token: &str, body: Value) -> (u16, Value) {
    call(reqwest::Method::PATCH, format!("{base}/api/settings"), Some(token), Some(body)).await
}

async fn test_s3(base: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    call(reqwest::Method::POST, format!("{base}/api/settings/test/s3"), token, Some(body)).await
}

async fn listed(base: &str, token: &str) -> Vec<String> {
    let (status, body) = call(reqwest::Method::GET, format!("{base}/api/backups"), Some(token), None).await;
    assert_eq!(status, 200, "list at {base}: {body}");
    sorted_keys(&body)
}

/// The validation codes of an error body, by the path of their field: `backups.s3.bucket`.
fn codes(body: &Value) -> BTreeMap<String, String> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
        let Some(fields) = value.as_object() else { return };
        if let Some(code) = fields.get("code").and_then(Value::as_str) {
            out.insert(prefix.to_string(), code.to_string());
            return;
        }
        for (name, inner) in fields {
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            walk(&path, inner, out);
        }
    }
    let mut out = BTreeMap::new();
    walk("", &body["data"], &mut out);
    out
}

/// The backups in a data dir's own folder.
fn local_backups(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("backups"))
        .map(|entries| entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bucket_pocketbase_was_configured_with_is_this_server_s_and_back() {
    let bin = pocketbase_bin("0.40.6");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    let bucket = new_bucket(moto()).await;
    let store = raw(moto(), &bucket);

    // PocketBase, set to the bucket through its own API, makes a backup there.
    PocketBase::superuser_upsert(&bin, &dir, PB_SUPERUSER);
    let pb = PocketBase::start(&bin, &dir).await;
    let su = login(&pb.base, "_superusers", PB_SUPERUSER).await;
    let (status, body) = patch(&pb.base, &su, json!({"backups": {"s3": s3_on(moto(), &bucket)}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(test_s3(&pb.base, Some(&su), json!({"filesystem": "backups"})).await.0, 204);
    create_backup(&pb.base, &su, "from_pocketbase.zip").await;
    assert_eq!(object_names(&store).await, ["from_pocketbase.zip"]);
    pb.stop();

    // This server on the same data dir, no S3 flag given: the same bucket.
    let ours = BinaryServer::start(&dir);
    let su = login(&ours.base, "_superusers", PB_SUPERUSER).await;
    assert_eq!(listed(&ours.base, &su).await, ["from_pocketbase.zip"]);
    create_backup(&ours.base, &su, "from_ours.zip").await;
    assert_eq!(object_names(&store).await, ["from_ours.zip", "from_pocketbase.zip"]);
    assert_eq!(local_backups(&dir), Vec::<String>::new(), "nothing in the local folder");

    // Off and on again without a restart; the secret left out is kept.
    let (status, body) = patch(&ours.base, &su, json!({"backups": {"s3": {"enabled": false}}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(listed(&ours.base, &su).await, Vec::<String>::new(), "the local folder, at once");
    create_backup(&ours.base, &su, "local_one.zip").await;
    assert_eq!(local_backups(&dir), ["local_one.zip"]);
    let (status, body) = patch(&ours.base, &su, json!({"backups": {"s3": {"enabled": true}}})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["backups"]["s3"].get("secret").is_none(), "{body}");
    assert_eq!(listed(&ours.base, &su).await, ["from_ours.zip", "from_pocketbase.zip"]);
    assert_eq!(test_s3(&ours.base, Some(&su), json!({"filesystem": "backups"})).await.0, 204, "the kept secret works");
    let pid = ours.pid();

    // PocketBase's backup restores here from the bucket; its settings (S3 on) come with it.
    let (status, body) = call(reqwest::Method::POST, format!("{}/api/backups/from_pocketbase.zip/restore", ours.base), Some(&su), None).await;
    assert_eq!(status, 204, "{body}");
    let su = login_eventually(&ours.base, "_superusers", PB_SUPERUSER).await;
    assert_eq!(listed(&ours.base, &su).await, ["from_ours.zip", "from_pocketbase.zip"]);
    assert_eq!(local_backups(&dir), ["local_one.zip"], "the folder is kept by a restore");
    assert_eq!(ours.pid(), pid);
    drop(ours);

    // PocketBase again: it lists ours from the bucket, and serves it.
    let pb = PocketBase::start(&bin, &dir).await;
    let su = login(&pb.base, "_superusers", PB_SUPERUSER).await;
    assert_eq!(listed(&pb.base, &su).await, ["from_ours.zip", "from_pocketbase.zip"]);
    let ours_zip = zip_files(&download(&pb.base, &su, "from_ours.zip").await);
    assert!(ours_zip.contains_key("data.db"), "{:?}", ours_zip.keys());
    pb.stop();
}

/// What one server answers to the same S3 settings requests; every answer's status and
/// field codes, labelled.
async fn s3_settings_answers(base: &str, su: &str, user: &str, bucket: &str) -> Vec<(String, u16, BTreeMap<String, String>)> {
    let mut answers = Vec::new();
    let mut note = |label: &str, (status, body): (u16, Value)| answers.push((label.to_string(), status, codes(&body)));
    let backups = |s3: Value| json!({"backups": {"s3": s3}});
    let (status, settings) = call(reqwest::Method::GET, format!("{base}/api/settings"), Some(su), None).await;
    assert_eq!(status, 200);
    for section in [&settings["backups"]["s3"], &settings["s3"]] {
        let mut fields: Vec<&String> = section.as_object().unwrap().keys().collect();
        fields.sort();
        assert_eq!(fields, ["accessKey", "bucket", "enabled", "endpoint", "forcePathStyle", "region"], "at {base}");
    }

    note("enabled, nothing else", patch(base, su, backups(json!({"enabled": true}))).await);
    let mut no_bucket = s3_on(moto(), "");
    no_bucket["bucket"] = json!("");
    note("enabled, empty bucket", patch(base, su, backups(no_bucket)).await);
    note("file storage endpoint not a URL", patch(base, su, json!({"s3": {"endpoint": "not a url"}})).await);
    note("off, endpoint not a URL", patch(base, su, backups(json!({"endpoint": "http://x y"}))).await);
    note("test: not enabled", test_s3(base, Some(su), json!({"filesystem": "backups"})).await);
    note("test: other filesystem", test_s3(base, Some(su), json!({"filesystem": "other"})).await);
    note("test: no filesystem", test_s3(base, Some(su), json!({})).await);
    note("test: a user", test_s3(base, Some(user), json!({"filesystem": "backups"})).await);
    note("test: no token", test_s3(base, None, json!({"filesystem": "backups"})).await);

    let (status, body) = patch(base, su, backups(s3_on(moto(), bucket))).await;
    assert!(body["backups"]["s3"].get("secret").is_none(), "the secret is not served by {base}: {body}");
    note("on", (status, body));
    let (status, body) = call(reqwest::Method::GET, format!("{base}/api/settings"), Some(su), None).await;
    assert_eq!((status, &body["backups"]["s3"]["bucket"]), (200, &json!(bucket)));
    assert!(body["backups"]["s3"].get("secret").is_none(), "{body}");
    note("test: on", test_s3(base, Some(su), json!({"filesystem": "backups"})).await);
    note("no such bucket", patch(base, su, backups(json!({"bucket": "never-created"}))).await);
    note("test: no such bucket", test_s3(base, Some(su), json!({"filesystem": "backups"})).await);
    let refused = json!({"bucket": bucket, "endpoint": moto_refusing_keys()});
    note("keys refused", patch(base, su, backups(refused)).await);
    note("test: keys refused", test_s3(base, Some(su), json!({"filesystem": "backups"})).await);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    note("unreachable", patch(base, su, backups(json!({"endpoint": format!("http://127.0.0.1:{port}")}))).await);
    note("test: unreachable", test_s3(base, Some(su), json!({"filesystem": "backups"})).await);
    note("back, secret left out", patch(base, su, backups(json!({"endpoint": moto()}))).await);
    note("test: the kept secret", test_s3(base, Some(su), json!({"filesystem": "backups"})).await);
    note("test: file storage off", test_s3(base, Some(su), json!({"filesystem": "storage"})).await);
    note("file storage on", patch(base, su, json!({"s3": s3_on(moto(), bucket)})).await);
    note("test: file storage on", test_s3(base, Some(su), json!({"filesystem": "storage"})).await);
    answers
}

#[tokio::test(flavor = "multi_thread")]
async fn the_s3_settings_answer_as_pocketbase_s_do() {
    let bin = pocketbase_bin("0.40.6");
    let root = tempfile::tempdir().unwrap();
    let bucket = new_bucket(moto()).await;

    let pb_dir = root.path().join("pb").join("pb_data");
    PocketBase::superuser_upsert(&bin, &pb_dir, PB_SUPERUSER);
    let pb = PocketBase::start(&bin, &pb_dir).await;
    let su = login(&pb.base, "_superusers", PB_SUPERUSER).await;
    let (status, body) = call(
        reqwest::Method::POST,
        format!("{}/api/collections/users/records", pb.base),
        Some(&su),
        Some(json!({"email": PB_USER.0, "password": PB_USER.1, "passwordConfirm": PB_USER.1})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let user = login(&pb.base, "users", PB_USER).await;
    let theirs = s3_settings_answers(&pb.base, &su, &user, &bucket).await;
    pb.stop();

    let ours_dir = root.path().join("ours").join("pb_data");
    seed_accounts(&ours_dir);
    let ours = BinaryServer::start(&ours_dir);
    let su = login(&ours.base, "_superusers", SUPERUSER).await;
    let user = login(&ours.base, "users", USER).await;
    let mine = s3_settings_answers(&ours.base, &su, &user, &bucket).await;

    for (theirs, mine) in theirs.iter().zip(&mine) {
        assert_eq!(mine, theirs, "PocketBase answered {theirs:?}");
    }
    assert_eq!(mine.len(), theirs.len());
    // What they agree on, as measured (the case first).
    let answer = |label: &str| mine.iter().find(|a| a.0 == label).map(|a| (a.1, a.2.clone())).unwrap();
    let code = |field: &str, code: &str| BTreeMap::from([(field.to_string(), code.to_string())]);
    assert_eq!(answer("enabled, empty bucket"), (400, code("backups.s3.bucket", "validation_required")));
    assert_eq!(answer("enabled, nothing else").1.len(), 5);
    assert_eq!(answer("file storage endpoint not a URL"), (400, code("s3.endpoint", "validation_is_url")));
    assert_eq!(answer("test: other filesystem"), (400, code("filesystem", "validation_in_invalid")));
    assert_eq!(answer("test: no filesystem"), (400, code("filesystem", "validation_required")));
    assert_eq!((answer("test: a user").0, answer("test: no token").0), (403, 401));
    for ok in ["test: on", "test: the kept secret", "test: file storage on"] {
        assert_eq!(answer(ok), (204, BTreeMap::new()), "{ok}");
    }
    for refused in ["test: not enabled", "test: no such bucket", "test: keys refused", "test: unreachable", "test: file storage off"] {
        assert_eq!(answer(refused), (400, BTreeMap::new()), "{refused}");
    }
    // The test objects are gone from the bucket.
    assert_eq!(object_names(&raw(moto(), &bucket)).await, Vec::<String>::new());
}

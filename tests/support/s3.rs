//! S3 for tests: a moto server on 127.0.0.1 (started once per test process by
//! `scripts/s3-test-server`, which installs it on first use), fresh buckets, server configs,
//! and direct access to a bucket behind the server's back.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore, ObjectStoreExt};
use pb_backups::storage::s3::S3Config;

/// Whether `PB_TEST_BACKEND` asks for backups on S3 (`s3`) rather than the data dir
/// (unset, empty or `local`).
pub fn selected() -> bool {
    match std::env::var("PB_TEST_BACKEND").unwrap_or_default().as_str() {
        "" | "local" => false,
        "s3" => true,
        other => panic!("PB_TEST_BACKEND={other}: expected local or s3"),
    }
}

/// The moto endpoint, started on first use and killed when this test process exits.
pub fn moto() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| start_moto(&[]))
}

/// A second moto that checks signatures: every key is unknown to it, so each request is
/// refused (403 `InvalidAccessKeyId`), as a store refuses wrong keys.
pub fn moto_refusing_keys() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| start_moto(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]))
}

fn start_moto(env: &[(&'static str, &'static str)]) -> String {
    let env = env.to_vec();
    let (tx, rx) = std::sync::mpsc::channel();
    // The server is tied to this thread (PDEATHSIG), which lives as long as the process.
    std::thread::spawn(move || {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/s3-test-server");
        let mut cmd = Command::new(script);
        cmd.envs(env).stdout(Stdio::piped()).stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("scripts/s3-test-server (needs python3)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let _ = tx.send(line.trim().strip_prefix("endpoint ").map(str::to_string));
        let _ = child.wait();
    });
    // The first run installs moto into .venv-moto (about a minute).
    let endpoint = rx.recv_timeout(Duration::from_secs(300)).ok().flatten().expect("the S3 server's endpoint");
    let addr = endpoint.trim_start_matches("http://").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "the S3 server did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    endpoint
}

/// A new empty bucket; object_store never creates buckets.
pub async fn new_bucket(endpoint: &str) -> String {
    let name = format!("t-{}", pb_backups::util::random_suffix().to_lowercase());
    let r = reqwest::Client::new().put(format!("{endpoint}/{name}")).send().await.unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    name
}

/// Empties the bucket and deletes it, so that the server can no longer load its backups.
pub async fn remove_bucket(endpoint: &str, bucket: &str) {
    let store = raw(endpoint, bucket);
    for name in object_names(&store).await {
        store.delete(&object_store::path::Path::parse(name).unwrap()).await.unwrap();
    }
    let r = reqwest::Client::new().delete(format!("{endpoint}/{bucket}")).send().await.unwrap();
    assert!(r.status().is_success(), "delete bucket: {}", r.status());
}

/// The server's storage config for `bucket` on `endpoint`, under `prefix`.
pub fn config(endpoint: &str, bucket: &str, prefix: &str) -> S3Config {
    let mut c = S3Config::new(bucket);
    c.endpoint = Some(endpoint.to_string());
    c.path_style = true;
    c.prefix = prefix.to_string();
    c.access_key = Some("test".into());
    c.secret_key = Some("test".into());
    c
}

/// Direct access to the bucket, to look behind the server's back.
pub fn raw(endpoint: &str, bucket: &str) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_allow_http(true)
        .build()
        .unwrap()
}

/// Every object in the bucket, sorted.
pub async fn object_names(store: &AmazonS3) -> Vec<String> {
    use futures_util::TryStreamExt;
    let all: Vec<_> = store.list(None).try_collect().await.unwrap();
    let mut names: Vec<String> = all.into_iter().map(|m| m.location.to_string()).collect();
    names.sort();
    names
}

/// The keys of the bucket's multipart uploads in progress (neither completed nor aborted).
pub async fn multipart_uploads(endpoint: &str, bucket: &str) -> Vec<String> {
    let r = reqwest::Client::new().get(format!("{endpoint}/{bucket}?uploads")).send().await.unwrap();
    assert!(r.status().is_success(), "list multipart uploads: {}", r.status());
    let xml = r.text().await.unwrap();
    xml.split("<Upload>")
        .skip(1)
        .filter_map(|upload| upload.split_once("<Key>")?.1.split_once("</Key>").map(|(key, _)| key.to_string()))
        .collect()
}

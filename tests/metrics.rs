//! `serve --metrics`: `/metrics` parsed with a Prometheus text parser, counters at 0 from the
//! start and counting, busy refusals apart from errors; off by default; `--log-format json`
//! writes one JSON object per line; long creates and restores log their progress.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use support::*;

/// The binary serving `dir` on port 0 with `args`; its address, read from its banner.
struct Served {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Served {
    fn start(dir: &Path, args: &[&str]) -> Served {
        let log = dir.with_extension("log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_pb-backups"))
            .args(["serve", "--http", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(url) = line.trim().strip_prefix("REST API:") {
                    let _ = tx.send(url.trim().trim_end_matches("/api/").to_string());
                }
            }
        });
        let base = rx.recv_timeout(Duration::from_secs(30)).expect("the server printed its address");
        Served { child, base, log }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every sample of the scrape, keyed `name{label="value",...}` (labels sorted).
async fn scrape(client: &reqwest::Client, base: &str) -> BTreeMap<String, f64> {
    let r = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    assert!(!scrape.samples.is_empty(), "{text}");
    scrape
        .samples
        .iter()
        .map(|s| {
            let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(ref buckets) => buckets.last().map_or(0.0, |b| b.count),
                prometheus_parse::Value::Summary(_) => f64::NAN,
            };
            (format!("{}{{{}}}", s.metric, labels.join(",")), value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_operations_sizes_and_stored_backups() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let server = Served::start(&dir, &["--metrics", "--log-format", "json"]);
    let client = reqwest::Client::new();

    let before = scrape(&client, &server.base).await;
    for kind in ["list", "create", "upload", "download", "delete", "restore", "scheduled_create"] {
        for result in ["success", "busy", "error"] {
            let name = format!("pb_backups_operations_total{{kind={kind:?},result={result:?}}}");
            assert_eq!(before.get(&name), Some(&0.0), "{name} exists at 0 from the start");
        }
    }
    assert_eq!(before.get("pb_backups_stored_backups{}"), Some(&0.0));
    assert_eq!(before.get("pb_backups_last_scheduled_success_timestamp_seconds{}"), Some(&0.0));
    assert_eq!(before.get("pb_backups_restores_completed_total{}"), Some(&0.0));

    let token = login(&client, &server.base, "_superusers", SUPERUSER.0, SUPERUSER.1).await;
    let r = client.post(format!("{}/api/backups", server.base)).header("Authorization", &token).json(&json!({"name": "m.zip"}));
    assert_eq!(r.send().await.unwrap().status(), 204);
    let r = client.post(format!("{}/api/backups", server.base)).header("Authorization", &token).json(&json!({"name": "m.zip"}));
    assert_eq!(r.send().await.unwrap().status(), 400);
    let r = client.get(format!("{}/api/backups", server.base)).header("Authorization", &token);
    assert_eq!(r.send().await.unwrap().status(), 200);

    let after = scrape(&client, &server.base).await;
    assert_eq!(after[r#"pb_backups_operations_total{kind="create",result="success"}"#], 1.0);
    assert_eq!(after[r#"pb_backups_operations_total{kind="create",result="error"}"#], 1.0);
    assert_eq!(after[r#"pb_backups_operations_total{kind="list",result="success"}"#], 1.0);
    assert_eq!(after["pb_backups_stored_backups{}"], 1.0);
    let size = std::fs::metadata(dir.join("backups").join("m.zip")).unwrap().len() as f64;
    assert_eq!(after["pb_backups_stored_backups_size_bytes{}"], size);
    assert_eq!(after["pb_backups_archive_size_bytes_count{}"], 1.0);
    assert_eq!(after["pb_backups_archive_size_bytes_sum{}"], size);
    assert_eq!(after[r#"pb_backups_operation_duration_seconds_count{kind="create"}"#], 2.0);

    // One JSON object per log line.
    let log = server.log.clone();
    drop(server);
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.lines().count() > 3, "{log}");
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(log.contains(r#""message":"backup created""#), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_off_by_default() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let server = Served::start(&dir, &[]);
    let r = reqwest::Client::new().get(format!("{}/metrics", server.base)).send().await.unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!((status, body["status"].clone()), (404, json!(404)));
    // Text logs, not JSON.
    let log = server.log.clone();
    drop(server);
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.lines().any(|l| l.contains("INFO")) && log.lines().all(|l| serde_json::from_str::<Value>(l).is_err()), "{log}");
}

/// A request refused because a create runs counts as busy, not as an error. In-process, so a
/// gate can hold the create (the other tests here run the binary: enabling metrics in this
/// process does not touch them).
#[tokio::test(flavor = "multi_thread")]
async fn busy_refusals_count_as_busy() {
    capture_logs();
    pb_backups::metrics::enable();
    let gate = gate::Gate::new();
    let server = TestServer::start_with(Options { create_gate: Some(gate.hook()), ..Default::default() }).await;
    let token = server.superuser_token().await;
    let before = scrape(&server.client, &server.base).await;

    gate.hold_next();
    let held = tokio::spawn({
        let request = server.client.post(server.url("/api/backups")).header("Authorization", &token);
        async move { request.json(&json!({"name": "held.zip"})).send().await.unwrap().status().as_u16() }
    });
    gate.held().await;
    let (status, body) = create(&server, &token, json!({"name": "second.zip"})).await;
    assert_eq!(status, 400, "{body}");
    let r = server.client.delete(server.url("/api/backups/held.zip")).header("Authorization", &token).send().await.unwrap();
    assert_eq!(r.status(), 400, "a delete of the key being created is refused as busy");
    let after = scrape(&server.client, &server.base).await;
    gate.release();
    assert_eq!(held.await.unwrap(), 204);

    let counted = |kind: &str, result: &str| {
        let name = format!("pb_backups_operations_total{{kind={kind:?},result={result:?}}}");
        after[&name] - before[&name]
    };
    assert_eq!(counted("create", "busy"), 1.0);
    assert_eq!(counted("create", "error"), 0.0);
    assert_eq!(counted("delete", "busy"), 1.0);
    assert_eq!(counted("delete", "error"), 0.0);
    // Any other refusal is still an error.
    let (status, _) = create(&server, &token, json!({"name": "held.zip"})).await;
    assert_eq!(status, 400, "the name is taken");
    let last = scrape(&server.client, &server.base).await;
    let name = r#"pb_backups_operations_total{kind="create",result="error"}"#;
    assert_eq!(last[name] - before[name], 1.0);
    server.stop().await;
}

/// This process's log lines as JSON, for the in-process tests to read their server's from.
static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct Captured;

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logs of this process go to [`LOGS`] (as the server's `--log-format json` writes them)
/// and to the test output. Called by every in-process test here before its server starts,
/// so this is the subscriber, not the one `TestServer` would set.
fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("info"))
            .with(tracing_subscriber::fmt::layer().json().with_writer(|| Captured))
            .with(tracing_subscriber::fmt::layer().with_test_writer())
            .init();
    });
}

/// The progress lines logged so far for `what` ("create", "restore") of `backup`.
fn progress_lines(what: &str, backup: &str) -> Vec<Value> {
    let logs = LOGS.lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .filter(|v| v["fields"]["message"] == "progress" && v["fields"]["what"] == what && v["fields"]["backup"] == backup)
        .map(|v| v["fields"].clone())
        .collect()
}

/// The server logs the progress of a create and of a restore at its interval, as fields
/// with bytes done of the total, rate and time left; the totals are the planned files' size
/// and the archive's uncompressed size. Each is held at its gate once its bytes are done,
/// until two more lines are logged: however fast the machine, the lines come, and the last
/// says all is done.
#[tokio::test(flavor = "multi_thread")]
async fn long_creates_and_restores_log_their_progress() {
    capture_logs();
    let (create_gate, restore_gate) = (gate::Gate::new(), gate::Gate::new());
    let server = TestServer::start_with(Options {
        create_gate: Some(create_gate.hook()),
        restore_gate: Some(restore_gate.hook()),
        progress_every: Some(Duration::from_millis(5)),
        ..Default::default()
    })
    .await;
    // Random bytes (stored) and text (deflated).
    let storage = server.data_dir().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    std::fs::write(storage.join("random.bin"), random_bytes(&mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(11), 4 << 20)).unwrap();
    let text: String = (0..100_000u32).map(|i| format!("{{\"id\":{i},\"note\":\"line {}\"}}\n", i % 977)).collect();
    std::fs::write(storage.join("text.jsonl"), text).unwrap();
    let token = server.superuser_token().await;
    let planned = planned_bytes(server.data_dir(), true);

    // Sends `request` with `gate` holding its work once done, waits for two more progress
    // lines of `what`, lets it go and expects its 204.
    let held_until_two_lines = |gate: std::sync::Arc<gate::Gate>, what: &'static str, request: reqwest::RequestBuilder| async move {
        gate.hold_next();
        let sent = tokio::spawn(request.send());
        tokio::time::timeout(Duration::from_secs(60), gate.held()).await.expect("the work reaches its gate");
        let seen = progress_lines(what, "p.zip").len();
        eventually(Duration::from_secs(30), "two progress lines while held", || async {
            (progress_lines(what, "p.zip").len() >= seen + 2).then_some(())
        })
        .await;
        gate.release();
        assert_eq!(sent.await.unwrap().unwrap().status(), 204, "{what}");
    };
    let create = server.client.post(server.url("/api/backups")).header("Authorization", &token).json(&json!({"name": "p.zip"}));
    held_until_two_lines(create_gate.clone(), "create", create).await;
    let archive = std::fs::File::open(server.data_dir().join("backups/p.zip")).unwrap();
    let mut archive = zip::ZipArchive::new(archive).unwrap();
    let uncompressed: u64 = (0..archive.len()).map(|i| archive.by_index(i).unwrap().size()).sum();
    let restore = server.client.post(server.url("/api/backups/p.zip/restore")).header("Authorization", &token);
    held_until_two_lines(restore_gate.clone(), "restore", restore).await;

    for (what, total) in [("create", planned), ("restore", uncompressed)] {
        let lines = progress_lines(what, "p.zip");
        let mut last_done = 0;
        for f in &lines {
            let field = |name: &str| f[name].as_u64().unwrap_or_else(|| panic!("{name} in {f}"));
            assert_eq!(field("total"), total, "{what}: {f}");
            let done = field("done");
            assert!(last_done <= done && done <= total, "{what}: {f}");
            assert_eq!(field("percent"), done * 100 / total, "{f}");
            field("bytes_per_second");
            if done > 0 {
                field("eta_seconds");
            }
            last_done = done;
        }
        // The last was logged while the work was held, its bytes all done.
        let last = lines.last().unwrap();
        assert!(last["done"].as_u64() == Some(total) && total > 0, "{what}: the last line says all is done: {last}");
        assert_eq!(last["eta_seconds"], 0, "{what}: {last}");
    }
    server.stop().await;
}

/// Bytes a create plans to archive from `dir`: its files, less the backups, the temp folder,
/// the lock and SQLite's side files.
fn planned_bytes(dir: &Path, top: bool) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let excluded = top && ["backups", ".pb_temp", ".pb_backups.lock"].contains(&name.as_str());
            let side_file = ["-wal", "-shm", "-journal"].iter().any(|s| name.ends_with(s));
            !(excluded || side_file)
        })
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() { planned_bytes(&e.path(), false) } else { meta.len() }
        })
        .sum()
}

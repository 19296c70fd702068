//! Test support: servers on port 0 (in-process or the real binary), accounts, HTTP helpers.
//!
//! Every integration test binary includes this with `mod support;`; not every binary uses
//! every helper.
#![allow(dead_code)]

pub mod gate;
pub mod s3;
pub mod smtp;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pb_backups::accounts::Collection;
use pb_backups::i18n::Lang;
use pb_backups::server::{self, RestartMode, ServeConfig};
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub const SUPERUSER: (&str, &str) = ("admin@example.com", "1234567890");
pub const USER: (&str, &str) = ("user@example.com", "0987654321");

/// Creates the test accounts in a data dir (which may not exist yet).
pub fn seed_accounts(dir: &Path) {
    let accounts = pb_backups::datadir::open(dir).expect("open data dir");
    accounts.upsert(Collection::Superusers, SUPERUSER.0, SUPERUSER.1).unwrap();
    accounts.upsert(Collection::Users, USER.0, USER.1).unwrap();
}

/// Options for an in-process server.
#[derive(Default)]
pub struct Options {
    pub lang: Option<Lang>,
    pub create_gate: Option<pb_backups::service::Gate>,
    pub restore_gate: Option<pb_backups::service::Gate>,
    /// Progress log lines this often instead of every few seconds.
    pub progress_every: Option<Duration>,
    pub login_rate: Option<pb_backups::http::ratelimit::RateLimit>,
    /// Peers trusted to name the client in forwarding headers.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Keep backups in this S3 bucket instead of the data dir (see `s3`).
    pub s3: Option<pb_backups::storage::s3::S3Config>,
    /// Where the scheduler takes its minutes from (a `ManualClock`'s source in tests).
    pub schedule_clock: Option<pb_backups::schedule::Clock>,
    /// Run on the seeded data dir before the server opens it (collections are read at open).
    pub prepare: Option<Box<dyn FnOnce(&Path) + Send>>,
    /// Archive limits other than the defaults.
    pub limits: Option<pb_backups::archive::ArchiveLimits>,
}

/// The server running inside the test process (restarts in-process after a restore).
pub struct TestServer {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> TestServer {
        // Server logs show with a failing test's output (RUST_LOG to change the level).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        let dir = tempfile::tempdir().unwrap();
        seed_accounts(dir.path());
        if let Some(prepare) = options.prepare {
            prepare(dir.path());
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut config = ServeConfig::new(dir.path());
        config.restart = RestartMode::InProcess;
        config.default_lang = options.lang.unwrap_or(Lang::Zh);
        config.create_gate = options.create_gate;
        config.restore_gate = options.restore_gate;
        if let Some(every) = options.progress_every {
            config.progress = pb_backups::progress::Display::Log { every };
        }
        if let Some(rate) = options.login_rate {
            config.login_rate = rate;
        }
        config.trusted_proxies = options.trusted_proxies;
        if let Some(limits) = options.limits {
            config.limits = limits;
        }
        if let Some(s3) = options.s3 {
            config.storage = server::StorageChoice::S3(Box::new(s3));
        }
        if let Some(clock) = options.schedule_clock {
            config.schedule_clock = clock;
        }
        config.shutdown_grace = Duration::from_secs(2);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::run(listener, config, async {
                let _ = rx.await;
            })
            .await
            .expect("server failed");
        });
        TestServer { base, dir, client: reqwest::Client::new(), shutdown: Some(tx), task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Shuts the server down; fails if the server's task panicked (`run` returned an error).
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the server ran and stopped without an error");
        }
    }

    pub async fn token(&self, collection: &str, (email, password): (&str, &str)) -> String {
        login(&self.client, &self.base, collection, email, password).await
    }

    pub async fn superuser_token(&self) -> String {
        self.token("_superusers", SUPERUSER).await
    }

    pub async fn user_token(&self) -> String {
        self.token("users", USER).await
    }

    pub async fn file_token(&self, auth: &str) -> String {
        file_token(&self.client, &self.base, auth).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn login(client: &reqwest::Client, base: &str, collection: &str, email: &str, password: &str) -> String {
    let r = client
        .post(format!("{base}/api/collections/{collection}/auth-with-password"))
        .json(&json!({"identity": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "login of {email}");
    r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

pub async fn file_token(client: &reqwest::Client, base: &str, auth: &str) -> String {
    let r = client.post(format!("{base}/api/files/token")).header("Authorization", auth).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

/// Status and JSON body (Null when empty) of a response.
/// Every error body read here is also checked for leaks (see [`assert_no_leak`]).
pub async fn status_json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())) };
    if status >= 400 {
        assert_no_leak(&body);
    }
    (status, body)
}

/// What an error body must never show: where the server keeps its files (test data dirs live
/// under the temp dir, so `/tmp` catches them) or what the OS or a library said. Those belong
/// in the log.
pub const LEAK_MARKERS: &[&str] = &[
    "/tmp",
    "/root",
    "/home",
    "/var",
    ".pb_temp",
    "os error",
    "Raw error",
    "No such file",
    "Permission denied",
    "panicked",
    "Custom {",
    "kind:",
];

pub fn assert_no_leak(body: &Value) {
    let text = body.to_string();
    for marker in LEAK_MARKERS {
        assert!(!text.contains(marker), "an error body leaks {marker:?}: {text}");
    }
}

/// The keys of a list response's body, sorted.
pub fn sorted_keys(list_body: &Value) -> Vec<String> {
    let items = list_body.as_array().unwrap_or_else(|| panic!("a list: {list_body}"));
    let mut keys: Vec<String> = items.iter().map(|b| b["key"].as_str().unwrap().to_string()).collect();
    keys.sort();
    keys
}

pub async fn list(s: &TestServer, token: &str) -> (u16, Value) {
    status_json(s.client.get(s.url("/api/backups")).header("Authorization", token).send().await.unwrap()).await
}

/// The keys of every backup listed, sorted.
pub async fn keys(s: &TestServer, token: &str) -> Vec<String> {
    let (status, body) = list(s, token).await;
    assert_eq!(status, 200, "{body}");
    sorted_keys(&body)
}

pub async fn create(s: &TestServer, token: &str, body: Value) -> (u16, Value) {
    status_json(s.client.post(s.url("/api/backups")).header("Authorization", token).json(&body).send().await.unwrap()).await
}

pub fn random_bytes(rng: &mut impl rand::RngCore, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// The documented error body.
pub fn error_body(status: u16, message: impl AsRef<str>) -> Value {
    json!({"status": status, "message": message.as_ref(), "data": {}})
}

/// A small valid zip holding `data.db` copied from the server's own data (any SQLite file).
pub fn zip_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        for (name, data) in entries {
            zip.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
    }
    buf.into_inner()
}

pub fn multipart_file(name: &str, bytes: Vec<u8>) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()).mime_str("application/zip").unwrap();
    reqwest::multipart::Form::new().part("file", part)
}

/// Polls `f` until it returns Some, failing after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real `pb-backups` binary serving a data dir on port 0 (restarts by re-exec): the one
/// way the tests start it.
pub struct BinaryServer {
    pub base: String,
    pub dir: PathBuf,
    child: Child,
    pub log: PathBuf,
    /// Every line the server prints on stdout (it prints its banner again at each restart).
    lines: std::sync::mpsc::Receiver<String>,
}

impl BinaryServer {
    pub fn start(dir: &Path) -> BinaryServer {
        Self::start_with(dir, &[])
    }

    /// With extra environment variables, as a container would configure it.
    pub fn start_with(dir: &Path, env: &[(&str, &str)]) -> BinaryServer {
        let log = dir.with_extension("log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_pb-backups"))
            .args(["serve", "--http", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start pb-backups");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        // Keep draining stdout, so a restarted server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = BinaryServer { base: String::new(), dir: dir.to_path_buf(), child, log, lines };
        let url = server.wait_for_line("REST API:", Duration::from_secs(60));
        server.base = url.trim().trim_start_matches("REST API:").trim().trim_end_matches("/api/").to_string();
        server
    }

    /// The next line printed that contains `text`; fails with the server's log after `timeout`.
    pub fn wait_for_line(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "the server never printed {text:?}:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
            }
        }
    }

    /// The process id of the server (the same across restarts: it re-executes itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the server to end by itself: its exit status, or `None` after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("the server's status") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `node ARGS` in `tests/sdk/` against `base`, with the accounts in the environment the
/// scripts there read. The official JS SDK is installed there first when missing
/// (`tests/sdk/run.sh --install-only`).
pub fn node_sdk(args: &[&str], base: &str, superuser: (&str, &str), user: (&str, &str)) -> std::process::Output {
    node_sdk_with(args, base, superuser, user, &[])
}

/// As [`node_sdk`], with more environment variables.
pub fn node_sdk_with(
    args: &[&str],
    base: &str,
    superuser: (&str, &str),
    user: (&str, &str),
    env: &[(&str, &str)],
) -> std::process::Output {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    let install = Command::new("bash").arg(sdk.join("run.sh")).arg("--install-only").output();
    let install = install.expect("bash is needed for the SDK tests");
    assert!(install.status.success(), "installing the JS SDK failed: {}", String::from_utf8_lossy(&install.stderr));
    Command::new("node")
        .args(args)
        .current_dir(&sdk)
        .env("PB_URL", base)
        .env("PB_SUPERUSER_EMAIL", superuser.0)
        .env("PB_SUPERUSER_PASSWORD", superuser.1)
        .env("PB_USER_EMAIL", user.0)
        .env("PB_USER_PASSWORD", user.1)
        .envs(env.iter().copied())
        .output()
        .expect("node is needed for the SDK tests")
}

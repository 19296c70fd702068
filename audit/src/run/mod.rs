//! The audit, in order: preflight (reachable, logins, data dir), the documented responses,
//! the exclusivity and hostile probes, the restores (when allowed), and the clean-up that
//! leaves the server with the backups it had.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pb_backups_spec::{catalog, Lang, Operation};
use serde_json::{json, Value};

use crate::datadir::DataDir;
use crate::http::{describe_error, shorten, Cred, Got, Req, Target};
use crate::judge;
use crate::report::{operation_name, Probe, Report, Row, Verdict};
use crate::{AuditError, Config, Langs};

mod probes;
mod responses;
mod restores;

/// The auditor's backups; all names start with `audit_` and sort in the order made.
const SEED: &str = "audit_a_seed.zip";
const NEWER: &str = "audit_b_newer.zip";
const REFUSED: &str = "audit_c_refused.zip";
const UPLOADED: &str = "audit_c_uploaded.zip";
const ABSENT: &str = "audit_absent.zip";
const HELD: &str = "audit_e_held.zip";
/// Why a create right after a restore's 204 passes: refused as busy, not answered while the
/// server restarted, or accepted with a backup of the restored data.
const BESIDE_PASSED: &str = "refused, or run after the restore took effect";

/// How a request asks for a language.
#[derive(Clone, Copy, Debug)]
enum Tongue {
    /// No Accept-Language: the spec's Chinese.
    Default,
    Zh,
    En,
}

impl Tongue {
    fn label(self) -> &'static str {
        match self {
            Tongue::Default => "zh (default)",
            Tongue::Zh => "zh",
            Tongue::En => "en",
        }
    }

    fn header(self) -> Option<&'static str> {
        match self {
            Tongue::Default => None,
            Tongue::Zh => Some("zh"),
            Tongue::En => Some("en"),
        }
    }

    fn lang(self) -> Lang {
        match self {
            Tongue::Default | Tongue::Zh => Lang::Zh,
            Tongue::En => Lang::En,
        }
    }

    /// A part of a backup name.
    fn slug(self) -> &'static str {
        match self {
            Tongue::Default => "default",
            Tongue::Zh => "zh",
            Tongue::En => "en",
        }
    }
}

/// A response or why there was none.
type Answer = Result<Got, reqwest::Error>;

struct Auditor {
    config: Config,
    t: Target,
    dir: Option<DataDir>,
    tongues: Vec<Tongue>,
    rows: Vec<Row>,
    probes: Vec<Probe>,
    /// Keys this audit may have made, to delete at the end.
    made: BTreeSet<String>,
    /// The keys the server held before the audit.
    found: BTreeSet<String>,
    /// Requests whose error bodies leaked something, shown.
    leaks: Arc<Mutex<Vec<String>>>,
    seed_bytes: Option<Vec<u8>>,
}

/// Runs the audit until it ends or `stop` resolves (with the signal's name); a stopped
/// audit mends the data dir before it returns.
pub async fn audit(config: &Config, stop: impl Future<Output = &'static str>) -> Result<Report, AuditError> {
    let started = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut stop = std::pin::pin!(stop);
    let connected = tokio::select! {
        connected = Auditor::connect(config) => Ok(connected?),
        signal = &mut stop => Err(signal),
    };
    let mut a = connected.map_err(|signal| AuditError::Stopped { signal, mended: Default::default() })?;
    // The checks stop at their next await: whatever they were doing to the data dir is
    // either done or not begun, and `mend` undoes all of it.
    let stopped = tokio::select! {
        result = a.everything() => Ok(result),
        signal = &mut stop => Err(signal),
    };
    let result = match stopped {
        Ok(result) => result,
        Err(signal) => {
            let mended = a.dir.as_ref().map(DataDir::mend).unwrap_or_default();
            return Err(AuditError::Stopped { signal, mended });
        }
    };
    a.clean_up().await;
    result?;
    Ok(Report {
        target: config.name.clone().unwrap_or_else(|| config.url.clone()),
        started,
        options: config.shown(),
        rows: std::mem::take(&mut a.rows),
        probes: std::mem::take(&mut a.probes),
    })
}

async fn login(http: &reqwest::Client, base: &str, collection: &str, (email, password): &(String, String)) -> Result<(u16, String), reqwest::Error> {
    let r = http
        .post(format!("{base}/api/collections/{collection}/auth-with-password"))
        .json(&json!({"identity": email, "password": password}))
        .send()
        .await?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    Ok((status, body["token"].as_str().unwrap_or_default().to_string()))
}

async fn file_token(http: &reqwest::Client, base: &str, auth: &str) -> Option<String> {
    let r = http.post(format!("{base}/api/files/token")).header("Authorization", auth).send().await.ok()?;
    let body: Value = r.json().await.ok()?;
    body["token"].as_str().map(String::from)
}

/// The innermost cause of an error: the one that says what happened (refused, no such host).
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The keys of a list answer, if it is one.
fn keys_of(got: &Answer) -> Option<BTreeSet<String>> {
    let got = got.as_ref().ok().filter(|g| g.status == 200)?;
    let items = got.json()?.as_array()?.clone();
    Some(items.iter().filter_map(|i| i["key"].as_str().map(String::from)).collect())
}

impl Auditor {
    async fn connect(config: &Config) -> Result<Auditor, AuditError> {
        let base = config.url.clone();
        let http = Target::client();
        let unreachable = |e: reqwest::Error| AuditError::Unreachable { url: base.clone(), why: root_cause(&e) };
        let health = http.get(format!("{base}/api/health")).send().await.map_err(unreachable)?;
        if health.status() != 200 {
            return Err(AuditError::NotAServer { url: base.clone(), why: format!("GET /api/health answered {}", health.status()) });
        }
        let (status, su) = login(&http, &base, "_superusers", &config.superuser).await.map_err(unreachable)?;
        if status != 200 || su.is_empty() {
            return Err(AuditError::LoginRefused { who: "superuser", status });
        }
        let (status, user) = login(&http, &base, "users", &config.user).await.map_err(unreachable)?;
        if status != 200 || user.is_empty() {
            if login(&http, &base, "_superusers", &config.user).await.is_ok_and(|(s, _)| s == 200) {
                return Err(AuditError::UserIsSuperuser);
            }
            return Err(AuditError::LoginRefused { who: "user", status });
        }
        let su_file = file_token(&http, &base, &su).await.unwrap_or_default();
        let user_file = file_token(&http, &base, &user).await.unwrap_or_default();
        let mut redactions = Vec::new();
        let dir = config.data_dir.as_ref().map(|d| DataDir { root: std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()) });
        if let Some(dir) = &dir {
            redactions.push((dir.root.to_string_lossy().into_owned(), "$DATA_DIR"));
        }
        let t = Target { base: base.clone(), http, su, user, su_file, user_file, redactions };
        let a = Auditor {
            tongues: match config.langs {
                Langs::Zh => vec![Tongue::Default, Tongue::Zh],
                Langs::En => vec![Tongue::En],
                Langs::Both => vec![Tongue::Default, Tongue::Zh, Tongue::En],
            },
            config: config.clone(),
            t,
            dir,
            rows: Vec::new(),
            probes: Vec::new(),
            made: BTreeSet::new(),
            found: BTreeSet::new(),
            leaks: Arc::new(Mutex::new(Vec::new())),
            seed_bytes: None,
        };
        let su_list = a.t.send(&Req::get("/api/backups").auth(Cred::Su)).await.map_err(unreachable)?;
        if su_list.status == 403 {
            return Err(AuditError::NotSuperuser(su_list.status));
        }
        if a.t.send(&Req::get("/api/backups").auth(Cred::User)).await.map_err(unreachable)?.status == 200 {
            return Err(AuditError::UserIsSuperuser);
        }
        Ok(a)
    }

    /// Sends a request; every error body is searched for leaks.
    async fn send(&self, req: &Req) -> Answer {
        let got = self.t.send(req).await;
        self.note_leaks(req, &got);
        got
    }

    fn note_leaks(&self, req: &Req, got: &Answer) {
        if let Ok(g) = got {
            if g.status >= 400 {
                let dir = self.dir.as_ref().map(|d| d.root.to_string_lossy().into_owned());
                let found = judge::leaks(&g.body, dir.as_deref());
                let line = format!("{} ({})", req.shown(), found.join(", "));
                let mut leaks = self.leaks.lock().expect("not poisoned");
                // Once per request: a probe may send the same one many times.
                if !found.is_empty() && !leaks.contains(&line) {
                    leaks.push(line);
                }
            }
        }
    }

    async fn list_keys(&self) -> Option<BTreeSet<String>> {
        keys_of(&self.send(&Req::get("/api/backups").auth(Cred::Su)).await)
    }

    fn progress(&self, what: &str, verdict: Verdict) {
        if self.config.progress {
            eprintln!("pb-backups audit: {what}: {}", verdict.as_str());
        }
    }

    /// Records a documented-response row: `why` holds what is wrong (empty: pass).
    fn row(&mut self, op: Operation, status: u16, lang: &'static str, req: &Req, got: &Answer, why: Vec<String>) {
        let verdict = if why.is_empty() { Verdict::Pass } else { Verdict::Fail };
        self.progress(&format!("{} {status} {lang}", operation_name(op)), verdict);
        let repro = (verdict == Verdict::Fail).then(|| req.curl());
        self.rows.push(Row {
            operation: op,
            status,
            lang,
            verdict,
            sent: req.shown(),
            got_status: got.as_ref().ok().map(|g| g.status),
            got: self.t.shown(got),
            why: self.t.redact(&why.join("; ")),
            repro,
        });
    }

    fn skip_row(&mut self, op: Operation, status: u16, lang: &'static str, why: &str) {
        self.progress(&format!("{} {status} {lang}", operation_name(op)), Verdict::Skipped);
        self.rows.push(Row {
            operation: op,
            status,
            lang,
            verdict: Verdict::Skipped,
            sent: String::new(),
            got_status: None,
            got: String::new(),
            why: why.to_string(),
            repro: None,
        });
    }

    fn probe(&mut self, name: &str, verdict: Verdict, why: impl Into<String>) {
        self.progress(name, verdict);
        let why = self.t.redact(&why.into());
        self.probes.push(Probe { name: name.to_string(), verdict, why });
    }

    fn probe_from(&mut self, name: &str, problems: Vec<String>, passed: &str) {
        if problems.is_empty() {
            self.probe(name, Verdict::Pass, passed);
        } else {
            self.probe(name, Verdict::Fail, problems.join("; "));
        }
    }

    /// What is wrong with `got` as the documented (op, status) in `lang`.
    fn differences(&self, op: Operation, status: u16, lang: Lang, got: &Answer, key: Option<&str>) -> Vec<String> {
        let doc = catalog::find(op, status).expect("a documented response");
        match got {
            Err(e) => vec![describe_error(e)],
            Ok(g) => {
                let mut why = judge::differences(doc, lang, g, key);
                let dir = self.dir.as_ref().map(|d| d.root.to_string_lossy().into_owned());
                let leaked = if g.status >= 400 { judge::leaks(&g.body, dir.as_deref()) } else { Vec::new() };
                if !leaked.is_empty() {
                    why.push(format!("the body leaks {}", leaked.join(", ")));
                }
                why
            }
        }
    }

    /// For probes: the documented status and message (in either language), the rest of the
    /// body aside, since the rows judge that.
    fn refused_as(&self, op: Operation, status: u16, got: &Answer) -> Vec<String> {
        let doc = catalog::find(op, status).expect("a documented response");
        let g = match got {
            Err(e) => return vec![describe_error(e)],
            Ok(g) => g,
        };
        if g.status != status {
            return vec![format!("got {}", self.t.shown(got))];
        }
        let message = g.json().map(|b| b["message"].clone()).unwrap_or_default();
        let known = Lang::ALL.iter().any(|&lang| doc.body(lang).is_some_and(|b| b["message"] == message));
        if known {
            Vec::new()
        } else {
            vec![format!("the message is {message} where the spec documents {:?}", doc.body(Lang::Zh).map(|b| b["message"].clone()).unwrap_or_default())]
        }
    }

    /// Sends `req` and records it as the documented (op, status) in each tongue's language.
    async fn documented(&mut self, op: Operation, status: u16, tongue: Tongue, req: Req, key: Option<&str>) {
        let req = req.lang(tongue.header());
        let got = self.send(&req).await;
        let why = self.differences(op, status, tongue.lang(), &got, key);
        self.row(op, status, tongue.label(), &req, &got, why);
    }

    async fn create(&mut self, name: &str) -> Answer {
        self.made.insert(name.to_string());
        self.send(&Req::post("/api/backups").auth(Cred::Su).json(json!({"name": name}))).await
    }

    async fn everything(&mut self) -> Result<(), AuditError> {
        self.preflight_data_dir().await?;
        self.made_and_listed().await?;
        self.refusals().await;
        self.uploads().await;
        self.not_found().await;
        self.delete_204().await;
        self.storage_failure().await;
        self.busy().await;
        self.concurrent_creates().await;
        self.bad_tokens().await;
        self.traversal().await;
        if self.config.sequences > 0 {
            self.made.extend((0..4).map(crate::sequences::key));
            let probes = crate::sequences::run(&self.t, self.config.sequences).await;
            for (name, problems) in probes {
                self.probe_from(&name, problems, "every response was the model's");
            }
        }
        self.restores().await;
        Ok(())
    }

    /// Checks the data dir is the server's before anything is written to it.
    async fn preflight_data_dir(&mut self) -> Result<(), AuditError> {
        let listed = self.list_keys().await.unwrap_or_default();
        let leftovers: Vec<&String> = listed.iter().filter(|k| k.starts_with("audit_")).collect();
        if !leftovers.is_empty() {
            return Err(AuditError::Leftovers(leftovers.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")));
        }
        self.found = listed.clone();
        let Some(dir) = &self.dir else { return Ok(()) };
        if !dir.root.join("data.db").is_file() {
            return Err(AuditError::DataDir(format!("{} holds no data.db", dir.root.display())));
        }
        let on_disk: BTreeSet<String> = dir.backup_names().into_iter().collect();
        if on_disk != listed {
            return Err(AuditError::DataDir(format!(
                "the server lists {} backups, its backups/ folder holds {} others",
                listed.len(),
                on_disk.len()
            )));
        }
        Ok(())
    }

    /// Deletes what the audit made, mends the data dir, and checks the backups are as found.
    async fn clean_up(&mut self) {
        if let Some(dir) = &self.dir {
            let mended = dir.mend();
            if !mended.failed.is_empty() {
                self.probe("the audit leaves the data dir as it found it", Verdict::Fail, mended.to_string());
            }
        }
        // The server may still be restarting.
        let deadline = Instant::now() + Duration::from_secs(30);
        let keys = loop {
            if let Some(keys) = self.list_keys().await {
                break Some(keys);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let Some(keys) = keys else {
            self.probe("the audit leaves the backups as it found them", Verdict::Fail, "the server did not list its backups at the end");
            return;
        };
        for key in keys.iter().filter(|k| self.made.contains(*k)) {
            let _ = self.send(&Req::delete(format!("/api/backups/{key}")).auth(Cred::Su)).await;
        }
        let after = self.list_keys().await.unwrap_or_default();
        let leaks = std::mem::take(&mut *self.leaks.lock().expect("not poisoned"));
        if leaks.is_empty() {
            self.probe("no server path or internal error text in any error body", Verdict::Pass, "every error body checked");
        } else {
            let shown: Vec<String> = leaks.iter().map(|l| shorten(l, 200)).collect();
            self.probe("no server path or internal error text in any error body", Verdict::Fail, shown.join("; "));
        }
        if after == self.found {
            self.probe("the audit leaves the backups as it found them", Verdict::Pass, "its own backups deleted, the others untouched");
        } else {
            let extra: Vec<&String> = after.symmetric_difference(&self.found).collect();
            self.probe("the audit leaves the backups as it found them", Verdict::Fail, format!("differs in {extra:?}"));
        }
    }
}


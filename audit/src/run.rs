//! The audit, in order: preflight (reachable, logins, data dir), the documented responses,
//! the exclusivity and hostile probes, the restores (when allowed), and the clean-up that
//! leaves the server with the backups it had.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pb_backups_spec::{catalog, Lang, Operation};
use serde_json::{json, Value};

use crate::datadir::{self, DataDir, OUTSIDE};
use crate::http::{describe_error, shorten, Cred, Got, Req, Target};
use crate::judge;
use crate::report::{operation_name, Probe, Report, Row, Verdict};
use crate::{AuditError, Config, Langs};

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

    /// create 204, list 200, download 200, and the download's Range probe.
    async fn made_and_listed(&mut self) -> Result<(), AuditError> {
        self.made.insert(SEED.into());
        let req = Req::post("/api/backups").auth(Cred::Su).json(json!({"name": SEED}));
        let got = self.send(&req).await;
        let mut why = self.differences(Operation::Create, 204, Lang::Zh, &got, None);
        let listed = self.list_keys().await.unwrap_or_default();
        if !listed.contains(SEED) {
            why.push(format!("{SEED} is not listed after the 204"));
        }
        if let Some(dir) = &self.dir {
            if listed.contains(SEED) && !dir.has_backup(SEED) {
                // The data dir given is not the one this server writes to: stop here.
                let _ = self.send(&Req::delete(format!("/api/backups/{SEED}")).auth(Cred::Su)).await;
                return Err(AuditError::DataDir(format!("{SEED} was made but is not in {}", dir.backups().display())));
            }
        }
        self.row(Operation::Create, 204, "any", &req, &got, why);

        // A second backup, newer but later by key, so that the order shows.
        let newer = self.create(NEWER).await;
        let req = Req::get("/api/backups").auth(Cred::Su);
        let got = self.send(&req).await;
        let mut why = self.differences(Operation::List, 200, Lang::Zh, &got, None);
        if !matches!(&newer, Ok(g) if g.status == 204) {
            why.push(format!("making {NEWER} answered {}", self.t.shown(&newer)));
        }
        let keys = keys_of(&got).unwrap_or_default();
        for key in [SEED, NEWER] {
            if got.as_ref().is_ok_and(|g| g.status == 200) && !keys.contains(key) {
                why.push(format!("{key} is not listed"));
            }
        }
        self.row(Operation::List, 200, "any", &req, &got, why);

        let req = Req::get(format!("/api/backups/{SEED}?token=$SUPERUSER_FILE_TOKEN"));
        let got = self.send(&req).await;
        let mut why = self.differences(Operation::Download, 200, Lang::Zh, &got, Some(SEED));
        if let Ok(g) = &got {
            if let Some(length) = g.header("content-length") {
                if length != g.body.len().to_string() {
                    why.push("Content-Length is not the size of the body".into());
                }
            }
            if let Some(stored) = self.dir.as_ref().and_then(|d| d.backup_bytes(SEED)) {
                if stored != g.body {
                    why.push("the bytes are not the stored backup's".into());
                }
            }
            if g.status == 200 && g.body.starts_with(b"PK") {
                self.seed_bytes = Some(g.body.clone());
            }
        }
        self.row(Operation::Download, 200, "any", &req, &got, why);

        let ranged = Req::get(format!("/api/backups/{SEED}?token=$SUPERUSER_FILE_TOKEN")).range("bytes=0-9");
        let got = self.send(&ranged).await;
        let mut problems = Vec::new();
        match (&got, &self.seed_bytes) {
            (Ok(g), Some(full)) if g.status == 206 => {
                let want = format!("bytes 0-9/{}", full.len());
                if g.header("content-range") != Some(want.as_str()) {
                    problems.push(format!("Content-Range {:?} where \"bytes 0-9/SIZE\" is due", g.header("content-range").unwrap_or("(none)")));
                }
                if g.body != full[..10.min(full.len())] {
                    problems.push("the 10 bytes are not the backup's first 10".into());
                }
            }
            (Ok(_), None) => problems.push("no backup could be downloaded".into()),
            _ => problems.push(format!("got {} where 206 is due", self.t.shown(&got))),
        }
        self.probe_from("download: `Range: bytes=0-9` answers 206 with those bytes (R25)", problems, "206, Content-Range and the first 10 bytes");
        Ok(())
    }

    fn a_zip(&self) -> Vec<u8> {
        self.seed_bytes.clone().unwrap_or_else(|| b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec())
    }

    /// 401 and 403 for every operation, and nothing changed by them.
    async fn refusals(&mut self) {
        let before = self.dir.as_ref().map(DataDir::snapshot);
        let zip = self.a_zip();
        for tongue in self.tongues.clone() {
            for (status, cred, file) in [(401, None, None), (403, Some(Cred::User), Some("$USER_FILE_TOKEN"))] {
                let with = |req: Req| match &cred {
                    Some(c) => req.auth(c.clone()),
                    None => req,
                };
                let name = json!({"name": REFUSED});
                self.documented(Operation::List, status, tongue, with(Req::get("/api/backups")), None).await;
                self.documented(Operation::Create, status, tongue, with(Req::post("/api/backups").json(name)), None).await;
                let upload = with(Req::post("/api/backups/upload").file(REFUSED, zip.clone(), "a backup zip made by this server"));
                self.documented(Operation::Upload, status, tongue, upload, None).await;
                self.documented(Operation::Delete, status, tongue, with(Req::delete(format!("/api/backups/{NEWER}"))), None).await;
                let restore = with(Req::post(format!("/api/backups/{ABSENT}/restore")));
                self.documented(Operation::Restore, status, tongue, restore, None).await;
                let download = match file {
                    Some(token) => Req::get(format!("/api/backups/{NEWER}?token={token}")),
                    None => Req::get(format!("/api/backups/{NEWER}")),
                };
                self.documented(Operation::Download, status, tongue, download, None).await;
            }
        }
        self.made.insert(REFUSED.into());
        let mut problems = Vec::new();
        match self.list_keys().await {
            Some(keys) => {
                if !keys.contains(NEWER) {
                    problems.push(format!("{NEWER} is gone after the refused deletes"));
                }
                if keys.contains(REFUSED) {
                    problems.push(format!("{REFUSED} exists after refused creates and uploads"));
                }
            }
            None => problems.push("the list failed after the refused requests".into()),
        }
        if let (Some(before), Some(dir)) = (before, &self.dir) {
            problems.extend(datadir::changes(&before, &dir.snapshot()));
        }
        let how = if self.dir.is_some() { "the backups and the data dir's files are unchanged" } else { "the backups are unchanged (no --data-dir: files not compared)" };
        self.probe_from("401 and 403 change nothing (R4)", problems, how);
    }

    /// upload 204 and 400.
    async fn uploads(&mut self) {
        self.made.insert(UPLOADED.into());
        let zip = self.a_zip();
        let req = Req::post("/api/backups/upload").auth(Cred::Su).file(UPLOADED, zip.clone(), "a backup zip made by this server");
        let got = self.send(&req).await;
        let mut why = self.differences(Operation::Upload, 204, Lang::Zh, &got, None);
        if !self.list_keys().await.unwrap_or_default().contains(UPLOADED) {
            why.push(format!("{UPLOADED} is not listed after the 204"));
        }
        if let Some(stored) = self.dir.as_ref().map(|d| d.backup_bytes(UPLOADED)) {
            if stored.as_deref() != Some(zip.as_slice()) {
                why.push("the stored file is not the bytes sent".into());
            }
        }
        self.row(Operation::Upload, 204, "any", &req, &got, why);

        for tongue in self.tongues.clone() {
            let name = format!("audit_d_notzip_{}.zip", tongue.slug());
            self.made.insert(name.clone());
            let req = Req::post("/api/backups/upload").auth(Cred::Su).file(&name, b"plain text, not a zip".to_vec(), "the text `plain text, not a zip`").lang(tongue.header());
            let got = self.send(&req).await;
            let mut why = self.differences(Operation::Upload, 400, tongue.lang(), &got, None);
            if self.list_keys().await.unwrap_or_default().contains(&name) {
                why.push(format!("{name} is listed after the refusal"));
            }
            self.row(Operation::Upload, 400, tongue.label(), &req, &got, why);
        }
    }

    /// 404 of delete, restore and download.
    async fn not_found(&mut self) {
        for tongue in self.tongues.clone() {
            let path = format!("/api/backups/{ABSENT}");
            self.documented(Operation::Delete, 404, tongue, Req::delete(&path).auth(Cred::Su), None).await;
            self.documented(Operation::Restore, 404, tongue, Req::post(format!("{path}/restore")).auth(Cred::Su), None).await;
            self.documented(Operation::Download, 404, tongue, Req::get(format!("{path}?token=$SUPERUSER_FILE_TOKEN")), None).await;
        }
    }

    async fn delete_204(&mut self) {
        let req = Req::delete(format!("/api/backups/{UPLOADED}")).auth(Cred::Su);
        let got = self.send(&req).await;
        let mut why = self.differences(Operation::Delete, 204, Lang::Zh, &got, None);
        if self.list_keys().await.unwrap_or_default().contains(UPLOADED) {
            why.push(format!("{UPLOADED} is still listed after the 204"));
        }
        if self.dir.as_ref().is_some_and(|d| d.has_backup(UPLOADED)) {
            why.push(format!("{UPLOADED} is still in backups/"));
        }
        self.row(Operation::Delete, 204, "any", &req, &got, why);
    }

    /// list 400 and download 400: the backups storage cannot be opened.
    async fn storage_failure(&mut self) {
        let Some(dir) = &self.dir else {
            for tongue in self.tongues.clone() {
                for op in [Operation::List, Operation::Download] {
                    self.skip_row(op, 400, tongue.label(), "needs --data-dir, to make the backups storage fail");
                }
            }
            return;
        };
        if let Err(e) = dir.break_storage() {
            let why = format!("could not break the storage: {e}");
            for tongue in self.tongues.clone() {
                for op in [Operation::List, Operation::Download] {
                    self.skip_row(op, 400, tongue.label(), &why);
                }
            }
            return;
        }
        for tongue in self.tongues.clone() {
            self.documented(Operation::List, 400, tongue, Req::get("/api/backups").auth(Cred::Su), None).await;
            let download = Req::get(format!("/api/backups/{SEED}?token=$SUPERUSER_FILE_TOKEN"));
            self.documented(Operation::Download, 400, tongue, download, None).await;
        }
        let mended = self.dir.as_ref().map(DataDir::mend_storage);
        let mut problems = Vec::new();
        if let Some(Err(e)) = mended {
            problems.push(format!("could not mend the storage: {e}"));
        }
        if !self.list_keys().await.unwrap_or_default().contains(SEED) {
            problems.push(format!("{SEED} is not listed once the storage is back"));
        }
        self.probe_from("the server serves the backups again once the storage is back", problems, "list 200 with the backups");
    }

    /// Keeps creates slow enough to be seen running, when the data dir is at hand.
    fn slow_creates(&self) -> bool {
        self.dir.as_ref().is_some_and(|d| d.write_filler(64).is_ok())
    }

    /// create 400, delete 400, restore 400: each sent while a create runs.
    async fn busy(&mut self) {
        let slow = self.slow_creates();
        self.made.insert(HELD.into());
        let tongues = self.tongues.clone();
        let first = tongues[0];
        let delete = |tongue: Tongue| Req::delete(format!("/api/backups/{HELD}")).auth(Cred::Su).lang(tongue.header());
        // What this server answers for a key it does not hold: the spec says 404, PocketBase 400.
        let missing = self.send(&delete(first)).await.ok().map(|g| (g.status, g.body));
        let t = self.t.clone();
        let started = Instant::now();
        let holder = tokio::spawn(async move {
            t.send(&Req::post("/api/backups").auth(Cred::Su).json(json!({"name": HELD}))).await
        });
        // Until the create is seen running, a delete of its key answers as for a missing key:
        // ask until it does not.
        let mut polls = 0;
        let caught = loop {
            if holder.is_finished() {
                break None;
            }
            let req = delete(first);
            let got = self.send(&req).await;
            polls += 1;
            match &got {
                Ok(g) if missing.as_ref() == Some(&(g.status, g.body.clone())) => continue,
                Ok(g) if g.status == 204 => break None,
                _ if holder.is_finished() => break None,
                _ => break Some((req, got)),
            }
        };
        let not_caught = if slow {
            "the create finished before this request was answered"
        } else {
            "could not catch a create running (it finished too fast); with --data-dir the auditor makes creates slower"
        };
        let mut window_problems = Vec::new();
        match caught {
            None => {
                let held_took = started.elapsed();
                for tongue in &tongues {
                    if slow && polls > 3 && held_took > Duration::from_millis(300) {
                        let req = delete(*tongue);
                        let why = vec![format!("DELETE of the key being created was answered as for a missing key all through its create ({polls} requests)")];
                        let got: Answer = self.send(&req).await;
                        self.row(Operation::Delete, 400, tongue.label(), &req, &got, why);
                    } else {
                        self.skip_row(Operation::Delete, 400, tongue.label(), not_caught);
                    }
                    self.skip_row(Operation::Create, 400, tongue.label(), not_caught);
                    self.skip_row(Operation::Restore, 400, tongue.label(), not_caught);
                }
                window_problems.push("no create was caught running".to_string());
            }
            Some((req, got)) => {
                let why = self.differences(Operation::Delete, 400, first.lang(), &got, None);
                self.row(Operation::Delete, 400, first.label(), &req, &got, why);
                for (i, tongue) in tongues.iter().enumerate() {
                    let second = format!("audit_f_second_{}.zip", tongue.slug());
                    self.made.insert(second.clone());
                    let sends = [
                        (Operation::Create, Req::post("/api/backups").auth(Cred::Su).json(json!({"name": second}))),
                        (Operation::Restore, Req::post(format!("/api/backups/{ABSENT}/restore")).auth(Cred::Su)),
                        (Operation::Delete, delete(*tongue)),
                    ];
                    for (op, req) in sends {
                        if op == Operation::Delete && i == 0 {
                            continue;
                        }
                        let req = req.lang(tongue.header());
                        let got = self.send(&req).await;
                        if holder.is_finished() {
                            if op == Operation::Create && matches!(&got, Ok(g) if g.status == 204) {
                                // It ran after the held one: take it away again.
                                let _ = self.send(&Req::delete(format!("/api/backups/{second}")).auth(Cred::Su)).await;
                            }
                            self.skip_row(op, 400, tongue.label(), "the create finished before this request was answered");
                            continue;
                        }
                        let why = self.differences(op, 400, tongue.lang(), &got, None);
                        if !why.is_empty() {
                            window_problems.push(format!("{} {}", operation_name(op), tongue.label()));
                        }
                        self.row(op, 400, tongue.label(), &req, &got, why);
                    }
                }
                let list = self.send(&Req::get("/api/backups").auth(Cred::Su)).await;
                if !holder.is_finished() && keys_of(&list).is_none() {
                    window_problems.push(format!("list during the create answered {} (R14: list goes on)", self.t.shown(&list)));
                }
            }
        }
        let held = holder.await.ok();
        match held {
            Some(Ok(g)) if g.status == 204 => {}
            Some(got) => window_problems.push(format!("the held create answered {}", self.t.shown(&got))),
            None => window_problems.push("the held create was lost".into()),
        }
        self.probe_from(
            "during a running create: create, restore and delete of its key refused, list served (R13, R14)",
            window_problems,
            "refused with the documented 400s; list answered 200",
        );
    }

    /// Three creates at once: exactly one is accepted.
    async fn concurrent_creates(&mut self) {
        let slow = self.dir.is_some();
        let names: Vec<String> = (1..=3).map(|i| format!("audit_g_race_{i}.zip")).collect();
        self.made.extend(names.iter().cloned());
        let sends = names.iter().map(|name| {
            let t = self.t.clone();
            let req = Req::post("/api/backups").auth(Cred::Su).json(json!({"name": name}));
            async move { t.send(&req).await }
        });
        let answers = futures_util::future::join_all(sends).await;
        if let Some(dir) = &self.dir {
            dir.remove_filler();
        }
        let won = answers.iter().filter(|a| matches!(a, Ok(g) if g.status == 204)).count();
        // Which message the refusals carry is the create 400 rows' business.
        let refused = answers.iter().filter(|a| matches!(a, Ok(g) if g.status == 400)).count();
        let name = "three creates at once: exactly one accepted, the others refused (R13)";
        match won {
            1 if refused == 2 => self.probe(name, Verdict::Pass, "one 204, two 400s"),
            1 => self.probe(name, Verdict::Fail, format!("one 204; the others: {}", answers.iter().map(|a| self.t.shown(a)).collect::<Vec<_>>().join(" / "))),
            n if n > 1 && !slow => self.probe(name, Verdict::Skipped, "the creates finished too fast to overlap; with --data-dir the auditor makes them slower"),
            n => self.probe(name, Verdict::Fail, format!("{n} creates accepted: {}", answers.iter().map(|a| self.t.shown(a)).collect::<Vec<_>>().join(" / "))),
        }
    }

    /// Tokens a server must not take (R5, R6).
    async fn bad_tokens(&mut self) {
        let (su, user, file) = (self.t.su.clone(), self.t.user.clone(), self.t.su_file.clone());
        let parts: Vec<&str> = su.split('.').collect();
        let user_parts: Vec<&str> = user.split('.').collect();
        let file_parts: Vec<&str> = file.split('.').collect();
        if parts.len() != 3 || user_parts.len() != 3 || file_parts.len() != 3 {
            self.probe("bad tokens are refused with the documented 401 (R5, R6)", Verdict::Skipped, "the server's tokens are not JWTs");
            return;
        }
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let auth_cases: Vec<(&str, Cred)> = vec![
            ("auth: `alg: none`", Cred::Crafted { label: "$ALG_NONE_TOKEN", token: format!("{none}.{}.", parts[1]) }),
            ("auth: a foreign signature", Cred::Crafted { label: "$FOREIGN_SIGNATURE_TOKEN", token: format!("{}.{}.{}", parts[0], parts[1], user_parts[2]) }),
            ("auth: a file token", Cred::SuFile),
            ("auth: not a token", Cred::Crafted { label: "not-a-token", token: "not-a-token".into() }),
        ];
        for (name, cred) in auth_cases {
            for (op, req) in [
                (Operation::List, Req::get("/api/backups")),
                (Operation::Create, Req::post("/api/backups").json(json!({"name": REFUSED}))),
                (Operation::Delete, Req::delete(format!("/api/backups/{NEWER}"))),
            ] {
                let req = req.auth(cred.clone());
                let got = self.send(&req).await;
                let why = self.refused_as(op, 401, &got);
                let title = format!("bad token, {name}: {} refused with the documented 401 (R5)", operation_name(op));
                self.probe_from(&title, why, "401");
            }
        }
        let file_cases = [
            ("download: `alg: none` file token", format!("{none}.{}.", file_parts[1])),
            ("download: a foreign signature", format!("{}.{}.{}", file_parts[0], file_parts[1], user_parts[2])),
            ("download: an auth token as file token", self.t.su.clone()),
        ];
        for (name, token) in file_cases {
            let req = Req::get(format!("/api/backups/{NEWER}?token={token}"));
            let got = self.send(&req).await;
            let why = self.refused_as(Operation::Download, 401, &got);
            self.probe_from(&format!("bad token, {name}: refused with the documented 401 (R6)"), why, "401");
        }
        self.expired_tokens().await;
    }

    /// Tokens signed with the server's own key, an hour past their `exp`: made from the data
    /// dir, the only place the key is (R5, R6).
    async fn expired_tokens(&mut self) {
        let email = self.config.superuser.0.clone();
        let signing = |kind: &str| self.dir.as_ref().and_then(|d| d.superuser_signing(&email, kind));
        let (Some(auth), Some(file)) = (signing("authToken"), signing("fileToken")) else {
            let why = "an expired token needs the server's signing key: give --data-dir of a server that keeps its accounts in PocketBase's layout";
            self.probe("bad token, expired", Verdict::Skipped, why);
            return;
        };
        let exp = time::OffsetDateTime::now_utc().unix_timestamp() - 3600;
        let expired = |(collection, id, key): (String, String, Vec<u8>), kind: &str| {
            let mut claims = json!({"collectionId": collection, "exp": exp, "id": id, "type": kind});
            if kind == "auth" {
                claims["refreshable"] = json!(true);
            }
            let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(&key)).expect("HS256 signs")
        };
        let token = expired(auth, "auth");
        let req = Req::get("/api/backups").auth(Cred::Crafted { label: "$EXPIRED_TOKEN", token });
        let got = self.send(&req).await;
        let why = self.refused_as(Operation::List, 401, &got);
        self.probe_from("bad token, expired: list refused with the documented 401 (R5)", why, "401");
        let token = expired(file, "file");
        let got = self.send(&Req::get(format!("/api/backups/{NEWER}?token={token}"))).await;
        let why = self.refused_as(Operation::Download, 401, &got);
        self.probe_from("bad token, download: an expired file token refused with the documented 401 (R6)", why, "401");
    }

    /// Keys that reach outside the backups storage name nothing (R9): 404, nothing touched.
    async fn traversal(&mut self) {
        let outside = self.dir.as_ref().map(|d| d.root.join(OUTSIDE));
        let zip = self.a_zip();
        if let Some(path) = &outside {
            let _ = std::fs::write(path, &zip);
        }
        let keys = ["..%2Faudit_outside.zip", "%2E%2E%2Faudit_outside.zip", "..%5Caudit_outside.zip", "..", "audit%00.zip", ".audit_hidden.zip"];
        let mut problems = Vec::new();
        for key in keys {
            let mut sends = vec![
                (Operation::Delete, Req::delete(format!("/api/backups/{key}")).auth(Cred::Su)),
                (Operation::Download, Req::get(format!("/api/backups/{key}?token=$SUPERUSER_FILE_TOKEN"))),
            ];
            if self.config.allow_restore {
                sends.push((Operation::Restore, Req::post(format!("/api/backups/{key}/restore")).auth(Cred::Su)));
            }
            for (op, req) in sends {
                let got = self.send(&req).await;
                let why = self.refused_as(op, 404, &got);
                if !why.is_empty() {
                    problems.push(format!("{}: {}", req.shown(), why.join(", ")));
                }
            }
        }
        if let Some(path) = &outside {
            if std::fs::read(path).ok().as_deref() != Some(zip.as_slice()) {
                problems.push(format!("{OUTSIDE} beside backups/ was changed or removed"));
            }
            let _ = std::fs::remove_file(path);
        }
        let passed = if outside.is_some() { "404 for every key; the file beside backups/ untouched" } else { "404 for every key" };
        self.probe_from("traversal and impossible keys answer 404 and touch nothing (R9, R20, R21, R25)", problems, passed);
    }

    /// Waits until the server answers again after a restore was accepted, counting refused
    /// connections; then until it is idle (a create is accepted) and the marker is gone.
    async fn await_restore(&mut self, marker: bool) -> (usize, Vec<String>) {
        let deadline = Instant::now() + self.config.restore_wait;
        let mut refused = 0;
        let mut problems = Vec::new();
        let mut round = 0;
        // No pooled connections: every poll opens a fresh one, so a refused connection shows
        // as one. Polled every few milliseconds: a restart's window without a listener can be
        // a few tens of milliseconds, and a slower poll could miss it.
        let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(30)).build().expect("a client");
        loop {
            if Instant::now() > deadline {
                problems.push(format!("not back and idle within {} s", self.config.restore_wait.as_secs()));
                break;
            }
            match self.t.send_with(&fresh, &Req::get("/api/health")).await {
                Err(e) if e.is_connect() => refused += 1,
                Err(_) => {}
                Ok(g) if g.status == 200 => {
                    let gone = !marker || !self.dir.as_ref().is_some_and(DataDir::has_marker);
                    if gone {
                        round += 1;
                        let name = format!("audit_i_idle_{round}.zip");
                        if matches!(self.create(&name).await, Ok(g) if g.status == 204) {
                            break;
                        }
                    }
                }
                Ok(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if marker && self.dir.as_ref().is_some_and(DataDir::has_marker) {
            problems.push(format!("{} written after the backup is still there: the data was not restored", datadir::MARKER));
        }
        // The backup's accounts: log in again in case the tokens changed.
        if let Ok((200, su)) = login(&self.t.http, &self.t.base, "_superusers", &self.config.superuser).await {
            self.t.su = su;
        }
        if let Ok((200, user)) = login(&self.t.http, &self.t.base, "users", &self.config.user).await {
            self.t.user = user;
        }
        if let Some(token) = file_token(&self.t.http, &self.t.base, &self.t.su).await {
            self.t.su_file = token;
        }
        if let Some(token) = file_token(&self.t.http, &self.t.base, &self.t.user).await {
            self.t.user_file = token;
        }
        (refused, problems)
    }

    /// restore 204 and the probes that restore.
    async fn restores(&mut self) {
        if !self.config.allow_restore {
            self.skip_row(Operation::Restore, 204, "any", "restores run only with --allow-restore");
            return;
        }
        let marker = self.dir.as_ref().is_some_and(|d| d.write_marker().is_ok());
        let req = Req::post(format!("/api/backups/{SEED}/restore")).auth(Cred::Su);
        let got = self.send(&req).await;
        // At once: nothing may run beside the accepted restore.
        let beside = Req::post("/api/backups").auth(Cred::Su).json(json!({"name": "audit_h_beside.zip"}));
        self.made.insert("audit_h_beside.zip".into());
        let beside_got = self.send(&beside).await;
        let why = self.differences(Operation::Restore, 204, Lang::Zh, &got, None);
        let accepted = why.is_empty();
        self.row(Operation::Restore, 204, "any", &req, &got, why);
        if !accepted {
            if let Some(d) = &self.dir {
                d.remove_marker();
            }
            return;
        }
        let (refused, problems) = self.await_restore(marker).await;
        let name = "a create sent right after the restore's 204 is refused, or runs after the restore (R13, R21)";
        match &beside_got {
            // One text for every way to pass, so that reports do not change from run to run.
            Err(_) => self.probe(name, Verdict::Pass, BESIDE_PASSED),
            Ok(_) if self.refused_as(Operation::Create, 400, &beside_got).is_empty() => self.probe(name, Verdict::Pass, BESIDE_PASSED),
            Ok(g) if g.status == 204 && marker => {
                // Its backup tells when it ran: with the marker, before the restore took effect.
                let got = self.send(&Req::get("/api/backups/audit_h_beside.zip?token=$SUPERUSER_FILE_TOKEN")).await;
                let holds_marker = got.as_ref().is_ok_and(|g| g.body.windows(datadir::MARKER.len()).any(|w| w == datadir::MARKER.as_bytes()));
                match got {
                    Ok(g) if g.status == 200 && holds_marker => self.probe(
                        name,
                        Verdict::Fail,
                        format!("accepted (204), and its backup holds {} written after the restored backup: it ran beside the restore", datadir::MARKER),
                    ),
                    Ok(g) if g.status == 200 => self.probe(name, Verdict::Pass, BESIDE_PASSED),
                    other => self.probe(name, Verdict::Fail, format!("accepted (204), but its backup cannot be downloaded: {}", self.t.shown(&other))),
                }
            }
            Ok(g) if g.status == 204 => {
                self.probe(name, Verdict::Skipped, "accepted; without --data-dir the auditor cannot tell whether it ran beside the restore or after it")
            }
            Ok(_) => self.probe(name, Verdict::Fail, format!("got {}", self.t.shown(&beside_got))),
        }
        let what = if marker { "the data is the backup's, and the server is idle again" } else { "the server is idle again (no --data-dir: data not compared)" };
        self.probe_from("restore takes effect (R23)", problems, what);
        if refused == 0 {
            self.probe("no connection refused while the server restarts (R23)", Verdict::Pass, "every connection was answered");
        } else {
            self.probe("no connection refused while the server restarts (R23)", Verdict::Fail, "connections were refused while the server restarted");
        }
        if let Some(d) = &self.dir {
            d.remove_marker();
        }
        self.delete_and_restore_at_once().await;
    }

    /// A delete of the key being restored, sent the moment the restore is accepted: refused,
    /// or (once the restore took effect) accepted; never accepted with the restore lost.
    async fn delete_and_restore_at_once(&mut self) {
        let name = "delete and restore of one key at once: never both accepted (R20, R21)";
        let key = "audit_j_pair.zip";
        if !matches!(self.create(key).await, Ok(g) if g.status == 204) {
            self.probe(name, Verdict::Skipped, "could not make the backup to race on");
            return;
        }
        let marker = self.dir.as_ref().is_some_and(|d| d.write_marker().is_ok());
        let restore = self.send(&Req::post(format!("/api/backups/{key}/restore")).auth(Cred::Su)).await;
        if !matches!(&restore, Ok(g) if g.status == 204) {
            self.probe(name, Verdict::Skipped, format!("the restore answered {}", self.t.shown(&restore)));
            return;
        }
        let deleted = self.send(&Req::delete(format!("/api/backups/{key}")).auth(Cred::Su)).await;
        let (_, problems) = self.await_restore(marker).await;
        let passed = "the delete was refused, or ran after the restore took effect";
        match &deleted {
            Ok(g) if g.status == 204 && !marker => {
                self.probe(name, Verdict::Skipped, "the delete was accepted; without --data-dir the auditor cannot tell whether the restore was lost")
            }
            Ok(g) if g.status == 204 && !problems.is_empty() => self.probe(
                name,
                Verdict::Fail,
                format!("both answered 204, and the restore never took effect: {}", problems.join("; ")),
            ),
            _ => self.probe(name, Verdict::Pass, passed),
        }
        if let Some(d) = &self.dir {
            d.remove_marker();
        }
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


//! The system under test: a live in-process server, driven over real HTTP in lockstep with
//! the model, checked after every step.
//!
//! A restore runs for real and nothing holds it, so the model's "restoring" spans two
//! server instances: the old one, busy until it stops, and the restarted one, idle. Every
//! request goes over one kept-alive connection; while a restore is in flight, an answer
//! on the connection that carried the restore's 204 comes from the old instance and must
//! be the model's "busy" answer. Once that connection is gone, an op whose answer would
//! differ after the restart is not sent (it cannot be told apart), and the others are
//! sent on a new connection: their answer is the same either way.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pb_backups::schedule::TickOutcome;
use pb_backups::settings::BackupsPatch;
use pb_backups_spec::model::{self, Active, Caller, Op, Outcome, State};
use pb_backups_spec::Lang;
use proptest_state_machine::StateMachineTest;
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::http::{segment, Conn, Request, Response, Sent};
use crate::live::{template, Live};
use crate::support::gate::Gate;
use crate::reference::Reference;

/// How long any single wait may take before the step fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// Counts over a whole run, to show what the run exercised.
pub struct Stats {
    pub steps: AtomicU64,
    pub restores: AtomicU64,
    /// Creates answered by the old instance while a restore was in flight.
    pub creates_while_restoring: AtomicU64,
    /// Other ops whose answer depends on the restore, answered by the old instance.
    pub others_while_restoring: AtomicU64,
    /// Ops not sent because the restore had (or may have) finished.
    pub skipped_after_restart: AtomicU64,
}

pub static STATS: Stats = Stats {
    steps: AtomicU64::new(0),
    restores: AtomicU64::new(0),
    creates_while_restoring: AtomicU64::new(0),
    others_while_restoring: AtomicU64::new(0),
    skipped_after_restart: AtomicU64::new(0),
};

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct RestoreInFlight {
    /// `data.db` before the swap.
    data_db_before: Option<(u64, u64)>,
    /// The restore request, held in the restore gate (extracted, not yet swapped in) until
    /// `FinishRestore`: meanwhile the server is deterministically busy restoring.
    held: JoinHandle<Response>,
    /// The connection that carried the 204 is gone: the old instance may have stopped.
    connection_lost: bool,
}

pub struct Sut {
    rt: Option<Runtime>,
    live: Option<Live>,
    gate: Arc<Gate>,
    restore_gate: Arc<Gate>,
    conn: Option<Conn>,
    /// The model's state before the next op.
    model: State,
    /// The model's stand-ins for generated names, to the real keys.
    names: BTreeMap<String, String>,
    held: Option<JoinHandle<Response>>,
    restore: Option<RestoreInFlight>,
}

pub struct Machine;

impl StateMachineTest for Machine {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(ref_state: &State) -> Sut {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (gate, restore_gate) = (Gate::new(), Gate::new());
        let live = rt.block_on(async { Live::start(Some(gate.hook()), Some(restore_gate.hook())) });
        let mut sut = Sut {
            rt: Some(rt),
            live: Some(live),
            gate,
            restore_gate,
            conn: None,
            model: ref_state.clone(),
            names: BTreeMap::new(),
            held: None,
            restore: None,
        };
        sut.check_after_step("start");
        sut
    }

    fn apply(mut sut: Sut, ref_state: &State, op: Op) -> Sut {
        let (next, expected) = model::step(&sut.model, &op);
        assert_eq!(&next, ref_state, "the reference machine and the model disagree");
        sut.run(&op, &next, &expected);
        sut.model = next;
        sut.check_after_step(&format!("{op:?}"));
        count(&STATS.steps);
        sut
    }

    fn teardown(mut sut: Sut, _ref_state: State) {
        if let Some(held) = sut.held.take() {
            sut.gate.release();
            sut.within("the held create to answer", held).expect("held create task");
        }
        if sut.restore.is_some() {
            sut.finish_restore();
        }
        let live = sut.live.take().unwrap();
        sut.block_on(live.stop());
    }
}

impl Drop for Sut {
    fn drop(&mut self) {
        // Runtime first: the server must stop before its data dir is deleted.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        drop(self.live.take());
    }
}

fn token(caller: Caller) -> Option<&'static str> {
    match caller {
        Caller::Anonymous => None,
        Caller::User => Some(&template().user),
        Caller::Superuser => Some(&template().superuser),
    }
}

impl Sut {
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().unwrap().block_on(f)
    }

    fn within<F: Future>(&self, what: &str, f: F) -> F::Output {
        self.block_on(async {
            tokio::time::timeout(DEADLINE, f).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        })
    }

    fn live(&self) -> &Live {
        self.live.as_ref().unwrap()
    }

    fn real_key(&self, key: &str) -> String {
        self.names.get(key).cloned().unwrap_or_else(|| key.to_string())
    }

    fn model_key(&self, real: &str) -> String {
        self.names.iter().find(|(_, r)| *r == real).map(|(s, _)| s.clone()).unwrap_or_else(|| real.to_string())
    }

    fn learn(&mut self, stand_in: &str, real: String) {
        // The server may reuse the name of a deleted backup; the old stand-in is gone then.
        self.names.retain(|_, r| *r != real);
        self.names.insert(stand_in.to_string(), real);
    }

    /// Sends `request` for `op` and returns its answer, or `None` when it was not sent or
    /// not handled because a restore may have finished meanwhile (see the module doc).
    fn exchange(&mut self, op: Option<&Op>, expected: Option<&Outcome>, request: &Request) -> Option<Response> {
        let depends_on_restore = match (&self.model.active, op, expected) {
            (Active::Restoring(_), Some(op), Some(expected)) => {
                let idle = State { active: Active::Idle, ..self.model.clone() };
                model::step(&idle, op).1 != *expected
            }
            _ => false,
        };
        for _ in 0..3 {
            if self.conn.as_ref().is_none_or(|c| !c.is_open()) {
                // A new connection may reach either instance.
                if let Some(restore) = &mut self.restore {
                    restore.connection_lost = true;
                }
            }
            if depends_on_restore && self.restore.as_ref().is_some_and(|r| r.connection_lost) {
                count(&STATS.skipped_after_restart);
                return None;
            }
            if self.conn.as_ref().is_none_or(|c| !c.is_open()) {
                let addr = self.live().addr;
                self.conn = Some(self.within("a connection", Conn::connect(addr)));
            }
            let mut conn = self.conn.take().unwrap();
            let sent = self.within(&format!("an answer to {} {}", request.method, request.path), conn.send(request));
            self.conn = Some(conn);
            match sent {
                Sent::Answered(response) => {
                    if depends_on_restore {
                        match op {
                            Some(Op::Create { .. } | Op::CreateHeld { .. }) => count(&STATS.creates_while_restoring),
                            _ => count(&STATS.others_while_restoring),
                        }
                    }
                    return Some(response);
                }
                Sent::Closed => {}
            }
        }
        panic!("the server closed three connections in a row on {} {}", request.method, request.path);
    }

    fn check(&self, op: &Op, expected: &Outcome, response: &Response) {
        let body = response.json();
        assert_eq!(
            response.status, expected.status,
            "{op:?}: status {} with body {body}, the model expects {expected:?}",
            response.status
        );
        let Some(error) = expected.error else { return };
        // Every mismatch names what the model expected (scripts/check-broken-coordinator
        // reads it to tell the planted bug from any other failure).
        assert_eq!(body["status"], json!(error.status()), "{op:?}: {body}, the model expects {expected:?}");
        if let Some(message) = error.message(Lang::Zh) {
            assert_eq!(body["message"], json!(message), "{op:?}: {body}, the model expects {expected:?}");
        }
        if let Some(code) = error.code() {
            let field = if matches!(op, Op::Upload { .. }) { "file" } else { "name" };
            assert_eq!(body["data"][field]["code"], json!(code), "{op:?}: {body}, the model expects {expected:?}");
        }
    }

    fn create_request(caller: Caller, name: &Option<String>) -> Request {
        let body = match name {
            Some(name) => json!({ "name": name }),
            None => json!({}),
        };
        Request::new("POST", "/api/backups").auth(token(caller)).json(&body)
    }

    fn run(&mut self, op: &Op, next: &State, expected: &Outcome) {
        match op {
            Op::List { caller } => {
                let request = Request::new("GET", "/api/backups").auth(token(*caller));
                if let Some(r) = self.exchange(Some(op), Some(expected), &request) {
                    self.check(op, expected, &r);
                    if let Some(keys) = &expected.listed {
                        assert_eq!(&self.listed_keys(&r), keys, "{op:?}");
                    }
                }
            }
            Op::Create { caller, name } => {
                let request = Self::create_request(*caller, name);
                if let Some(r) = self.exchange(Some(op), Some(expected), &request) {
                    self.check(op, expected, &r);
                    self.learn_created(op, next.keys.difference(&self.model.keys).next().cloned());
                }
            }
            Op::CreateHeld { caller, name } if expected.held => {
                // The model is idle here, so any connection reaches the current instance.
                self.gate.hold_next();
                let (addr, request) = (self.live().addr, Self::create_request(*caller, name));
                let mut task = self.rt.as_ref().unwrap().spawn(async move {
                    match Conn::connect(addr).await.send(&request).await {
                        Sent::Answered(r) => r,
                        Sent::Closed => panic!("the server closed the held create's connection"),
                    }
                });
                let gate = self.gate.clone();
                let answered_early = self.within("the create to reach the gate", async {
                    tokio::select! {
                        () = gate.held() => None,
                        r = &mut task => Some(r.expect("create task")),
                    }
                });
                if let Some(r) = answered_early {
                    panic!("{op:?}: answered {} {} instead of being held", r.status, r.json());
                }
                let Active::Creating(stand_in) = &next.active else { unreachable!() };
                self.learn_created(op, Some(stand_in.clone()));
                self.held = Some(task);
            }
            Op::CreateHeld { caller, name } => {
                let request = Self::create_request(*caller, name);
                if let Some(r) = self.exchange(Some(op), Some(expected), &request) {
                    self.check(op, expected, &r);
                    self.learn_created(op, None);
                }
            }
            Op::FinishCreate => {
                let held = self.held.take().expect("a held create");
                self.gate.release();
                let r = self.within("the held create to answer", held).expect("create task");
                self.check(op, expected, &r);
            }
            Op::Upload { caller, key, valid_zip } => {
                let bytes: &[u8] = if *valid_zip { &template().backup_zip } else { b"not a zip archive" };
                let request = Request::new("POST", "/api/backups/upload")
                    .auth(token(*caller))
                    .file(&self.real_key(key), bytes);
                if let Some(r) = self.exchange(Some(op), Some(expected), &request) {
                    self.check(op, expected, &r);
                }
            }
            Op::Delete { caller, key } => {
                let request = Request::new("DELETE", format!("/api/backups/{}", segment(&self.real_key(key))))
                    .auth(token(*caller));
                if let Some(r) = self.exchange(Some(op), Some(expected), &request) {
                    self.check(op, expected, &r);
                }
            }
            Op::RestoreAccepted { caller, key } if expected.status == 204 => {
                // The model is idle here, so any connection reaches the current instance.
                let data_db_before = self.live().data_db_id();
                self.restore_gate.hold_next();
                let path = format!("/api/backups/{}/restore", segment(&self.real_key(key)));
                let (addr, request) = (self.live().addr, Request::new("POST", path).auth(token(*caller)));
                let mut task = self.rt.as_ref().unwrap().spawn(async move {
                    match Conn::connect(addr).await.send(&request).await {
                        Sent::Answered(r) => r,
                        Sent::Closed => panic!("the server closed the held restore's connection"),
                    }
                });
                let gate = self.restore_gate.clone();
                let answered_early = self.within("the restore to reach the gate", async {
                    tokio::select! {
                        () = gate.held() => None,
                        r = &mut task => Some(r.expect("restore task")),
                    }
                });
                if let Some(r) = answered_early {
                    panic!("{op:?}: answered {} {} instead of being held", r.status, r.json());
                }
                self.restore = Some(RestoreInFlight { data_db_before, held: task, connection_lost: false });
                count(&STATS.restores);
            }
            Op::RestoreAccepted { caller, key } => {
                let path = format!("/api/backups/{}/restore", segment(&self.real_key(key)));
                let request = Request::new("POST", path).auth(token(*caller));
                if let Some(r) = self.exchange(Some(op), Some(expected), &request) {
                    self.check(op, expected, &r);
                }
            }
            Op::ScheduledRun { key, keep } => self.scheduled_run(op, key, *keep, expected),
            Op::FinishRestore => {
                let status = self.finish_restore();
                assert_eq!(status, expected.status, "{op:?}: health of the restarted server");
            }
            Op::Download { caller, key } => {
                let file_token = token(*caller).map(|auth| {
                    let request = Request::new("POST", "/api/files/token").auth(Some(auth));
                    let r = self.exchange(None, None, &request).unwrap();
                    assert_eq!(r.status, 200, "file token: {}", r.json());
                    r.json()["token"].as_str().unwrap().to_string()
                });
                let mut path = format!("/api/backups/{}", segment(&self.real_key(key)));
                if let Some(t) = file_token {
                    path.push_str(&format!("?token={t}"));
                }
                if let Some(r) = self.exchange(Some(op), Some(expected), &Request::new("GET", path)) {
                    self.check(op, expected, &r);
                    if r.status == 200 {
                        assert_eq!(r.header("content-type"), Some("application/zip"), "{op:?}");
                        assert!(r.body.starts_with(b"PK"), "{op:?}: the download is a zip");
                    }
                }
            }
        }
    }

    /// After a create: the creates that passed the server's coordinator must be exactly
    /// the one the model accepted, and a generated name is learned.
    /// A due minute of the schedule: the cron (every minute) and `keep` are stored as
    /// PocketBase would, then the manual clock ticks at the minute the key names.
    fn scheduled_run(&mut self, op: &Op, key: &str, keep: usize, expected: &Outcome) {
        let patch = BackupsPatch { cron: Some("* * * * *".into()), cron_max_keep: Some(keep as i64) };
        pb_backups::settings::update_backups(self.live().data_dir(), &patch).expect("settings stored");
        let stamp = key.trim_end_matches(".zip").rsplit('_').next().unwrap();
        let format = time::macros::format_description!("[year][month][day][hour][minute][second]");
        let at = time::PrimitiveDateTime::parse(stamp, format).unwrap().assume_utc();
        let clock = self.live().clock.clone();
        let outcome = self.within("the scheduled run", clock.tick(at)).expect("the scheduler runs");
        let (created, pruned) = match outcome {
            TickOutcome::Created { key: made, pruned } => {
                assert_eq!(made.as_str(), key, "{op:?}");
                (true, pruned)
            }
            TickOutcome::Skipped { pruned } | TickOutcome::Failed { pruned, .. } => (false, pruned),
            other => panic!("{op:?}: {other:?}"),
        };
        // A create that got past the coordinator passed the gate (a taken key fails after it).
        let started = self.model.active == Active::Idle;
        let passed = self.gate.take_passed();
        let (want, model_says) =
            if started { (vec![key.to_string()], "starts this one") } else { (Vec::new(), "expects it skipped as busy") };
        assert_eq!(passed, want, "{op:?}: the creates that passed the coordinator; the model {model_says}");
        let pruned: BTreeSet<String> = pruned.iter().map(|k| self.model_key(k.as_str())).collect();
        let expected = expected.scheduled.clone().expect("a scheduled outcome");
        assert_eq!((created, pruned), (expected.created, expected.pruned), "{op:?}");
    }

    fn learn_created(&mut self, op: &Op, stand_in: Option<String>) {
        let passed = self.gate.take_passed();
        match stand_in {
            None => assert_eq!(passed, Vec::<String>::new(), "{op:?}: refused, yet a create started"),
            Some(stand_in) => {
                assert_eq!(passed.len(), 1, "{op:?}: creates started: {passed:?}");
                if model::is_generated_key(&stand_in) {
                    self.learn(&stand_in, passed[0].clone());
                } else {
                    assert_eq!(passed[0], stand_in, "{op:?}");
                }
            }
        }
    }

    /// Waits until the restore is swapped in and the restarted server answers; returns
    /// the status of its health check.
    fn finish_restore(&mut self) -> u16 {
        let restore = self.restore.take().expect("a restore in flight");
        self.restore_gate.release();
        let r = self.within("the held restore to answer", restore.held).expect("restore task");
        assert_eq!(r.status, 204, "the held restore: {}", r.json());
        let deadline = Instant::now() + DEADLINE;
        // The swap happens once the old instance has stopped, so after it every new
        // connection waits for the restarted instance.
        loop {
            let now = self.live().data_db_id();
            if now.is_some() && now != restore.data_db_before {
                break;
            }
            assert!(Instant::now() < deadline, "timed out waiting for the restore to be swapped in");
            std::thread::sleep(Duration::from_millis(2));
        }
        self.conn = None;
        let r = self.exchange(None, None, &Request::new("GET", "/api/health")).unwrap();
        r.status
    }

    fn listed_keys(&self, r: &Response) -> BTreeSet<String> {
        let body: Value = r.json();
        let entries = body.as_array().unwrap_or_else(|| panic!("a list: {body}"));
        entries.iter().map(|e| self.model_key(e["key"].as_str().expect("a key"))).collect()
    }

    /// The listed keys are the model's, and the data dir holds no leftovers.
    fn check_after_step(&mut self, after: &str) {
        let r = self.exchange(None, None, &Request::new("GET", "/api/backups").auth(token(Caller::Superuser))).unwrap();
        assert_eq!(r.status, 200, "after {after}: list: {}", r.json());
        assert_eq!(self.listed_keys(&r), self.model.keys, "after {after}: listed keys");

        let dir = self.live().data_dir().to_path_buf();
        for entry in std::fs::read_dir(dir.join("backups")).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(!name.to_string_lossy().starts_with('.'), "after {after}: {name:?} visible in backups/");
        }
        if self.model.active == Active::Idle {
            // The old data of a committed restore is removed by a background thread (`trash-*`):
            // polled with a deadline, anything else must already be gone.
            let deadline = Instant::now() + DEADLINE;
            loop {
                let stale: Vec<_> = std::fs::read_dir(dir.join(".pb_temp"))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                if stale.is_empty() {
                    break;
                }
                let only_trash = stale.iter().all(|n| n.starts_with("trash-"));
                assert!(only_trash && Instant::now() < deadline, "after {after}: stale files in .pb_temp: {stale:?}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if self.restore.is_none() {
            assert!(dir.join("data.db").is_file(), "after {after}: data.db is missing");
        }
    }
}

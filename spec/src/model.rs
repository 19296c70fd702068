//! The pure reference model of backup/restore exclusivity.
//!
//! Plain data and one transition function, `step`, that a state-machine test drives in
//! lockstep with the live server: it says which status and error each request must get
//! and how the set of backups changes. It knows nothing about sizes, times or bytes; the
//! order backups were stored in stands for their modification times (scheduled runs prune
//! by it).

use std::collections::BTreeSet;

use crate::catalog::{self, DocumentedResponse, Lang, Operation};

/// Longest possible key or create name, in characters (R9, R11).
pub const MAX_KEY_CHARS: usize = 150;

/// Start of the stand-in keys the model gives to server-generated names (see [`State`]).
pub const GENERATED_KEY_PREFIX: &str = "generated-";

/// Start of the keys of scheduled backups: the only ones a scheduled run prunes.
pub const AUTO_KEY_PREFIX: &str = "@auto_pb_backup_";

/// Who sends a request (R4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    /// No valid token.
    Anonymous,
    /// A valid token of a regular `users` record.
    User,
    Superuser,
}

impl Caller {
    pub const ALL: [Caller; 3] = [Caller::Anonymous, Caller::User, Caller::Superuser];

    const fn refusal(self) -> Option<ErrorKind> {
        match self {
            Caller::Anonymous => Some(ErrorKind::Unauthorized),
            Caller::User => Some(ErrorKind::Forbidden),
            Caller::Superuser => None,
        }
    }
}

/// The create or restore in progress, with its key (R13).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Active {
    #[default]
    Idle,
    Creating(String),
    Restoring(String),
}

impl Active {
    pub fn key(&self) -> Option<&str> {
        match self {
            Active::Idle => None,
            Active::Creating(key) | Active::Restoring(key) => Some(key),
        }
    }
}

/// What the server holds, as far as the API can tell.
///
/// A server-generated name cannot be known in advance, so the model names it
/// `generated-N.zip` (N counting from 0, skipping taken keys) and a test keeps a table
/// from these stand-ins to the real keys it learns from the server, translating keys in
/// ops and lists through it. The stand-ins are valid names, so they flow through every
/// rule like real keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct State {
    /// Keys of the complete backups in storage.
    pub keys: BTreeSet<String>,
    pub active: Active,
    /// How many names the model has generated so far.
    pub generated: u32,
    /// The stored keys, oldest first: the order their backups were completed in, which is
    /// their modification order (a scheduled run keeps the newest of its own).
    pub order: Vec<String>,
}

/// One step a test can take: a request by a caller, or the release of a held operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    List {
        caller: Caller,
    },
    /// A create that, once accepted, is held in progress by a test gate until `FinishCreate`.
    /// `None` (or an empty name) asks the server to generate the name.
    CreateHeld {
        caller: Caller,
        name: Option<String>,
    },
    /// Release the held create: it completes and its request answers.
    FinishCreate,
    /// A create that runs to completion within the step.
    Create {
        caller: Caller,
        name: Option<String>,
    },
    /// `key` is the key the file name should yield (the base name, R19).
    Upload {
        caller: Caller,
        key: String,
        valid_zip: bool,
    },
    Delete {
        caller: Caller,
        key: String,
    },
    /// A restore that, once accepted, is held before the data swap until `FinishRestore`.
    RestoreAccepted {
        caller: Caller,
        key: String,
    },
    /// Release the accepted restore: the server restarts and serves again.
    FinishRestore,
    Download {
        caller: Caller,
        key: String,
    },
    /// A minute at which the backups schedule is due: a create under `key` (an
    /// `@auto_pb_backup_` name, not a request), then the scheduled backups beyond the newest
    /// `keep` are deleted, whether or not the create ran.
    ScheduledRun {
        key: String,
        keep: usize,
    },
}

impl Op {
    /// The caller of a request; `None` for the releases, which are not requests.
    pub fn caller(&self) -> Option<Caller> {
        match self {
            Op::List { caller }
            | Op::CreateHeld { caller, .. }
            | Op::Create { caller, .. }
            | Op::Upload { caller, .. }
            | Op::Delete { caller, .. }
            | Op::RestoreAccepted { caller, .. }
            | Op::Download { caller, .. } => Some(*caller),
            Op::FinishCreate | Op::FinishRestore | Op::ScheduledRun { .. } => None,
        }
    }

    /// The API operation a request calls; `None` for the releases.
    pub fn operation(&self) -> Option<Operation> {
        match self {
            Op::List { .. } => Some(Operation::List),
            Op::CreateHeld { .. } | Op::Create { .. } => Some(Operation::Create),
            Op::Upload { .. } => Some(Operation::Upload),
            Op::Delete { .. } => Some(Operation::Delete),
            Op::RestoreAccepted { .. } => Some(Operation::Restore),
            Op::Download { .. } => Some(Operation::Download),
            Op::FinishCreate | Op::FinishRestore | Op::ScheduledRun { .. } => None,
        }
    }

    /// Whether the op can be taken in `state`: a release needs something held to release.
    /// Shrinking drops earlier steps, so a state-machine test must re-check this.
    pub fn precondition(&self, state: &State) -> bool {
        match self {
            Op::FinishCreate => matches!(state.active, Active::Creating(_)),
            Op::FinishRestore => matches!(state.active, Active::Restoring(_)),
            _ => true,
        }
    }
}

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 401 (R4).
    Unauthorized,
    /// 403 (R4).
    Forbidden,
    /// 400, the create busy message (R15).
    BusyCreate,
    /// 400, the delete/restore busy message (R20, R21).
    BusyDeleteRestore,
    /// 404 (R20, R21, R25).
    NotFound,
    /// 400, create name longer than 150 characters (R11).
    NameTooLong,
    /// 400, create name not of the form `[a-z0-9_-]+.zip` (R11).
    NameInvalid,
    /// 400, the name or upload key is taken (R10).
    NameExists,
    /// 400, the upload key is not a possible key (R9, R19).
    KeyInvalid,
    /// 400, the documented upload error: the file is not a zip archive (R19).
    InvalidZip,
}

impl ErrorKind {
    pub const fn status(self) -> u16 {
        match self {
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::BusyCreate
            | ErrorKind::BusyDeleteRestore
            | ErrorKind::NameTooLong
            | ErrorKind::NameInvalid
            | ErrorKind::NameExists
            | ErrorKind::KeyInvalid
            | ErrorKind::InvalidZip => 400,
        }
    }

    /// The documented top-level message; `None` for the validation errors the spec does
    /// not document.
    pub fn message(self, lang: Lang) -> Option<&'static str> {
        let messages = lang.messages();
        match self {
            ErrorKind::Unauthorized => Some(messages.unauthorized),
            ErrorKind::Forbidden => Some(messages.forbidden),
            ErrorKind::NotFound => Some(messages.not_found),
            ErrorKind::BusyCreate => Some(messages.busy_create),
            ErrorKind::BusyDeleteRestore => Some(messages.busy_delete_restore),
            ErrorKind::InvalidZip => Some(messages.upload_failure),
            ErrorKind::NameTooLong
            | ErrorKind::NameInvalid
            | ErrorKind::NameExists
            | ErrorKind::KeyInvalid => None,
        }
    }

    /// The validation code under `data.name` (create) or `data.file` (upload), where our
    /// reading fixes one.
    pub const fn code(self) -> Option<&'static str> {
        match self {
            ErrorKind::NameTooLong => Some("validation_length_out_of_range"),
            ErrorKind::NameInvalid => Some("validation_match_invalid"),
            ErrorKind::NameExists => Some("validation_backup_name_exists"),
            ErrorKind::InvalidZip => Some(catalog::UPLOAD_NOT_ZIP_CODE),
            ErrorKind::Unauthorized
            | ErrorKind::Forbidden
            | ErrorKind::BusyCreate
            | ErrorKind::BusyDeleteRestore
            | ErrorKind::NotFound
            | ErrorKind::KeyInvalid => None,
        }
    }
}

/// What the server must answer to one op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The HTTP status. For `FinishCreate` it is that of the held create's response, for
    /// `FinishRestore` that of the restarted server's health check; 0 when no request is
    /// made (see [`Outcome::NOTHING`]).
    pub status: u16,
    pub error: Option<ErrorKind>,
    /// For `List`: the keys the list must hold (in any order: the model knows no times).
    pub listed: Option<BTreeSet<String>>,
    /// The request was accepted but answers only at the matching release (`CreateHeld`).
    pub held: bool,
    /// For `ScheduledRun`: what it did.
    pub scheduled: Option<Scheduled>,
}

/// What a scheduled run did: created its backup or was skipped (a create or restore was in
/// progress: never queued), and which scheduled backups it then deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    pub created: bool,
    pub pruned: BTreeSet<String>,
}

impl Outcome {
    /// The outcome of an op whose precondition fails: no request, nothing to check.
    pub const NOTHING: Outcome = Outcome {
        status: 0,
        error: None,
        listed: None,
        held: false,
        scheduled: None,
    };

    const fn success(status: u16) -> Outcome {
        Outcome {
            status,
            error: None,
            listed: None,
            held: false,
            scheduled: None,
        }
    }

    const fn refused(error: ErrorKind) -> Outcome {
        Outcome {
            status: error.status(),
            error: Some(error),
            listed: None,
            held: false,
            scheduled: None,
        }
    }

    /// The documented response this outcome corresponds to, when the spec documents it:
    /// every success, and the errors that have a documented message.
    pub fn documented(&self, op: &Op) -> Option<&'static DocumentedResponse> {
        let operation = op.operation()?;
        if let Some(error) = self.error {
            error.message(Lang::Zh)?;
        }
        catalog::find(operation, self.status)
    }
}

/// Whether `key` could ever name a backup (R9).
pub fn is_possible_key(key: &str) -> bool {
    !key.is_empty()
        && key.chars().count() <= MAX_KEY_CHARS
        && key.ends_with(".zip")
        && !key.starts_with('.')
        && !key
            .chars()
            .any(|c| c == '/' || c == '\\' || c == '\0' || c.is_control())
}

/// Checks a create name (R11): length first, then the pattern.
pub fn check_name(name: &str) -> Result<(), ErrorKind> {
    if name.chars().count() > MAX_KEY_CHARS {
        return Err(ErrorKind::NameTooLong);
    }
    let stem_is_valid = name.strip_suffix(".zip").is_some_and(|stem| {
        !stem.is_empty()
            && stem
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    });
    if stem_is_valid {
        Ok(())
    } else {
        Err(ErrorKind::NameInvalid)
    }
}

/// Whether `key` is one of the model's stand-ins for a server-generated name.
pub fn is_generated_key(key: &str) -> bool {
    key.strip_prefix(GENERATED_KEY_PREFIX)
        .and_then(|rest| rest.strip_suffix(".zip"))
        .is_some_and(|number| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
}

/// The stand-in for the `index`-th server-generated name (counting from 0).
pub fn generated_key(index: u32) -> String {
    format!("{GENERATED_KEY_PREFIX}{index}.zip")
}

/// The state after `op` and what the server must answer. An op whose precondition fails
/// leaves the state as it is and yields [`Outcome::NOTHING`].
pub fn step(state: &State, op: &Op) -> (State, Outcome) {
    let mut next = state.clone();
    let outcome = next.apply(op);
    (next, outcome)
}

impl State {
    /// A state with these complete backups and nothing running.
    pub fn with_keys<I, K>(keys: I) -> State
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        let keys: BTreeSet<String> = keys.into_iter().map(Into::into).collect();
        State {
            order: keys.iter().cloned().collect(),
            keys,
            ..State::default()
        }
    }

    /// Whether `key` is taken (R10).
    pub fn is_taken(&self, key: &str) -> bool {
        self.keys.contains(key) || matches!(&self.active, Active::Creating(k) if k == key)
    }

    /// The invariants every reachable state keeps.
    pub fn check(&self) -> Result<(), String> {
        if self.order.len() != self.keys.len() || !self.order.iter().all(|k| self.keys.contains(k)) {
            return Err(format!("stored order {:?} is not the stored keys {:?}", self.order, self.keys));
        }
        if let Some(key) = self.keys.iter().find(|key| !is_possible_key(key)) {
            return Err(format!("stored key {key:?} is not a possible key"));
        }
        match &self.active {
            Active::Idle => Ok(()),
            Active::Creating(key) if self.keys.contains(key) => Err(format!(
                "key {key:?} is being created but is already stored"
            )),
            Active::Creating(key) if !is_possible_key(key) => Err(format!(
                "key {key:?} is being created but is not a possible key"
            )),
            Active::Creating(_) => Ok(()),
            Active::Restoring(key) if !self.keys.contains(key) => {
                Err(format!("key {key:?} is being restored but is not stored"))
            }
            Active::Restoring(_) => Ok(()),
        }
    }

    fn apply(&mut self, op: &Op) -> Outcome {
        if !op.precondition(self) {
            return Outcome::NOTHING;
        }
        // R4: the caller comes before everything else and a refusal changes nothing.
        if let Some(refusal) = op.caller().and_then(Caller::refusal) {
            return Outcome::refused(refusal);
        }
        match op {
            Op::List { .. } => Outcome {
                listed: Some(self.keys.clone()),
                ..Outcome::success(200)
            },
            Op::CreateHeld { name, .. } => self.create(name.as_deref(), true),
            Op::Create { name, .. } => self.create(name.as_deref(), false),
            Op::FinishCreate => {
                if let Active::Creating(key) = std::mem::take(&mut self.active) {
                    self.store(key);
                }
                Outcome::success(204)
            }
            Op::Upload { key, valid_zip, .. } => self.upload(key, *valid_zip),
            Op::Delete { key, .. } => self.delete(key),
            Op::RestoreAccepted { key, .. } => self.restore(key),
            // R23: backups are kept across a restore, so the keys do not change.
            Op::FinishRestore => {
                self.active = Active::Idle;
                Outcome::success(200)
            }
            Op::Download { key, .. } => {
                if is_possible_key(key) && self.keys.contains(key.as_str()) {
                    Outcome::success(200)
                } else {
                    Outcome::refused(ErrorKind::NotFound)
                }
            }
            Op::ScheduledRun { key, keep } => self.scheduled_run(key, *keep),
        }
    }

    fn store(&mut self, key: String) {
        self.order.push(key.clone());
        self.keys.insert(key);
    }

    /// A due minute of the schedule: the same exclusivity as a create (skipped, not
    /// queued, while one runs), then the prune, which spares the key a restore is reading.
    fn scheduled_run(&mut self, key: &str, keep: usize) -> Outcome {
        let created = self.active == Active::Idle && !self.is_taken(key);
        if created {
            self.store(key.to_string());
        }
        let autos: Vec<String> = self.order.iter().rev().filter(|k| k.starts_with(AUTO_KEY_PREFIX)).cloned().collect();
        let mut pruned = BTreeSet::new();
        // A keep of 0 (never valid with a cron) prunes nothing.
        let beyond = if keep == 0 { Vec::new() } else { autos.into_iter().skip(keep).collect() };
        for old in beyond {
            if self.active.key() != Some(old.as_str()) && self.remove(&old) {
                pruned.insert(old);
            }
        }
        Outcome {
            scheduled: Some(Scheduled { created, pruned }),
            ..Outcome::NOTHING
        }
    }

    fn remove(&mut self, key: &str) -> bool {
        self.order.retain(|k| k != key);
        self.keys.remove(key)
    }

    /// R15, R11, R12.
    fn create(&mut self, name: Option<&str>, held: bool) -> Outcome {
        if self.active != Active::Idle {
            return Outcome::refused(ErrorKind::BusyCreate);
        }
        let key = match name.filter(|name| !name.is_empty()) {
            Some(name) => {
                if let Err(error) = check_name(name) {
                    return Outcome::refused(error);
                }
                if self.is_taken(name) {
                    return Outcome::refused(ErrorKind::NameExists);
                }
                name.to_string()
            }
            None => self.next_generated_key(),
        };
        if held {
            self.active = Active::Creating(key);
            Outcome {
                held: true,
                ..Outcome::success(204)
            }
        } else {
            self.store(key);
            Outcome::success(204)
        }
    }

    /// R12: like the server's generated names, the stand-ins are never taken.
    fn next_generated_key(&mut self) -> String {
        loop {
            let key = generated_key(self.generated);
            self.generated += 1;
            if !self.is_taken(&key) {
                return key;
            }
        }
    }

    /// R18, R19: not refused by a running create or restore.
    fn upload(&mut self, key: &str, valid_zip: bool) -> Outcome {
        if !is_possible_key(key) {
            return Outcome::refused(ErrorKind::KeyInvalid);
        }
        if !valid_zip {
            return Outcome::refused(ErrorKind::InvalidZip);
        }
        if self.is_taken(key) {
            return Outcome::refused(ErrorKind::NameExists);
        }
        self.store(key.to_string());
        Outcome::success(204)
    }

    /// R20.
    fn delete(&mut self, key: &str) -> Outcome {
        if !is_possible_key(key) {
            return Outcome::refused(ErrorKind::NotFound);
        }
        if self.active.key() == Some(key) {
            return Outcome::refused(ErrorKind::BusyDeleteRestore);
        }
        if self.remove(key) {
            Outcome::success(204)
        } else {
            Outcome::refused(ErrorKind::NotFound)
        }
    }

    /// R21: the model's archives are always valid backups (`valid_zip` is about uploads).
    fn restore(&mut self, key: &str) -> Outcome {
        if !is_possible_key(key) {
            return Outcome::refused(ErrorKind::NotFound);
        }
        if self.active != Active::Idle {
            return Outcome::refused(ErrorKind::BusyDeleteRestore);
        }
        if !self.keys.contains(key) {
            return Outcome::refused(ErrorKind::NotFound);
        }
        self.active = Active::Restoring(key.to_string());
        Outcome::success(204)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SU: Caller = Caller::Superuser;

    fn list() -> Op {
        Op::List { caller: SU }
    }
    fn create(name: &str) -> Op {
        Op::Create {
            caller: SU,
            name: Some(name.to_string()),
        }
    }
    fn create_held(name: Option<&str>) -> Op {
        Op::CreateHeld {
            caller: SU,
            name: name.map(str::to_string),
        }
    }
    fn upload(key: &str, valid_zip: bool) -> Op {
        Op::Upload {
            caller: SU,
            key: key.to_string(),
            valid_zip,
        }
    }
    fn delete(key: &str) -> Op {
        Op::Delete {
            caller: SU,
            key: key.to_string(),
        }
    }
    fn restore(key: &str) -> Op {
        Op::RestoreAccepted {
            caller: SU,
            key: key.to_string(),
        }
    }
    fn download(key: &str) -> Op {
        Op::Download {
            caller: SU,
            key: key.to_string(),
        }
    }

    fn keys(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|key| key.to_string()).collect()
    }

    fn creating(stored: &[&str], key: &str) -> State {
        State {
            active: Active::Creating(key.to_string()),
            ..State::with_keys(stored.iter().copied())
        }
    }

    fn restoring(stored: &[&str], key: &str) -> State {
        State {
            active: Active::Restoring(key.to_string()),
            ..State::with_keys(stored.iter().copied())
        }
    }

    /// Runs `ops` from `state`, checking the invariants after each step.
    fn run(state: &State, ops: &[Op]) -> (State, Vec<Outcome>) {
        let mut state = state.clone();
        let mut outcomes = Vec::new();
        for op in ops {
            let (next, outcome) = step(&state, op);
            assert_eq!(next.check(), Ok(()), "after {op:?}");
            state = next;
            outcomes.push(outcome);
        }
        (state, outcomes)
    }

    fn assert_refused(state: &State, op: &Op, error: ErrorKind) {
        let (next, outcome) = step(state, op);
        assert_eq!(outcome.error, Some(error), "{op:?} in {state:?}");
        assert_eq!(outcome.status, error.status());
        assert_eq!(&next, state, "a refusal changes nothing: {op:?}");
    }

    /// One request of each kind, by `caller`, about `key`.
    fn every_request() -> Vec<fn(Caller, &str) -> Op> {
        vec![
            |caller, _| Op::List { caller },
            |caller, key| Op::CreateHeld {
                caller,
                name: Some(key.to_string()),
            },
            |caller, key| Op::Create {
                caller,
                name: Some(key.to_string()),
            },
            |caller, _| Op::Create { caller, name: None },
            |caller, key| Op::Upload {
                caller,
                key: key.to_string(),
                valid_zip: true,
            },
            |caller, key| Op::Delete {
                caller,
                key: key.to_string(),
            },
            |caller, key| Op::RestoreAccepted {
                caller,
                key: key.to_string(),
            },
            |caller, key| Op::Download {
                caller,
                key: key.to_string(),
            },
        ]
    }

    // R4

    #[test]
    fn anonymous_gets_401_and_user_403_before_anything_else() {
        let states = [
            State::with_keys(["a.zip"]),
            creating(&["a.zip"], "b.zip"),
            restoring(&["a.zip"], "a.zip"),
        ];
        for state in &states {
            for make in every_request() {
                for key in ["a.zip", "new.zip", "a/../b.zip"] {
                    assert_refused(
                        state,
                        &make(Caller::Anonymous, key),
                        ErrorKind::Unauthorized,
                    );
                    assert_refused(state, &make(Caller::User, key), ErrorKind::Forbidden);
                }
            }
        }
    }

    // R11, R15

    #[test]
    fn create_stores_a_valid_new_name() {
        let (state, outcomes) = run(&State::default(), &[create("my_backup-1.zip"), list()]);
        assert_eq!(
            outcomes[0],
            Outcome {
                status: 204,
                error: None,
                listed: None,
                held: false,
                scheduled: None,
            }
        );
        assert_eq!(outcomes[1].listed, Some(keys(&["my_backup-1.zip"])));
        assert_eq!(state.active, Active::Idle);
    }

    #[test]
    fn create_is_refused_as_busy_first_even_with_a_bad_or_taken_name() {
        for state in [
            creating(&["a.zip"], "b.zip"),
            restoring(&["a.zip"], "a.zip"),
        ] {
            for name in ["fresh.zip", "BAD.zip", "a.zip", "b.zip", &"x".repeat(200)] {
                assert_refused(&state, &create(name), ErrorKind::BusyCreate);
                assert_refused(&state, &create_held(Some(name)), ErrorKind::BusyCreate);
            }
            assert_refused(
                &state,
                &Op::Create {
                    caller: SU,
                    name: None,
                },
                ErrorKind::BusyCreate,
            );
        }
    }

    #[test]
    fn create_refuses_names_not_of_the_pattern() {
        let state = State::with_keys(["a.zip"]);
        for name in [
            "A.zip",
            "a.ZIP",
            "a",
            ".zip",
            "a b.zip",
            "a.zip.bak",
            "a.b.zip",
            "ü.zip",
            "a/b.zip",
            "a.zip\n",
        ] {
            assert_refused(&state, &create(name), ErrorKind::NameInvalid);
        }
    }

    #[test]
    fn create_checks_length_before_pattern_and_allows_150() {
        let state = State::default();
        let longest = format!("{}.zip", "a".repeat(MAX_KEY_CHARS - 4));
        assert_eq!(step(&state, &create(&longest)).1.status, 204);
        let too_long = format!("{}.zip", "a".repeat(MAX_KEY_CHARS - 3));
        assert_refused(&state, &create(&too_long), ErrorKind::NameTooLong);
        // Both too long and off-pattern: the length error wins.
        assert_refused(
            &state,
            &create(&"A".repeat(MAX_KEY_CHARS + 1)),
            ErrorKind::NameTooLong,
        );
    }

    #[test]
    fn create_checks_pattern_before_existence() {
        // "A.zip" is a possible key (an upload may store it) but not a valid name.
        let state = State::with_keys(["A.zip"]);
        assert_refused(&state, &create("A.zip"), ErrorKind::NameInvalid);
    }

    #[test]
    fn create_refuses_a_stored_name() {
        assert_refused(
            &State::with_keys(["a.zip"]),
            &create("a.zip"),
            ErrorKind::NameExists,
        );
    }

    #[test]
    fn empty_or_absent_name_gets_distinct_generated_keys() {
        let (state, _) = run(
            &State::default(),
            &[
                Op::Create {
                    caller: SU,
                    name: None,
                },
                Op::Create {
                    caller: SU,
                    name: Some(String::new()),
                },
            ],
        );
        assert_eq!(state.keys, keys(&["generated-0.zip", "generated-1.zip"]));
        for key in &state.keys {
            assert!(is_generated_key(key));
            assert_eq!(check_name(key), Ok(()));
        }
        // A later create may name the generated key, and finds it taken.
        assert_refused(&state, &create("generated-0.zip"), ErrorKind::NameExists);
    }

    #[test]
    fn generated_key_recognition() {
        assert!(is_generated_key(&generated_key(42)));
        for key in [
            "generated-.zip",
            "generated-1a.zip",
            "generated-1.zip.zip",
            "pb_backup_1.zip",
        ] {
            assert!(!is_generated_key(key), "{key}");
        }
    }

    // R13, R15, R16: a held create.

    #[test]
    fn held_create_is_taken_but_not_listed_until_finished() {
        let (state, outcomes) = run(&State::default(), &[create_held(Some("b.zip")), list()]);
        assert_eq!(
            outcomes[0],
            Outcome {
                status: 204,
                error: None,
                listed: None,
                held: true,
                scheduled: None,
            }
        );
        assert_eq!(state.active, Active::Creating("b.zip".to_string()));
        assert_eq!(outcomes[1].listed, Some(BTreeSet::new()));
        assert_refused(&state, &download("b.zip"), ErrorKind::NotFound);
        assert_refused(&state, &upload("b.zip", true), ErrorKind::NameExists);

        let (state, outcomes) = run(&state, &[Op::FinishCreate, list(), download("b.zip")]);
        assert_eq!(outcomes[0], Outcome::success(204));
        assert_eq!(outcomes[1].listed, Some(keys(&["b.zip"])));
        assert_eq!(outcomes[2].status, 200);
        assert_eq!(state.active, Active::Idle);
    }

    #[test]
    fn held_create_without_name_creates_the_generated_key() {
        let (state, outcomes) = run(
            &State::default(),
            &[
                create_held(None),
                upload("generated-0.zip", true),
                Op::FinishCreate,
            ],
        );
        assert_eq!(outcomes[1].error, Some(ErrorKind::NameExists));
        assert_eq!(state.keys, keys(&["generated-0.zip"]));
    }

    #[test]
    fn generated_keys_skip_keys_already_taken() {
        let start = creating(&["generated-0.zip"], "generated-1.zip");
        let (state, _) = run(
            &start,
            &[
                Op::FinishCreate,
                Op::Create {
                    caller: SU,
                    name: None,
                },
            ],
        );
        assert_eq!(
            state.keys,
            keys(&["generated-0.zip", "generated-1.zip", "generated-2.zip"])
        );
    }

    #[test]
    fn held_create_refuses_a_stored_name_and_stays_idle() {
        assert_refused(
            &State::with_keys(["a.zip"]),
            &create_held(Some("a.zip")),
            ErrorKind::NameExists,
        );
    }

    // R18, R19

    #[test]
    fn upload_goes_on_while_a_create_or_restore_runs() {
        for state in [
            creating(&["a.zip"], "b.zip"),
            restoring(&["a.zip"], "a.zip"),
        ] {
            let (next, outcome) = step(&state, &upload("c.zip", true));
            assert_eq!(outcome, Outcome::success(204));
            assert!(next.keys.contains("c.zip"));
            assert_eq!(next.active, state.active);
        }
    }

    #[test]
    fn upload_checks_key_then_zip_then_existence() {
        let state = creating(&["a.zip"], "b.zip");
        // An impossible key is refused even when the file is not a zip either.
        for key in [
            "", "a", ".a.zip", "a/b.zip", "a\\b.zip", "a\0.zip", "a\t.zip", "a.ZIP",
        ] {
            assert_refused(&state, &upload(key, false), ErrorKind::KeyInvalid);
        }
        // Not a zip, under a taken key: the zip error wins.
        assert_refused(&state, &upload("a.zip", false), ErrorKind::InvalidZip);
        assert_refused(&state, &upload("b.zip", false), ErrorKind::InvalidZip);
        assert_refused(&state, &upload("a.zip", true), ErrorKind::NameExists);
        assert_refused(&state, &upload("b.zip", true), ErrorKind::NameExists);
    }

    #[test]
    fn upload_accepts_possible_keys_that_are_not_valid_names() {
        let (next, outcome) = step(&State::default(), &upload("My Backup (1).zip", true));
        assert_eq!(outcome.status, 204);
        assert!(next.keys.contains("My Backup (1).zip"));
    }

    // R9, R20

    #[test]
    fn delete_of_an_impossible_key_is_404() {
        let long = format!("{}.zip", "a".repeat(MAX_KEY_CHARS - 3));
        let state = State::with_keys(["a.zip"]);
        for key in [
            "",
            "..",
            "a",
            ".a.zip",
            "a/b.zip",
            "../a.zip",
            "a\\b.zip",
            "a\0.zip",
            "a\u{7f}.zip",
            "a.zip/",
            long.as_str(),
        ] {
            assert_refused(&state, &delete(key), ErrorKind::NotFound);
        }
    }

    #[test]
    fn delete_of_the_active_key_is_busy_before_not_found() {
        // The key being created is not stored yet: busy, not 404.
        assert_refused(
            &creating(&[], "b.zip"),
            &delete("b.zip"),
            ErrorKind::BusyDeleteRestore,
        );
        assert_refused(
            &restoring(&["a.zip"], "a.zip"),
            &delete("a.zip"),
            ErrorKind::BusyDeleteRestore,
        );
    }

    #[test]
    fn delete_of_other_keys_goes_on_while_busy() {
        for state in [
            creating(&["a.zip", "c.zip"], "b.zip"),
            restoring(&["a.zip", "c.zip"], "a.zip"),
        ] {
            let (next, outcome) = step(&state, &delete("c.zip"));
            assert_eq!(outcome, Outcome::success(204));
            assert!(!next.keys.contains("c.zip"));
            assert_eq!(next.active, state.active);
            assert_refused(&next, &delete("c.zip"), ErrorKind::NotFound);
        }
    }

    #[test]
    fn delete_removes_a_stored_key() {
        let (next, outcome) = step(&State::with_keys(["a.zip", "b.zip"]), &delete("a.zip"));
        assert_eq!(outcome.status, 204);
        assert_eq!(next.keys, keys(&["b.zip"]));
    }

    // R21, R23

    #[test]
    fn restore_checks_key_then_busy_then_existence() {
        let busy = creating(&["a.zip"], "b.zip");
        assert_refused(&busy, &restore("a/b.zip"), ErrorKind::NotFound);
        assert_refused(&busy, &restore("missing.zip"), ErrorKind::BusyDeleteRestore);
        assert_refused(&busy, &restore("a.zip"), ErrorKind::BusyDeleteRestore);
        assert_refused(
            &restoring(&["a.zip"], "a.zip"),
            &restore("a.zip"),
            ErrorKind::BusyDeleteRestore,
        );
        assert_refused(
            &State::with_keys(["a.zip"]),
            &restore("missing.zip"),
            ErrorKind::NotFound,
        );
    }

    #[test]
    fn restore_runs_until_finished_and_keeps_the_keys() {
        let start = State::with_keys(["a.zip", "b.zip"]);
        let (state, outcomes) = run(&start, &[restore("a.zip"), download("a.zip")]);
        assert_eq!(outcomes[0], Outcome::success(204));
        assert_eq!(outcomes[1].status, 200);
        assert_eq!(state.active, Active::Restoring("a.zip".to_string()));
        assert_refused(&state, &create("c.zip"), ErrorKind::BusyCreate);

        let (state, outcomes) = run(&state, &[Op::FinishRestore, list()]);
        assert_eq!(outcomes[0].status, 200);
        assert_eq!(state.active, Active::Idle);
        assert_eq!(outcomes[1].listed, Some(start.keys.clone()));
        assert_eq!(step(&state, &create("c.zip")).1.status, 204);
    }

    // R25

    #[test]
    fn download_needs_a_stored_key() {
        let state = creating(&["a.zip"], "b.zip");
        assert_eq!(step(&state, &download("a.zip")).1, Outcome::success(200));
        assert_refused(&state, &download("b.zip"), ErrorKind::NotFound);
        assert_refused(&state, &download("missing.zip"), ErrorKind::NotFound);
        assert_refused(&state, &download("../a.zip"), ErrorKind::NotFound);
    }

    // Preconditions and invariants.

    #[test]
    fn releases_need_something_held() {
        for (state, op) in [
            (State::default(), Op::FinishCreate),
            (State::default(), Op::FinishRestore),
            (restoring(&["a.zip"], "a.zip"), Op::FinishCreate),
            (creating(&[], "b.zip"), Op::FinishRestore),
        ] {
            assert!(!op.precondition(&state));
            assert_eq!(step(&state, &op), (state.clone(), Outcome::NOTHING));
        }
        assert!(Op::FinishCreate.precondition(&creating(&[], "b.zip")));
        assert!(Op::FinishRestore.precondition(&restoring(&["a.zip"], "a.zip")));
    }

    #[test]
    fn check_rejects_broken_states() {
        assert!(creating(&["b.zip"], "b.zip").check().is_err());
        assert!(creating(&[], "b").check().is_err());
        assert!(restoring(&[], "a.zip").check().is_err());
        assert!(State::with_keys(["../a.zip"]).check().is_err());
        assert_eq!(creating(&["a.zip"], "b.zip").check(), Ok(()));
        assert_eq!(restoring(&["a.zip"], "a.zip").check(), Ok(()));
    }

    #[test]
    fn every_sequence_of_four_steps_keeps_the_invariants() {
        let alphabet = [
            list(),
            create("a.zip"),
            create_held(Some("b.zip")),
            create_held(None),
            Op::FinishCreate,
            upload("a.zip", true),
            upload("b.zip", true),
            upload("generated-0.zip", true),
            delete("a.zip"),
            delete("b.zip"),
            delete("generated-0.zip"),
            restore("a.zip"),
            restore("b.zip"),
            Op::FinishRestore,
        ];
        let mut frontier = vec![State::default()];
        for _ in 0..4 {
            let mut next_frontier = Vec::new();
            for state in &frontier {
                for op in &alphabet {
                    let (next, outcome) = step(state, op);
                    assert_eq!(next.check(), Ok(()), "{op:?} from {state:?}");
                    if let Some(error) = outcome.error {
                        assert_eq!(&next, state, "refused {op:?} changed the state");
                        assert_eq!(outcome.status, error.status());
                    }
                    next_frontier.push(next);
                }
            }
            next_frontier.sort_by_key(|s| format!("{s:?}"));
            next_frontier.dedup();
            frontier = next_frontier;
        }
    }

    // Links to the catalog.

    #[test]
    fn documented_errors_point_at_bodies_with_the_same_message() {
        let cases = [
            (
                Op::List {
                    caller: Caller::Anonymous,
                },
                ErrorKind::Unauthorized,
            ),
            (
                Op::Delete {
                    caller: Caller::User,
                    key: "a.zip".into(),
                },
                ErrorKind::Forbidden,
            ),
            (create("a.zip"), ErrorKind::BusyCreate),
            (delete("b.zip"), ErrorKind::BusyDeleteRestore),
            (restore("a.zip"), ErrorKind::BusyDeleteRestore),
            (download("missing.zip"), ErrorKind::NotFound),
            (upload("c.zip", false), ErrorKind::InvalidZip),
        ];
        let state = creating(&["a.zip"], "b.zip");
        for (op, error) in cases {
            let (_, outcome) = step(&state, &op);
            assert_eq!(outcome.error, Some(error), "{op:?}");
            let documented = outcome.documented(&op).expect("a documented response");
            for lang in Lang::ALL {
                let body = documented.body(lang).expect("error bodies are JSON");
                assert_eq!(
                    body["message"].as_str(),
                    error.message(lang),
                    "{op:?} {lang:?}"
                );
            }
        }
    }

    #[test]
    fn undocumented_errors_have_no_documented_response() {
        let state = State::with_keys(["a.zip"]);
        for op in [
            create("a.zip"),
            create("A.zip"),
            upload("a", true),
            upload("a.zip", true),
        ] {
            let (_, outcome) = step(&state, &op);
            assert!(outcome.error.is_some());
            assert_eq!(outcome.documented(&op), None, "{op:?}");
        }
    }
    fn scheduled(key: &str, keep: usize) -> Op {
        Op::ScheduledRun { key: key.to_string(), keep }
    }

    #[test]
    fn scheduled_runs_keep_the_newest_of_their_own_only() {
        let (a, b, c) = ("@auto_pb_backup_x_1.zip", "@auto_pb_backup_x_2.zip", "@auto_pb_backup_x_3.zip");
        let (state, outcomes) = run(
            &State::with_keys(["manual.zip"]),
            &[scheduled(a, 2), upload("@auto_pb_backup_up.zip", true), scheduled(b, 2), scheduled(c, 2), list()],
        );
        let did = |i: usize| outcomes[i].scheduled.clone().unwrap();
        assert_eq!(did(0), Scheduled { created: true, pruned: keys(&[]) });
        // An upload under the prefix counts as one of them, by its time.
        assert_eq!(did(2), Scheduled { created: true, pruned: keys(&[a]) });
        assert_eq!(did(3), Scheduled { created: true, pruned: keys(&["@auto_pb_backup_up.zip"]) });
        assert_eq!(outcomes[4].listed, Some(keys(&["manual.zip", b, c])));
        assert_eq!(state.order, ["manual.zip", b, c]);
    }

    #[test]
    fn a_busy_scheduled_run_is_skipped_but_still_prunes() {
        let (a, b) = ("@auto_pb_backup_x_1.zip", "@auto_pb_backup_x_2.zip");
        let start = State::with_keys([a, b]);
        let (state, outcome) = step(&creating(&[a, b], "held.zip"), &scheduled("@auto_pb_backup_x_3.zip", 1));
        assert_eq!(outcome.scheduled, Some(Scheduled { created: false, pruned: keys(&[a]) }));
        assert_eq!(state.active, Active::Creating("held.zip".into()));
        // A restore's key is spared: its delete would be refused.
        let (state, outcome) = step(&restoring(&[a, b], a), &scheduled("@auto_pb_backup_x_3.zip", 1));
        assert_eq!(outcome.scheduled, Some(Scheduled { created: false, pruned: keys(&[]) }));
        assert_eq!(state.keys, start.keys);
        // Not a request: nobody is refused it, and no status is expected.
        assert_eq!(outcome.status, 0);
        assert_eq!(scheduled("k", 1).caller(), None);
    }
}

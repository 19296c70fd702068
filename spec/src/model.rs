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
mod tests;

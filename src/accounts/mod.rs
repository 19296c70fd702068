//! The accounts store: PocketBase's auth collections in `<data dir>/data.db`, in PocketBase's
//! own layout (0.23 and later), so that a data dir or a backup moves between PocketBase and
//! this server with its accounts, password hashes and token secrets intact.
//!
//! Auth collections are read from `_collections` (token secrets and lifetimes, and the
//! `mfa`, `otp` and `authAlert` options from their `options`: [`collections`]), records from
//! their tables (`email`, bcrypt `password`: [`credentials`], `tokenKey`). Second factors and login origins live in
//! PocketBase's own tables too ([`mfa`]).
//! A data dir with no tables is initialised in that layout ([`schema`]); one written by
//! pb-backups before it kept PocketBase's layout is converted at open ([`legacy`]).
//! Synchronous: the server calls it from blocking threads.
//!
//! Every `data.db` is foreign here (a restored archive, a PocketBase data dir): it is opened
//! through [`crate::sqlite`] (each operation bounded in time, views and triggers off), the
//! system tables read must be plain tables, and stored hashes are verified only within
//! [`hashes`]' bounds.

mod collections;
mod credentials;
pub mod hashes;
mod legacy;
pub mod mfa;
pub mod rule;
pub mod schema;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::{json, Value};

use crate::layout::{AUX_DB, DATA_DB};
use crate::sqlite::{self, Access, Deadline, ObjectKind};
use hashes::HashRefused;

pub use collections::{AuthAlertOptions, AuthCollection, MfaOptions, OtpOptions};
pub(crate) use collections::TokenSettings;
use collections::{load_auth_collections, IdentityColumn, MAX_AUTH_COLLECTIONS};
use credentials::{
    hash_password, normalize_email, validate_password, verify_stored_password, verify_unknown,
    PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS,
};

const SECRET_LEN: usize = 50;
const ID_LEN: usize = 15;
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// The two auth collections the command line manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    Superusers,
    Users,
}

impl Collection {
    /// Collection name as used in URLs; also the name of its records table.
    pub fn name(self) -> &'static str {
        match self {
            Collection::Superusers => schema::SUPERUSERS,
            Collection::Users => schema::USERS,
        }
    }
}

/// What a rule says of one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleOutcome {
    Allowed,
    Denied,
    /// The rule cannot be evaluated here (or is invalid): treated as a refusal, and the
    /// reason is for the log.
    Unsupported(String),
}

/// Largest value a rule reads from a record (SQLite's length limit while it runs): with the
/// rule's own bounds this bounds its time, whatever the (foreign) table holds.
const MAX_RULE_VALUE: i32 = 1024 * 1024;
/// An account. `token_key` is part of every token's signing key and changes with the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub collection_id: String,
    pub collection_name: String,
    pub email: String,
    pub email_visibility: bool,
    pub verified: bool,
    pub created: String,
    pub updated: String,
    pub(crate) token_key: String,
}

impl Record {
    /// Only records of `_superusers` may use the backups API.
    pub fn is_superuser(&self) -> bool {
        self.collection_name == schema::SUPERUSERS
    }

    /// The record as PocketBase shows it in auth responses.
    pub fn to_json(&self) -> Value {
        json!({
            "collectionId": self.collection_id,
            "collectionName": self.collection_name,
            "created": self.created,
            "email": self.email,
            "emailVisibility": self.email_visibility,
            "id": self.id,
            "updated": self.updated,
            "verified": self.verified,
        })
    }
}

// Hand-written so that the token key never reaches a log line.
impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.id)
            .field("collection", &self.collection_name)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// Why a `data.db` cannot serve as this server's accounts.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("it holds tables but is not a PocketBase data dir (no `_collections` table)")]
    Foreign,
    #[error("it is a PocketBase data dir from before 0.23 (`_admins`); open it once with PocketBase 0.23 or later to upgrade it")]
    BeforePocketBase023,
    #[error("it has no `_superusers` auth collection")]
    NoSuperusersCollection,
    #[error("collection {collection}: unreadable options ({reason})")]
    BadOptions { collection: String, reason: String },
    #[error("collection {collection}: {section}: {reason}")]
    BadAccessOptions { collection: String, section: &'static str, reason: &'static str },
    #[error("collection {collection}: no {kind} secret")]
    NoSecret { collection: String, kind: &'static str },
    #[error("records table of {0} lacks the columns of an auth collection")]
    BadRecordsTable(String),
    #[error("it holds no superuser account, so nobody could log in")]
    NoSuperuser,
    #[error("`{name}` is a {kind}, not a table")]
    NotATable { name: String, kind: &'static str },
    #[error("it has more than {MAX_AUTH_COLLECTIONS} auth collections")]
    TooManyCollections,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("invalid email address")]
    InvalidEmail,
    #[error("password must be {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters")]
    InvalidPassword,
    #[error("no auth collection {0:?}")]
    NoSuchCollection(String),
    #[error("accounts database: {0}")]
    Db(rusqlite::Error),
    /// A statement ran past its operation's [`sqlite::QUERY_BUDGET`] (or the process is stopping).
    #[error("a query on data.db did not finish within its time bound (a view or trigger that never ends?)")]
    TooSlow,
    #[error("data.db: {0}")]
    Layout(#[from] LayoutError),
    #[error("password hashing failed")]
    Hash,
    #[error("stored password hash refused: {0}")]
    RefusedHash(#[from] HashRefused),
}

impl From<rusqlite::Error> for AccountsError {
    fn from(e: rusqlite::Error) -> Self {
        if sqlite::is_interrupted(&e) {
            AccountsError::TooSlow
        } else {
            AccountsError::Db(e)
        }
    }
}

/// What a `data.db` holds, judged by its tables.
#[derive(Debug, PartialEq, Eq)]
enum Layout {
    Empty,
    PocketBase,
    /// pb-backups' own tables from before it kept PocketBase's layout.
    Legacy,
}

fn detect_layout(conn: &Connection) -> Result<Layout, AccountsError> {
    for system in [legacy::SECRETS_TABLE, "_admins", schema::SUPERUSERS, "_collections"] {
        plain_table(conn, system)?;
    }
    let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
    let tables: Vec<String> = stmt.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
    let has = |name: &str| tables.iter().any(|t| t == name);
    Ok(if tables.iter().all(|t| t.starts_with("sqlite_")) {
        Layout::Empty
    } else if has(legacy::SECRETS_TABLE) {
        Layout::Legacy
    } else if has("_admins") && !has(schema::SUPERUSERS) {
        return Err(LayoutError::BeforePocketBase023.into());
    } else if has("_collections") {
        Layout::PocketBase
    } else {
        return Err(LayoutError::Foreign.into());
    })
}

/// The accounts database of one data dir.
pub struct Accounts {
    conn: Mutex<Connection>,
    /// The connection's; armed for each locked section.
    deadline: Deadline,
    budget: Duration,
    /// Read once at open: a restore restarts the server, and collections are not edited here.
    collections: Vec<AuthCollection>,
    otp_attempts: mfa::OtpAttempts,
}

impl Accounts {
    /// Opens `<data_dir>/data.db`: an empty or missing one is initialised in PocketBase's
    /// layout, a legacy pb-backups one converted; anything else must already be a usable
    /// PocketBase data dir. The data dir must exist.
    pub fn open(data_dir: &Path) -> Result<Accounts, AccountsError> {
        Accounts::open_within(data_dir, sqlite::QUERY_BUDGET)
    }

    /// [`Accounts::open`], with `budget` for the opening and then for each operation.
    pub fn open_within(data_dir: &Path, budget: Duration) -> Result<Accounts, AccountsError> {
        let (mut conn, deadline) = sqlite::open(&data_dir.join(DATA_DB), Access::ReadWrite, budget)?;
        // Judged before anything is written, so a database we refuse stays as it was.
        let layout = detect_layout(&conn)?;
        // journal_mode answers with the mode now in force; WAL persists in the file.
        let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        if layout != Layout::PocketBase {
            let tx = conn.transaction()?;
            let (now, micros) = (now_timestamp(), now_micros());
            match layout {
                Layout::Empty => schema::initialize(&tx, &now, micros)?,
                Layout::Legacy => legacy::convert(&tx, &now, micros)?,
                Layout::PocketBase => unreachable!("handled above"),
            }
            tx.commit()?;
            let (aux, _) = sqlite::open(&data_dir.join(AUX_DB), Access::ReadWrite, budget)?;
            aux.pragma_update(None, "journal_mode", "WAL")?;
            aux.execute_batch(schema::AUX_TABLES)?;
            tracing::info!(?layout, "data.db written in PocketBase's layout");
        }
        let collections = load_auth_collections(&conn)?;
        Ok(Accounts { conn: Mutex::new(conn), deadline, budget, collections, otp_attempts: Default::default() })
    }

    /// Auth collection by name or id, as PocketBase's routes take it.
    pub fn collection(&self, name_or_id: &str) -> Option<&AuthCollection> {
        self.collections.iter().find(|c| c.name == name_or_id || c.id == name_or_id)
    }

    fn collection_of(&self, c: Collection) -> Result<&AuthCollection, AccountsError> {
        self.collection(c.name()).ok_or_else(|| AccountsError::NoSuchCollection(c.name().to_string()))
    }

    /// Creates the account, or sets a new password on the existing one with this email
    /// (which also renews its token key, invalidating its tokens).
    pub fn upsert(&self, c: Collection, email: &str, password: &str) -> Result<Record, AccountsError> {
        let collection = self.collection_of(c)?;
        let email = normalize_email(email)?;
        validate_password(password)?;
        // Hash before taking the lock: bcrypt is deliberately slow.
        let password_hash = hash_password(password)?;
        let token_key = random_secret();
        let now = now_timestamp();
        let table = quoted(&collection.name);

        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let existing: Option<String> = tx
            .query_row(&format!("SELECT id FROM {table} WHERE email = ?1 COLLATE NOCASE"), [&email], |r| r.get(0))
            .optional()?;
        let id = match existing {
            Some(id) => {
                tx.execute(
                    &format!("UPDATE {table} SET password = ?1, tokenKey = ?2, updated = ?3 WHERE id = ?4"),
                    params![password_hash, token_key, now, id],
                )?;
                id
            }
            None => {
                let id = random_id();
                tx.execute(
                    &format!(
                        "INSERT INTO {table} (id, email, emailVisibility, verified, password, tokenKey, created, updated)
                         VALUES (?1, ?2, FALSE, TRUE, ?3, ?4, ?5, ?5)"
                    ),
                    params![id, email, password_hash, token_key, now],
                )?;
                id
            }
        };
        let record = find_in(&tx, collection, &id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
        tx.commit()?;
        Ok(record)
    }

    /// Deletes the account with this email; `false` when there was none.
    pub fn delete(&self, c: Collection, email: &str) -> Result<bool, AccountsError> {
        let table = quoted(&self.collection_of(c)?.name);
        let conn = self.lock();
        let deleted = conn.execute(&format!("DELETE FROM {table} WHERE email = ?1 COLLATE NOCASE"), [email])?;
        Ok(deleted > 0)
    }

    pub fn count(&self, c: Collection) -> Result<u64, AccountsError> {
        let table = quoted(&self.collection_of(c)?.name);
        let conn = self.lock();
        let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| row.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The account of `collection` (name or id) when `identity` and `password` match, else
    /// `None`. The identity is searched as PocketBase searches it: in `identity_field` when
    /// given (it must be one of the collection's identity fields), else in `email` first when
    /// it looks like one, then in each identity field in order. A legacy argon2 hash that
    /// matches is replaced by a bcrypt one, so PocketBase can verify it too; the token key stays.
    pub fn authenticate(
        &self,
        collection: &str,
        identity: &str,
        identity_field: Option<&str>,
        password: &str,
    ) -> Result<Option<Record>, AccountsError> {
        let found = match self.collection(collection).filter(|c| c.password_auth) {
            Some(c) => self.find_by_identity(c, identity, identity_field)?,
            None => None,
        };
        let Some((record, hash)) = found else {
            verify_unknown(password)?;
            return Ok(None);
        };
        if !verify_stored_password(&record, password, &hash)? {
            return Ok(None);
        }
        if legacy::is_legacy_hash(&hash) {
            let rehashed = hash_password(password)?;
            let sql = format!("UPDATE {} SET password = ?1 WHERE id = ?2 AND password = ?3", quoted(&record.collection_name));
            self.lock().execute(&sql, params![rehashed, record.id, hash])?;
        }
        Ok(Some(record))
    }

    /// The record and its password hash, by identity.
    fn find_by_identity(
        &self,
        c: &AuthCollection,
        identity: &str,
        identity_field: Option<&str>,
    ) -> Result<Option<(Record, String)>, AccountsError> {
        let columns: Vec<&IdentityColumn> = match identity_field {
            Some(field) => c.identity_columns.iter().filter(|col| col.name == field).collect(),
            None => {
                // PocketBase tries `email` first for an email-like identity and skips it for
                // any other; an identity without `@` cannot be an email.
                let email_like = identity.contains('@');
                let email = c.identity_columns.iter().filter(|col| email_like && col.name == "email");
                let others = c.identity_columns.iter().filter(|col| col.name != "email");
                email.chain(others).collect()
            }
        };
        let conn = self.lock();
        for column in columns {
            let collate = if column.nocase { " COLLATE NOCASE" } else { "" };
            let sql = format!(
                "SELECT {}, password FROM {} WHERE {} = ?1{collate} LIMIT 1",
                c.record_columns,
                quoted(&c.name),
                quoted(&column.name)
            );
            let found = conn.query_row(&sql, [identity], |row| Ok((record_from_row(c, row)?, row.get::<_, String>(7)?)));
            if let Some(found) = found.optional()? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// What `rule` (PocketBase's filter syntax) says of the record `record_id` of `collection`:
    /// an empty rule allows, as in PocketBase. A rule that cannot be evaluated here (see
    /// [`rule`]) is `Unsupported`, which callers must treat as a refusal.
    pub fn record_matches(
        &self,
        collection: &AuthCollection,
        record_id: &str,
        rule: &str,
    ) -> Result<RuleOutcome, AccountsError> {
        if rule.is_empty() {
            return Ok(RuleOutcome::Allowed);
        }
        let condition = match rule::parse(rule).and_then(|f| rule::to_sql(&f, &collection.rule_columns, 2)) {
            Ok(condition) => condition,
            Err(e) => return Ok(RuleOutcome::Unsupported(e.to_string())),
        };
        let sql = format!("SELECT 1 FROM {} AS r WHERE r.id = ?1 AND {} LIMIT 1", quoted(&collection.name), condition.sql);
        let mut params: Vec<&dyn rusqlite::ToSql> = vec![&record_id];
        params.extend(condition.params.iter().map(|p| p as &dyn rusqlite::ToSql));
        let conn = self.lock();
        // A value past the limit fails the query ("too big") instead of being compared.
        let limit = rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH;
        let previous = conn.set_limit(limit, MAX_RULE_VALUE)?;
        let found = conn.query_row(&sql, params.as_slice(), |_| Ok(())).optional();
        conn.set_limit(limit, previous)?;
        Ok(match found {
            Ok(Some(())) => RuleOutcome::Allowed,
            Ok(None) => RuleOutcome::Denied,
            // PocketBase refuses too when its query fails.
            Err(e) => RuleOutcome::Unsupported(format!("evaluation failed: {e}")),
        })
    }

    /// The collection's `authRule` applied to the record: null refuses everyone.
    pub fn auth_rule_allows(&self, collection: &AuthCollection, record_id: &str) -> Result<RuleOutcome, AccountsError> {
        match &collection.auth_rule {
            None => Ok(RuleOutcome::Denied),
            Some(rule) => self.record_matches(collection, record_id, rule),
        }
    }

    /// The account with this record id in the collection with this id.
    pub fn find(&self, collection_id: &str, id: &str) -> Result<Option<Record>, AccountsError> {
        let Some(c) = self.collections.iter().find(|c| c.id == collection_id) else {
            return Ok(None);
        };
        find_in(&self.lock(), c, id)
    }

    /// Counts a one-time password check for `record`; false when it has had its share
    /// (see [`mfa::OtpAttempts`]).
    pub fn otp_attempt(&self, c: &AuthCollection, record: &Record, now: std::time::Instant) -> bool {
        self.otp_attempts.try_acquire(&c.id, &record.id, now)
    }

    /// The emails of the superusers (at most 1000), for system alerts.
    pub fn superuser_emails(&self) -> Result<Vec<String>, AccountsError> {
        let c = self.collection_of(Collection::Superusers)?;
        let conn = self.lock();
        let sql = format!("SELECT substr(email, 1, 254) FROM {} WHERE email != '' ORDER BY created LIMIT 1000", quoted(&c.name));
        let mut stmt = conn.prepare(&sql)?;
        let emails = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(emails)
    }

    /// The connection, for one operation of at most the budget.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic elsewhere cannot leave the connection half-written (SQLite statements
        // are atomic), so a poisoned lock is still safe to use.
        let conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.deadline.arm(self.budget);
        conn
    }
}

/// Checks, without changing it, that the `data.db` at `path` would serve as accounts: a
/// usable `_superusers` collection holding at least one account (or a legacy pb-backups
/// database with a superuser, which open converts). A restore runs this before its 204.
pub fn check_usable(path: &Path) -> Result<(), AccountsError> {
    check_usable_within(path, sqlite::QUERY_BUDGET)
}

/// [`check_usable`], all of it within `budget`.
pub fn check_usable_within(path: &Path, budget: Duration) -> Result<(), AccountsError> {
    let (conn, _deadline) = sqlite::open(path, Access::ReadOnly, budget)?;
    let superusers_table = match detect_layout(&conn)? {
        Layout::Empty => return Err(LayoutError::Foreign.into()),
        Layout::Legacy => legacy::check_usable(&conn)?,
        Layout::PocketBase => {
            let collections = load_auth_collections(&conn)?;
            let superusers = collections.iter().find(|c| c.is_superusers()).ok_or(LayoutError::NoSuperusersCollection)?;
            quoted(&superusers.name)
        }
    };
    // Not COUNT(*): SQLite counts a table's rows in one step that no time bound interrupts.
    let any: bool = conn.query_row(&format!("SELECT EXISTS (SELECT 1 FROM {superusers_table})"), [], |r| r.get(0))?;
    if !any {
        return Err(LayoutError::NoSuperuser.into());
    }
    Ok(())
}

/// The columns of a [`Record`], in [`record_from_row`]'s order. `created` and `updated` are
/// ordinary fields of an auth collection in PocketBase (one made through its API may have
/// neither): read as `''` when the table has no such column.
fn record_columns(table_columns: &[String]) -> String {
    ["id", "email", "emailVisibility", "verified", "created", "updated", "tokenKey"]
        .iter()
        .map(|name| match *name {
            "created" | "updated" if !table_columns.iter().any(|c| c == name) => format!("'' AS {name}"),
            _ => quoted(name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Expects [`record_columns`] first.
fn record_from_row(c: &AuthCollection, row: &Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        id: row.get(0)?,
        collection_id: c.id.clone(),
        collection_name: c.name.clone(),
        email: row.get(1)?,
        email_visibility: row.get(2)?,
        verified: row.get(3)?,
        created: row.get(4)?,
        updated: row.get(5)?,
        token_key: row.get(6)?,
    })
}

fn find_in(conn: &Connection, c: &AuthCollection, id: &str) -> Result<Option<Record>, AccountsError> {
    let sql = format!("SELECT {} FROM {} WHERE id = ?1", c.record_columns, quoted(&c.name));
    Ok(conn.query_row(&sql, [id], |row| record_from_row(c, row)).optional()?)
}

/// Whether `name` is a plain table (`false`: nothing of that name). A view or virtual table
/// in its place is refused: reading it runs whatever the file brought, without end.
fn plain_table(conn: &Connection, name: &str) -> Result<bool, AccountsError> {
    match sqlite::object_kind(conn, name)? {
        None => Ok(false),
        Some(ObjectKind::Table) => Ok(true),
        Some(kind) => Err(LayoutError::NotATable { name: name.to_string(), kind: kind.as_str() }.into()),
    }
}

/// A table name as an SQL identifier. Collection names come from the database itself.
fn quoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn random_secret() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), SECRET_LEN)
}

/// A record id as PocketBase makes them: 15 of `[a-z0-9]`.
pub fn random_record_id() -> String {
    random_id()
}

fn random_id() -> String {
    let mut rng = rand::rng();
    (0..ID_LEN).map(|_| char::from(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())])).collect()
}

/// Now in PocketBase's datetime format, e.g. `2023-05-19 16:25:57.542Z`.
fn now_timestamp() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `_migrations.applied` is in microseconds since the epoch.
fn now_micros() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1000).unwrap_or(i64::MAX)
}

//! The accounts store: the `_superusers` and `users` auth collections and their token
//! secrets, kept in `<data dir>/data.db` (SQLite, WAL mode so that the backup code can
//! snapshot it while the server runs). Passwords are stored as argon2id PHC strings.
//! Synchronous: the server calls it from blocking threads.

use std::fmt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::distr::{Alphanumeric, SampleString};
use rand::{Rng, RngCore};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::json;

/// File name of the accounts database inside the data dir.
pub const DATA_DB_FILE: &str = "data.db";

/// Bumped whenever the schema below changes, so that later versions can migrate.
const SCHEMA_VERSION: i64 = 1;

const SECRET_LEN: usize = 50;
const ID_LEN: usize = 15;
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const PASSWORD_MIN_CHARS: usize = 8;
const PASSWORD_MAX_CHARS: usize = 72;
const EMAIL_MAX_CHARS: usize = 254;

/// Hash of a random password, made with `Argon2::default()` parameters. Verified against
/// when an identity is unknown, so that a login costs the same whether the email exists.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$TqwZMXowkomA9YhfHFiAYQ$G7wvVOnGUaTo0rOGsVKAFaxY0sUZF1r/naR4Dlhfmkc";

/// One of the two auth collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    Superusers,
    Users,
}

impl Collection {
    pub const ALL: [Collection; 2] = [Collection::Superusers, Collection::Users];

    /// PocketBase's collection id (also the `collectionId` token claim).
    pub fn id(self) -> &'static str {
        match self {
            Collection::Superusers => "pbc_3142635823",
            Collection::Users => "_pb_users_auth_",
        }
    }

    /// Collection name as used in URLs; also the name of its records table.
    pub fn name(self) -> &'static str {
        match self {
            Collection::Superusers => "_superusers",
            Collection::Users => "users",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.id() == id)
    }
}

/// An account. `token_key` is part of every token's signing key and changes with the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub collection: Collection,
    pub email: String,
    pub created: String,
    pub updated: String,
    pub(crate) token_key: String,
}

impl Record {
    /// The record as PocketBase shows it in auth responses.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "collectionId": self.collection.id(),
            "collectionName": self.collection.name(),
            "created": self.created,
            "email": self.email,
            "emailVisibility": false,
            "id": self.id,
            "updated": self.updated,
            "verified": true,
        })
    }
}

// Hand-written so that the token key never reaches a log line.
impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.id)
            .field("collection", &self.collection)
            .field("email", &self.email)
            .field("created", &self.created)
            .field("updated", &self.updated)
            .finish_non_exhaustive()
    }
}

/// A collection's two token secrets (second half of the signing keys).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct CollectionSecrets {
    pub(crate) auth: String,
    pub(crate) file: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("invalid email address")]
    InvalidEmail,
    #[error("password must be {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters")]
    InvalidPassword,
    #[error("accounts database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("password hashing failed")]
    Hash,
}

/// The accounts database of one data dir.
pub struct Accounts {
    conn: Mutex<Connection>,
    /// Read once at open: secrets never change while the process runs (a restore restarts it).
    superusers_secrets: CollectionSecrets,
    users_secrets: CollectionSecrets,
}

impl Accounts {
    /// Opens (creating if needed) `<data_dir>/data.db`. The data dir must exist.
    pub fn open(data_dir: &Path) -> Result<Accounts, AccountsError> {
        let mut conn = Connection::open(data_dir.join(DATA_DB_FILE))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // journal_mode answers with the mode now in force; WAL persists in the file.
        let _mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;

        let tx = conn.transaction()?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS _collection_secrets (
                collection_id TEXT PRIMARY KEY NOT NULL,
                auth_secret   TEXT NOT NULL,
                file_secret   TEXT NOT NULL
            );",
        )?;
        for c in Collection::ALL {
            tx.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    id            TEXT PRIMARY KEY NOT NULL,
                    email         TEXT NOT NULL UNIQUE,
                    password_hash TEXT NOT NULL,
                    token_key     TEXT NOT NULL,
                    created       TEXT NOT NULL,
                    updated       TEXT NOT NULL
                );",
                table = c.name()
            ))?;
            tx.execute(
                "INSERT OR IGNORE INTO _collection_secrets (collection_id, auth_secret, file_secret)
                 VALUES (?1, ?2, ?3)",
                params![c.id(), random_secret(), random_secret()],
            )?;
        }
        let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version < SCHEMA_VERSION {
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        tx.commit()?;

        let superusers_secrets = load_secrets(&conn, Collection::Superusers)?;
        let users_secrets = load_secrets(&conn, Collection::Users)?;
        Ok(Accounts {
            conn: Mutex::new(conn),
            superusers_secrets,
            users_secrets,
        })
    }

    /// Creates the account, or sets a new password on the existing one with this email
    /// (which also rotates its token key, invalidating its tokens).
    pub fn upsert(
        &self,
        c: Collection,
        email: &str,
        password: &str,
    ) -> Result<Record, AccountsError> {
        let email = normalize_email(email)?;
        validate_password(password)?;
        // Hash before taking the lock: argon2 is deliberately slow.
        let password_hash = hash_password(password)?;
        let token_key = random_secret();
        let now = now_timestamp();

        let conn = self.lock();
        let sql = format!(
            "INSERT INTO {table} (id, email, password_hash, token_key, created, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (email) DO UPDATE SET
                password_hash = excluded.password_hash,
                token_key = excluded.token_key,
                updated = excluded.updated
             RETURNING id, email, token_key, created, updated",
            table = c.name()
        );
        let record = conn.query_row(
            &sql,
            params![random_id(), email, password_hash, token_key, now],
            |row| record_from_row(c, row),
        )?;
        Ok(record)
    }

    /// Deletes the account with this email; `false` when there was none.
    pub fn delete(&self, c: Collection, email: &str) -> Result<bool, AccountsError> {
        let conn = self.lock();
        let sql = format!("DELETE FROM {} WHERE email = ?1", c.name());
        let deleted = conn.execute(&sql, params![email.to_lowercase()])?;
        Ok(deleted > 0)
    }

    pub fn count(&self, c: Collection) -> Result<u64, AccountsError> {
        let conn = self.lock();
        let sql = format!("SELECT COUNT(*) FROM {}", c.name());
        let n: i64 = conn.query_row(&sql, [], |row| row.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The account when `identity` (an email, any case) and `password` match, else `None`.
    pub fn authenticate(
        &self,
        c: Collection,
        identity: &str,
        password: &str,
    ) -> Result<Option<Record>, AccountsError> {
        let found = {
            let conn = self.lock();
            let sql = format!(
                "SELECT id, email, token_key, created, updated, password_hash
                 FROM {} WHERE email = ?1",
                c.name()
            );
            conn.query_row(&sql, params![identity.to_lowercase()], |row| {
                Ok((record_from_row(c, row)?, row.get::<_, String>(5)?))
            })
            .optional()?
        };
        match found {
            Some((record, hash)) => Ok(verify_password(password, &hash)?.then_some(record)),
            None => {
                verify_password(password, DUMMY_HASH)?;
                Ok(None)
            }
        }
    }

    /// The account with this record id.
    pub fn find(&self, c: Collection, id: &str) -> Result<Option<Record>, AccountsError> {
        let conn = self.lock();
        let sql = format!(
            "SELECT id, email, token_key, created, updated FROM {} WHERE id = ?1",
            c.name()
        );
        Ok(conn
            .query_row(&sql, params![id], |row| record_from_row(c, row))
            .optional()?)
    }

    pub(crate) fn secrets(&self, c: Collection) -> &CollectionSecrets {
        match c {
            Collection::Superusers => &self.superusers_secrets,
            Collection::Users => &self.users_secrets,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic elsewhere cannot leave the connection half-written (SQLite statements
        // are atomic), so a poisoned lock is still safe to use.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn load_secrets(conn: &Connection, c: Collection) -> Result<CollectionSecrets, rusqlite::Error> {
    conn.query_row(
        "SELECT auth_secret, file_secret FROM _collection_secrets WHERE collection_id = ?1",
        params![c.id()],
        |row| {
            Ok(CollectionSecrets {
                auth: row.get(0)?,
                file: row.get(1)?,
            })
        },
    )
}

/// Expects columns `id, email, token_key, created, updated` first.
fn record_from_row(c: Collection, row: &Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        id: row.get(0)?,
        collection: c,
        email: row.get(1)?,
        token_key: row.get(2)?,
        created: row.get(3)?,
        updated: row.get(4)?,
    })
}

/// Lowercased email when it looks like `local@domain` (no spaces or control characters).
fn normalize_email(email: &str) -> Result<String, AccountsError> {
    let (local, domain) = email.split_once('@').ok_or(AccountsError::InvalidEmail)?;
    let well_formed = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.chars().count() <= EMAIL_MAX_CHARS
        && !email
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control());
    if well_formed {
        Ok(email.to_lowercase())
    } else {
        Err(AccountsError::InvalidEmail)
    }
}

fn validate_password(password: &str) -> Result<(), AccountsError> {
    let len = password.chars().count();
    if (PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&len) {
        Ok(())
    } else {
        Err(AccountsError::InvalidPassword)
    }
}

fn hash_password(password: &str) -> Result<String, AccountsError> {
    let mut salt_bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|_| AccountsError::Hash)?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|_| AccountsError::Hash)?;
    Ok(hash.to_string())
}

/// `Ok(false)` on a wrong password; `Err` only when the stored hash is unreadable.
fn verify_password(password: &str, phc: &str) -> Result<bool, AccountsError> {
    let parsed = PasswordHash::new(phc).map_err(|_| AccountsError::Hash)?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(_) => Err(AccountsError::Hash),
    }
}

fn random_secret() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), SECRET_LEN)
}

fn random_id() -> String {
    let mut rng = rand::rng();
    (0..ID_LEN)
        .map(|_| char::from(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())]))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open_temp() -> (tempfile::TempDir, Accounts) {
        let dir = tempfile::tempdir().expect("tempdir");
        let accounts = Accounts::open(dir.path()).expect("open");
        (dir, accounts)
    }

    #[test]
    fn collections_round_trip_by_name_and_id() {
        for c in Collection::ALL {
            assert_eq!(Collection::from_name(c.name()), Some(c));
            assert_eq!(Collection::from_id(c.id()), Some(c));
        }
        assert_eq!(Collection::from_name("pbc_3142635823"), None);
        assert_eq!(Collection::from_id("users"), None);
    }

    #[test]
    fn upsert_creates_a_record() {
        let (_dir, accounts) = open_temp();
        let r = accounts
            .upsert(Collection::Superusers, "Admin@Example.com", "password123")
            .unwrap();
        assert_eq!(r.email, "admin@example.com");
        assert_eq!(r.collection, Collection::Superusers);
        assert_eq!(r.id.len(), ID_LEN);
        assert!(r.id.bytes().all(|b| ID_ALPHABET.contains(&b)));
        assert_eq!(r.token_key.len(), SECRET_LEN);
        assert_eq!(r.created, r.updated);
        assert_eq!(accounts.count(Collection::Superusers).unwrap(), 1);
        assert_eq!(accounts.count(Collection::Users).unwrap(), 0);
        assert_eq!(
            accounts.find(Collection::Superusers, &r.id).unwrap(),
            Some(r.clone())
        );
        assert_eq!(accounts.find(Collection::Users, &r.id).unwrap(), None);
    }

    #[test]
    fn timestamps_use_pocketbase_format() {
        let (_dir, accounts) = open_temp();
        let r = accounts
            .upsert(Collection::Users, "a@b.c", "password123")
            .unwrap();
        let format = time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        assert!(
            time::PrimitiveDateTime::parse(&r.created, format).is_ok(),
            "{}",
            r.created
        );
    }

    #[test]
    fn second_upsert_changes_password_and_token_key() {
        let (_dir, accounts) = open_temp();
        let first = accounts
            .upsert(Collection::Users, "u@example.com", "first-password")
            .unwrap();
        let second = accounts
            .upsert(Collection::Users, "U@EXAMPLE.COM", "second-password")
            .unwrap();
        assert_eq!(second.id, first.id);
        assert_eq!(second.created, first.created);
        assert_ne!(second.token_key, first.token_key);
        assert_eq!(accounts.count(Collection::Users).unwrap(), 1);
        let c = Collection::Users;
        assert_eq!(
            accounts
                .authenticate(c, "u@example.com", "first-password")
                .unwrap(),
            None
        );
        assert_eq!(
            accounts
                .authenticate(c, "u@example.com", "second-password")
                .unwrap(),
            Some(second)
        );
    }

    #[test]
    fn same_email_in_both_collections_is_two_accounts() {
        let (_dir, accounts) = open_temp();
        let s = accounts
            .upsert(Collection::Superusers, "x@y.z", "password-s")
            .unwrap();
        let u = accounts
            .upsert(Collection::Users, "x@y.z", "password-u")
            .unwrap();
        assert_ne!(s.id, u.id);
        assert!(accounts
            .authenticate(Collection::Superusers, "x@y.z", "password-u")
            .unwrap()
            .is_none());
        assert!(accounts
            .authenticate(Collection::Users, "x@y.z", "password-u")
            .unwrap()
            .is_some());
    }

    #[test]
    fn authenticate_right_wrong_and_missing() {
        let (_dir, accounts) = open_temp();
        let c = Collection::Superusers;
        let r = accounts
            .upsert(c, "admin@example.com", "correct-horse")
            .unwrap();
        assert_eq!(
            accounts
                .authenticate(c, "ADMIN@example.com", "correct-horse")
                .unwrap(),
            Some(r)
        );
        assert_eq!(
            accounts
                .authenticate(c, "admin@example.com", "Correct-horse")
                .unwrap(),
            None
        );
        assert_eq!(
            accounts
                .authenticate(c, "nobody@example.com", "correct-horse")
                .unwrap(),
            None
        );
        assert_eq!(accounts.authenticate(c, "", "").unwrap(), None);
    }

    #[test]
    fn dummy_hash_uses_the_same_parameters_as_real_hashes() {
        let real = hash_password("some-password").unwrap();
        let real = PasswordHash::new(&real).unwrap();
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
    }

    #[test]
    fn delete_removes_only_that_account() {
        let (_dir, accounts) = open_temp();
        let c = Collection::Users;
        accounts.upsert(c, "a@example.com", "password-a").unwrap();
        let b = accounts.upsert(c, "b@example.com", "password-b").unwrap();
        assert!(accounts.delete(c, "A@Example.com").unwrap());
        assert!(!accounts.delete(c, "a@example.com").unwrap());
        assert!(!accounts
            .delete(Collection::Superusers, "b@example.com")
            .unwrap());
        assert_eq!(accounts.count(c).unwrap(), 1);
        assert_eq!(
            accounts
                .authenticate(c, "a@example.com", "password-a")
                .unwrap(),
            None
        );
        assert_eq!(accounts.find(c, &b.id).unwrap(), Some(b));
    }

    #[test]
    fn invalid_emails_are_refused() {
        let (_dir, accounts) = open_temp();
        let long = format!("{}@example.com", "a".repeat(250));
        for email in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a b@example.com",
            "a@b@c",
            "a@.com",
            "a@b.",
            "a\n@b",
            long.as_str(),
        ] {
            let err = accounts
                .upsert(Collection::Users, email, "password123")
                .unwrap_err();
            assert!(
                matches!(err, AccountsError::InvalidEmail),
                "{email:?}: {err:?}"
            );
        }
        assert_eq!(accounts.count(Collection::Users).unwrap(), 0);
    }

    #[test]
    fn password_length_is_checked_in_characters() {
        let (_dir, accounts) = open_temp();
        let c = Collection::Users;
        for bad in ["", "1234567", &"x".repeat(73)] {
            let err = accounts.upsert(c, "a@b.c", bad).unwrap_err();
            assert!(
                matches!(err, AccountsError::InvalidPassword),
                "{}: {err:?}",
                bad.len()
            );
        }
        accounts.upsert(c, "a@b.c", "12345678").unwrap();
        // 72 two-byte characters: 144 bytes, still within the limit.
        let wide = "é".repeat(72);
        accounts.upsert(c, "a@b.c", &wide).unwrap();
        assert!(accounts.authenticate(c, "a@b.c", &wide).unwrap().is_some());
    }

    #[test]
    fn reopening_keeps_records_and_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let (record, superusers_secrets, users_secrets) = {
            let accounts = Accounts::open(dir.path()).unwrap();
            let r = accounts
                .upsert(Collection::Superusers, "a@b.c", "password123")
                .unwrap();
            (
                r,
                accounts.secrets(Collection::Superusers).clone(),
                accounts.secrets(Collection::Users).clone(),
            )
        };
        let accounts = Accounts::open(dir.path()).unwrap();
        assert_eq!(
            accounts.find(Collection::Superusers, &record.id).unwrap(),
            Some(record)
        );
        assert!(accounts.secrets(Collection::Superusers) == &superusers_secrets);
        assert!(accounts.secrets(Collection::Users) == &users_secrets);
    }

    #[test]
    fn secrets_are_random_and_distinct() {
        let (_dir, a) = open_temp();
        let (_dir2, b) = open_temp();
        let s = a.secrets(Collection::Superusers);
        let u = a.secrets(Collection::Users);
        for secret in [&s.auth, &s.file, &u.auth, &u.file] {
            assert_eq!(secret.len(), SECRET_LEN);
            assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
        assert_ne!(s.auth, s.file);
        assert_ne!(s.auth, u.auth);
        assert_ne!(s.auth, b.secrets(Collection::Superusers).auth);
    }

    #[test]
    fn database_is_in_wal_mode_with_a_schema_version() {
        let (dir, _accounts) = open_temp();
        let conn = Connection::open(dir.path().join(DATA_DB_FILE)).unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn record_json_has_pocketbase_shape() {
        let (_dir, accounts) = open_temp();
        let r = accounts
            .upsert(Collection::Users, "a@b.c", "password123")
            .unwrap();
        let v = r.to_json();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "collectionId",
                "collectionName",
                "created",
                "email",
                "emailVisibility",
                "id",
                "updated",
                "verified"
            ]
        );
        assert_eq!(v["collectionId"], "_pb_users_auth_");
        assert_eq!(v["collectionName"], "users");
        assert_eq!(v["id"], r.id.as_str());
        assert_eq!(v["email"], "a@b.c");
        assert!(!format!("{r:?}").contains(&r.token_key));
    }
}

//! Data dirs written by pb-backups before it kept PocketBase's layout: tables
//! `_collection_secrets`, `_superusers` and `users` with `password_hash` (argon2id) and
//! `token_key`. Converted once at open, keeping record ids, token keys and secrets (so
//! tokens issued before stay valid); argon2 hashes keep verifying here and are replaced by
//! bcrypt on the account's next login, after which PocketBase can verify them too.

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use std::sync::Mutex;
use rusqlite::{params, Connection, Transaction};

use super::{schema, AccountsError, LayoutError};

pub const SECRETS_TABLE: &str = "_collection_secrets";
const LEGACY_COLUMNS: &str = "id, email, password_hash, token_key, created, updated";
/// The collection ids the legacy layout used, the same as PocketBase's.
const LEGACY_COLLECTIONS: [(&str, &str); 2] = [(schema::SUPERUSERS, "pbc_3142635823"), (schema::USERS, "_pb_users_auth_")];

pub fn is_legacy_hash(hash: &str) -> bool {
    hash.starts_with("$argon2")
}

/// One argon2 check at a time, whatever the caller allows for bcrypt: each takes 19 MiB, and
/// these hashes only exist until their accounts next log in.
static ARGON2_AT_ONCE: Mutex<()> = Mutex::new(());

pub fn verify_password(password: &str, phc: &str) -> Result<bool, AccountsError> {
    let parsed = PasswordHash::new(phc).map_err(|_| AccountsError::Hash)?;
    let _one = ARGON2_AT_ONCE.lock().unwrap_or_else(|p| p.into_inner());
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(_) => Err(AccountsError::Hash),
    }
}

/// The legacy superusers table, if it has the legacy columns and secrets for both collections.
pub fn check_usable(conn: &Connection) -> Result<String, AccountsError> {
    let bad_table = |_| LayoutError::BadRecordsTable(schema::SUPERUSERS.to_string());
    conn.prepare(&format!("SELECT {LEGACY_COLUMNS} FROM {} LIMIT 0", schema::SUPERUSERS)).map_err(bad_table)?;
    for (name, id) in LEGACY_COLLECTIONS {
        secrets(conn, id).map_err(|_| LayoutError::NoSecret { collection: name.to_string(), kind: "authToken" })?;
    }
    Ok(schema::SUPERUSERS.to_string())
}

fn secrets(conn: &Connection, collection_id: &str) -> rusqlite::Result<(String, String)> {
    conn.query_row(
        &format!("SELECT auth_secret, file_secret FROM {SECRETS_TABLE} WHERE collection_id = ?1"),
        [collection_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Rewrites a legacy database in PocketBase's layout inside `tx`.
pub fn convert(tx: &Transaction<'_>, now: &str, now_micros: i64) -> Result<(), AccountsError> {
    check_usable(tx)?;
    for (name, _) in LEGACY_COLLECTIONS {
        tx.execute_batch(&format!("ALTER TABLE `{name}` RENAME TO `_legacy_{name}`"))?;
    }
    schema::initialize(tx, now, now_micros)?;
    for (name, id) in LEGACY_COLLECTIONS {
        let (auth, file) = secrets(tx, id)?;
        tx.execute(
            "UPDATE _collections SET options = json_set(options, '$.authToken.secret', ?1, '$.fileToken.secret', ?2)
             WHERE id = ?3",
            params![auth, file, id],
        )?;
        tx.execute_batch(&format!(
            "INSERT INTO `{name}` (id, email, emailVisibility, verified, password, tokenKey, created, updated)
             SELECT id, email, FALSE, TRUE, password_hash, token_key, created, updated FROM `_legacy_{name}`;
             DROP TABLE `_legacy_{name}`;"
        ))?;
    }
    tx.execute_batch(&format!("DROP TABLE {SECRETS_TABLE}; PRAGMA user_version = 0;"))?;
    Ok(())
}

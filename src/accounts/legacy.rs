//! Data dirs written by pb-backups before it kept PocketBase's layout: tables
//! `_collection_secrets`, `_superusers` and `users` with `password_hash` (argon2id) and
//! `token_key`. Converted once at open, keeping record ids, token keys and secrets (so
//! tokens issued before stay valid); argon2 hashes keep verifying here and are replaced by
//! bcrypt on the account's next login, after which PocketBase can verify them too.

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Mutex;
use rusqlite::{params, Connection, Transaction};

use super::hashes::HashRefused;
use super::{schema, AccountsError, LayoutError};

pub const SECRETS_TABLE: &str = "_collection_secrets";
const LEGACY_COLUMNS: &str = "id, email, password_hash, token_key, created, updated";
/// The collection ids the legacy layout used, the same as PocketBase's.
const LEGACY_COLLECTIONS: [(&str, &str); 2] = [(schema::SUPERUSERS, "pbc_3142635823"), (schema::USERS, "_pb_users_auth_")];

pub fn is_legacy_hash(hash: &str) -> bool {
    hash.starts_with("$argon2")
}

/// What the legacy layout wrote: argon2id, version 19, the argon2 crate's default cost
/// (19 MiB, two passes, one lane). Verified only up to that cost: a hash's own parameters set
/// the cost of checking it, and a crafted one asks for terabytes or hours.
const LEGACY_ARGON2_M_KIB: u32 = 19 * 1024;
const LEGACY_ARGON2_T: u32 = 2;
const LEGACY_ARGON2_P: u32 = 1;

/// One argon2 check at a time, whatever the caller allows for bcrypt: each takes 19 MiB, and
/// these hashes only exist until their accounts next log in.
static ARGON2_AT_ONCE: Mutex<()> = Mutex::new(());

pub fn verify_password(password: &str, phc: &str) -> Result<bool, HashRefused> {
    let parsed = PasswordHash::new(phc).map_err(|_| HashRefused::Argon2("unreadable"))?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(HashRefused::Argon2("no salt or digest"));
    }
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(HashRefused::Argon2("not argon2id"));
    }
    if parsed.version.is_some_and(|v| v != u32::from(Version::V0x13)) {
        return Err(HashRefused::Argon2("not version 19"));
    }
    let params = Params::try_from(&parsed).map_err(|_| HashRefused::Argon2("unreadable parameters"))?;
    let (m_kib, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
    if m_kib > LEGACY_ARGON2_M_KIB || t > LEGACY_ARGON2_T || p > LEGACY_ARGON2_P {
        return Err(HashRefused::Argon2Cost { m_kib, t, p });
    }
    let _one = ARGON2_AT_ONCE.lock().unwrap_or_else(|p| p.into_inner());
    match Argon2::new(Algorithm::Argon2id, Version::V0x13, params).verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(_) => Err(HashRefused::Argon2("unreadable")),
    }
}

/// The legacy superusers table, if it has the legacy columns and secrets for both collections.
pub fn check_usable(conn: &Connection) -> Result<String, AccountsError> {
    for table in [SECRETS_TABLE, schema::SUPERUSERS, schema::USERS] {
        super::plain_table(conn, table)?;
    }
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

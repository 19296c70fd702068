//! Emails and passwords as PocketBase takes them: the email's form, the password's length,
//! bcrypt at PocketBase's cost, and verification that costs the same for an unknown identity
//! or a stored hash that is refused ([`super::hashes`]).

use std::sync::LazyLock;

use super::{hashes, random_secret, AccountsError, Record, SECRET_LEN};

pub(super) const PASSWORD_MIN_CHARS: usize = 8;
pub(super) const PASSWORD_MAX_CHARS: usize = 72;
const EMAIL_MAX_CHARS: usize = 254;
/// PocketBase's bcrypt cost for record passwords.
const BCRYPT_COST: u32 = 10;

/// A bcrypt hash (cost 10) of a random password, made once. Verified against when an
/// identity is unknown, so that a login costs the same whether the email exists.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password(&random_secret()[..PASSWORD_MAX_CHARS.min(SECRET_LEN)]).unwrap_or_default());

/// Lowercased email when it looks like `local@domain` (no spaces or control characters).
pub(super) fn normalize_email(email: &str) -> Result<String, AccountsError> {
    let (local, domain) = email.split_once('@').ok_or(AccountsError::InvalidEmail)?;
    let well_formed = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.chars().count() <= EMAIL_MAX_CHARS
        && !email.chars().any(|ch| ch.is_whitespace() || ch.is_control());
    if well_formed {
        Ok(email.to_lowercase())
    } else {
        Err(AccountsError::InvalidEmail)
    }
}

pub(super) fn validate_password(password: &str) -> Result<(), AccountsError> {
    let len = password.chars().count();
    // bcrypt reads at most 72 bytes: a longer password would match on its prefix alone.
    if (PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&len) && password.len() <= 72 {
        Ok(())
    } else {
        Err(AccountsError::InvalidPassword)
    }
}

/// A `$2a$10$` bcrypt hash, as PocketBase writes them.
pub(super) fn hash_password(password: &str) -> Result<String, AccountsError> {
    let parts = bcrypt::hash_with_result(password, BCRYPT_COST).map_err(|_| AccountsError::Hash)?;
    Ok(parts.format_for_version(bcrypt::Version::TwoA))
}

/// `Ok(false)` on a wrong password; [`AccountsError::RefusedHash`] when the stored hash is
/// unreadable or costs more than [`hashes`] allows (then nothing was hashed).
pub(super) fn verify_password(password: &str, hash: &str) -> Result<bool, AccountsError> {
    Ok(hashes::verify(password, hash)?)
}

/// Whether `password` matches `record`'s stored `hash`. A refused hash fails the login; the
/// log names the record and why (never the hash), and the login costs what one for an
/// unknown identity does.
pub(super) fn verify_stored_password(record: &Record, password: &str, hash: &str) -> Result<bool, AccountsError> {
    match verify_password(password, hash) {
        Err(AccountsError::RefusedHash(why)) => {
            tracing::warn!(collection = %record.collection_name, record = %record.id, reason = %why, "stored password hash refused; the login fails");
            verify_unknown(password)?;
            Ok(false)
        }
        verified => verified,
    }
}

/// Verifies `password` against a hash of nothing anyone knows, so that a login for an unknown
/// identity costs what one for a known identity does.
pub(super) fn verify_unknown(password: &str) -> Result<(), AccountsError> {
    verify_password(password, &DUMMY_HASH).map(drop)
}

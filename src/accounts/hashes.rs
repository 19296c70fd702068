//! Which stored password hashes this server verifies, and at what cost. A hash carries its
//! own cost, and it comes from a `data.db` someone else may have written: verified as
//! written, one login could take hours or terabytes. So the cost is read first and bounded:
//! bcrypt up to [`MAX_BCRYPT_COST`], argon2 only in the form our legacy layout wrote
//! ([`super::legacy`]). Anything else is refused before any hashing starts.
//!
//! A legacy data dir is converted to PocketBase's layout at open, keeping each argon2 hash
//! until its account next logs in (and in any backup made meanwhile). So the legacy form is
//! what marks a legacy hash, whatever the layout around it: argon2id, version 19, at most the
//! legacy cost. PocketBase itself writes only bcrypt.

use super::legacy;

/// PocketBase writes cost 10 (about 80 ms here); each step doubles the work, so 14 takes
/// about 1.3 s and 15 already 2.6 s.
pub const MAX_BCRYPT_COST: u32 = 14;

/// Why a stored hash is not verified. Never holds the hash itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashRefused {
    #[error("bcrypt cost {0} is above {MAX_BCRYPT_COST}")]
    BcryptCost(u32),
    #[error("argon2 hash other than the legacy layout's ({0})")]
    Argon2(&'static str),
    #[error("argon2 cost m={m_kib} KiB, t={t}, p={p} is above the legacy layout's")]
    Argon2Cost { m_kib: u32, t: u32, p: u32 },
    #[error("not a bcrypt hash")]
    Unreadable,
}

/// Whether `password` matches `hash`: any bcrypt variant (`2a`, `2b`, `2x`, `2y`) up to
/// [`MAX_BCRYPT_COST`], or a legacy argon2 hash within its bounds.
pub fn verify(password: &str, hash: &str) -> Result<bool, HashRefused> {
    if legacy::is_legacy_hash(hash) {
        return legacy::verify_password(password, hash);
    }
    let parts: bcrypt::HashParts = hash.parse().map_err(|_| HashRefused::Unreadable)?;
    if parts.get_cost() > MAX_BCRYPT_COST {
        return Err(HashRefused::BcryptCost(parts.get_cost()));
    }
    // A cost below bcrypt's minimum of 4 is an error here, not a match.
    bcrypt::verify(password, hash).map_err(|_| HashRefused::Unreadable)
}

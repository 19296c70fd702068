//! Auth and file tokens: HS256 JWTs signed exactly as PocketBase signs them. The key is the
//! record's `tokenKey` followed by its collection's auth or file secret, and the lifetime is
//! the collection's, so tokens PocketBase issued for a data dir are valid here and ours there;
//! a password change or an account deletion invalidates the record's tokens. The clock is
//! passed in (`now_unix`).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::accounts::{AccountsError, AuthCollection, Accounts, Record, TokenSettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Auth,
    File,
}

impl TokenKind {
    /// Value of the `type` claim.
    pub fn claim(self) -> &'static str {
        match self {
            TokenKind::Auth => "auth",
            TokenKind::File => "file",
        }
    }

    fn from_claim(claim: &str) -> Option<Self> {
        match claim {
            "auth" => Some(TokenKind::Auth),
            "file" => Some(TokenKind::File),
            _ => None,
        }
    }

    /// This kind's secret and lifetime in collection `c`.
    fn settings(self, c: &AuthCollection) -> &TokenSettings {
        match self {
            TokenKind::Auth => &c.auth_token,
            TokenKind::File => &c.file_token,
        }
    }
}

/// Why a token was refused; for the log only, clients always get the same 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    /// Not three base64url parts, bad JSON, missing or mistyped claims, unexpected header.
    Malformed,
    /// `alg` is anything but HS256 (including `none`).
    BadAlgorithm,
    /// Unknown collection id, or no record with that id (deleted).
    UnknownRecord,
    /// Signature does not match the record's current key (forged, tampered, password changed).
    BadSignature,
    Expired,
    /// An auth token where a file token is expected, or the reverse.
    WrongType,
}

impl InvalidReason {
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::Malformed => "malformed",
            InvalidReason::BadAlgorithm => "bad_algorithm",
            InvalidReason::UnknownRecord => "unknown_record",
            InvalidReason::BadSignature => "bad_signature",
            InvalidReason::Expired => "expired",
            InvalidReason::WrongType => "wrong_type",
        }
    }
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is not acceptable: always the documented 401.
    #[error("invalid token: {reason}")]
    Invalid { reason: InvalidReason },
    /// The accounts store failed while checking a token: a server error, not the client's.
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    #[error("token signing failed: {0}")]
    Signing(jsonwebtoken::errors::Error),
}

impl AuthError {
    fn invalid(reason: InvalidReason) -> Self {
        AuthError::Invalid { reason }
    }
}

/// The claims, in the order PocketBase sends them.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(rename = "collectionId")]
    collection_id: String,
    exp: u64,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    refreshable: Option<bool>,
    #[serde(rename = "type")]
    kind: String,
}

/// The only header we accept; anything else in it (`kid`, `jku`, `crit` …) is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    alg: String,
    typ: String,
}

/// How long a token of `kind` for `record` lives, from its collection's options.
pub fn lifetime_secs(accounts: &Accounts, record: &Record, kind: TokenKind) -> Result<u64, AuthError> {
    Ok(kind.settings(collection_of(accounts, record)?).duration_secs)
}

fn collection_of<'a>(accounts: &'a Accounts, record: &Record) -> Result<&'a AuthCollection, AuthError> {
    accounts.collection(&record.collection_id).ok_or(AuthError::invalid(InvalidReason::UnknownRecord))
}

/// A signed token of `kind` for `record`, expiring its collection's lifetime after `now_unix`.
pub fn issue(
    accounts: &Accounts,
    record: &Record,
    kind: TokenKind,
    now_unix: u64,
) -> Result<String, AuthError> {
    let collection = collection_of(accounts, record)?;
    let claims = Claims {
        collection_id: record.collection_id.clone(),
        exp: now_unix.saturating_add(kind.settings(collection).duration_secs),
        id: record.id.clone(),
        refreshable: (kind == TokenKind::Auth).then_some(true),
        kind: kind.claim().to_owned(),
    };
    let key = signing_key(collection, record, kind);
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&key),
    )
    .map_err(AuthError::Signing)
}

/// The record a valid, unexpired token of `kind` was issued for.
pub fn verify(
    accounts: &Accounts,
    token: &str,
    kind: TokenKind,
    now_unix: u64,
) -> Result<Record, AuthError> {
    use InvalidReason::*;

    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::invalid(Malformed));
    };

    let header: RawHeader = decode_json_part(header_b64)?;
    if header.alg != "HS256" {
        return Err(AuthError::invalid(BadAlgorithm));
    }
    if header.typ != "JWT" {
        return Err(AuthError::invalid(Malformed));
    }

    // Unverified: only used to find which key the signature must match.
    let unverified: Claims = decode_json_part(claims_b64)?;
    let collection =
        accounts.collection(&unverified.collection_id).ok_or(AuthError::invalid(UnknownRecord))?;
    // Collections are addressed by id in tokens; a name in the claim is not PocketBase's form.
    if collection.id != unverified.collection_id {
        return Err(AuthError::invalid(UnknownRecord));
    }
    // The key depends on the claimed type; a signature made for one type never verifies
    // under the other, and the type is checked against `kind` once it is authenticated.
    let claimed_kind =
        TokenKind::from_claim(&unverified.kind).ok_or(AuthError::invalid(WrongType))?;
    let record = accounts
        .find(&collection.id, &unverified.id)?
        .ok_or(AuthError::invalid(UnknownRecord))?;

    let key = signing_key(collection, &record, claimed_kind);
    let claims =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&key), &validation())
            .map_err(|e| {
                AuthError::invalid(match e.kind() {
                    ErrorKind::InvalidSignature => BadSignature,
                    ErrorKind::InvalidAlgorithm => BadAlgorithm,
                    _ => Malformed,
                })
            })?
            .claims;
    // Both parses read the same bytes; differing results would mean a lenient decoder somewhere.
    if claims.id != unverified.id
        || claims.collection_id != unverified.collection_id
        || claims.kind != unverified.kind
    {
        return Err(AuthError::invalid(Malformed));
    }
    // Zero leeway; as in RFC 7519 the token is valid only strictly before `exp`.
    if now_unix >= claims.exp {
        return Err(AuthError::invalid(Expired));
    }
    if claimed_kind != kind {
        return Err(AuthError::invalid(WrongType));
    }
    Ok(record)
}

/// Signature check only: `exp` is checked by `verify` against the injected clock, so
/// jsonwebtoken never reads the system time.
fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.leeway = 0;
    v.required_spec_claims.clear();
    v
}

fn signing_key(collection: &AuthCollection, record: &Record, kind: TokenKind) -> Vec<u8> {
    [record.token_key.as_bytes(), kind.settings(collection).secret.as_bytes()].concat()
}

fn decode_json_part<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, AuthError> {
    let bytes = base64url_decode(part).ok_or(AuthError::invalid(InvalidReason::Malformed))?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::invalid(InvalidReason::Malformed))
}

/// Strict unpadded base64url (RFC 4648 §5), as JWTs use: the `base64` engine refuses
/// padding and non-zero leftover bits, so each token has one encoding only. The header is
/// read before jsonwebtoken parses the token, because jsonwebtoken cannot represent `alg: none`.
fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(input).ok()
}

#[cfg(test)]
mod tests;

//! Auth and file tokens: HS256 JWTs in PocketBase's shape. The signing key is the record's
//! token key followed by its collection's auth or file secret, so a password change or an
//! account deletion invalidates the record's tokens. The clock is passed in (`now_unix`).

use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::accounts::{Accounts, AccountsError, Collection, Record};

/// Lifetime of a superuser's auth token.
pub const SUPERUSER_AUTH_TOKEN_SECS: u64 = 24 * 60 * 60;
/// Lifetime of a regular user's auth token.
pub const USER_AUTH_TOKEN_SECS: u64 = 14 * 24 * 60 * 60;
/// Lifetime of a file token (any collection).
pub const FILE_TOKEN_SECS: u64 = 3 * 60;

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

    /// How long a token of this kind lives for a record of collection `c`.
    pub fn lifetime_secs(self, c: Collection) -> u64 {
        match (self, c) {
            (TokenKind::Auth, Collection::Superusers) => SUPERUSER_AUTH_TOKEN_SECS,
            (TokenKind::Auth, Collection::Users) => USER_AUTH_TOKEN_SECS,
            (TokenKind::File, _) => FILE_TOKEN_SECS,
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

/// A signed token of `kind` for `record`, expiring `kind.lifetime_secs` after `now_unix`.
pub fn issue(
    accounts: &Accounts,
    record: &Record,
    kind: TokenKind,
    now_unix: u64,
) -> Result<String, AuthError> {
    let claims = Claims {
        collection_id: record.collection.id().to_owned(),
        exp: now_unix.saturating_add(kind.lifetime_secs(record.collection)),
        id: record.id.clone(),
        refreshable: (kind == TokenKind::Auth).then_some(true),
        kind: kind.claim().to_owned(),
    };
    let key = signing_key(accounts, record, kind);
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
        Collection::from_id(&unverified.collection_id).ok_or(AuthError::invalid(UnknownRecord))?;
    // The key depends on the claimed type; a signature made for one type never verifies
    // under the other, and the type is checked against `kind` once it is authenticated.
    let claimed_kind =
        TokenKind::from_claim(&unverified.kind).ok_or(AuthError::invalid(WrongType))?;
    let record = accounts
        .find(collection, &unverified.id)?
        .ok_or(AuthError::invalid(UnknownRecord))?;

    let key = signing_key(accounts, &record, claimed_kind);
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

fn signing_key(accounts: &Accounts, record: &Record, kind: TokenKind) -> Vec<u8> {
    let secrets = accounts.secrets(record.collection);
    let secret = match kind {
        TokenKind::Auth => &secrets.auth,
        TokenKind::File => &secrets.file,
    };
    [record.token_key.as_bytes(), secret.as_bytes()].concat()
}

fn decode_json_part<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, AuthError> {
    let bytes = base64url_decode(part).ok_or(AuthError::invalid(InvalidReason::Malformed))?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::invalid(InvalidReason::Malformed))
}

/// Strict unpadded base64url (RFC 4648 §5), as JWTs use. jsonwebtoken does not expose its
/// decoder, and the header must be read before jsonwebtoken's own parsing, which cannot
/// represent `alg: none`.
fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        }
    }
    let bytes = input.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | value(c)?;
        }
        let bits = chunk.len() * 6;
        let full_bytes = bits / 8;
        let spare_bits = bits % 8;
        // Leftover bits must be zero, so that each token has one encoding only.
        if acc & ((1 << spare_bits) - 1) != 0 {
            return None;
        }
        let acc = acc >> spare_bits;
        for i in (0..full_bytes).rev() {
            out.push((acc >> (8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const NOW: u64 = 1_700_000_000;

    struct Fixture {
        _dir: tempfile::TempDir,
        accounts: Accounts,
        superuser: Record,
        user: Record,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let accounts = Accounts::open(dir.path()).expect("open");
        let superuser = accounts
            .upsert(Collection::Superusers, "admin@example.com", "password-1")
            .unwrap();
        let user = accounts
            .upsert(Collection::Users, "user@example.com", "password-2")
            .unwrap();
        Fixture {
            _dir: dir,
            accounts,
            superuser,
            user,
        }
    }

    fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let mut buf = [0u8; 3];
            buf[..chunk.len()].copy_from_slice(chunk);
            let n = (u32::from(buf[0]) << 16) | (u32::from(buf[1]) << 8) | u32::from(buf[2]);
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }

    fn b64_json(v: &Value) -> String {
        b64(&serde_json::to_vec(v).unwrap())
    }

    fn parts(token: &str) -> Vec<String> {
        token.split('.').map(str::to_owned).collect()
    }

    fn payload(token: &str) -> Value {
        serde_json::from_slice(&base64url_decode(&parts(token)[1]).unwrap()).unwrap()
    }

    fn reason(result: Result<Record, AuthError>) -> InvalidReason {
        match result {
            Err(AuthError::Invalid { reason }) => reason,
            other => panic!("expected an invalid token, got {other:?}"),
        }
    }

    /// A token with our claims for `record`, signed with the right key but under `alg`.
    fn signed_with(f: &Fixture, record: &Record, alg: Algorithm) -> String {
        let claims = Claims {
            collection_id: record.collection.id().to_owned(),
            exp: NOW + 60,
            id: record.id.clone(),
            refreshable: Some(true),
            kind: "auth".to_owned(),
        };
        let key = signing_key(&f.accounts, record, TokenKind::Auth);
        jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(&key)).unwrap()
    }

    #[test]
    fn base64url_round_trips_and_rejects_non_canonical_input() {
        for len in 0..40u8 {
            let data: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(37).wrapping_add(200))
                .collect();
            assert_eq!(base64url_decode(&b64(&data)), Some(data));
        }
        assert_eq!(base64url_decode("QQ"), Some(b"A".to_vec()));
        assert_eq!(base64url_decode("QR"), None, "non-zero leftover bits");
        assert_eq!(base64url_decode("QQ=="), None, "padding");
        assert_eq!(base64url_decode("Q"), None);
        assert_eq!(base64url_decode("a+b/"), None, "standard alphabet");
    }

    #[test]
    fn valid_auth_and_file_tokens_verify() {
        let f = fixture();
        for record in [&f.superuser, &f.user] {
            for kind in [TokenKind::Auth, TokenKind::File] {
                let token = issue(&f.accounts, record, kind, NOW).unwrap();
                let found = verify(&f.accounts, &token, kind, NOW).unwrap();
                assert_eq!(&found, record);
                // Still valid in the last second of its life.
                let last = NOW + kind.lifetime_secs(record.collection) - 1;
                assert_eq!(&verify(&f.accounts, &token, kind, last).unwrap(), record);
            }
        }
    }

    #[test]
    fn claims_are_exactly_pocketbase_s() {
        let f = fixture();
        let auth = issue(&f.accounts, &f.superuser, TokenKind::Auth, NOW).unwrap();
        assert_eq!(
            payload(&auth),
            json!({"collectionId": "pbc_3142635823", "exp": NOW + SUPERUSER_AUTH_TOKEN_SECS,
                   "id": f.superuser.id, "refreshable": true, "type": "auth"})
        );
        let user_auth = issue(&f.accounts, &f.user, TokenKind::Auth, NOW).unwrap();
        assert_eq!(payload(&user_auth)["exp"], NOW + USER_AUTH_TOKEN_SECS);
        assert_eq!(payload(&user_auth)["collectionId"], "_pb_users_auth_");
        let file = issue(&f.accounts, &f.user, TokenKind::File, NOW).unwrap();
        assert_eq!(
            payload(&file),
            json!({"collectionId": "_pb_users_auth_", "exp": NOW + FILE_TOKEN_SECS,
                   "id": f.user.id, "type": "file"})
        );
        let header: Value =
            serde_json::from_slice(&base64url_decode(&parts(&file)[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "HS256", "typ": "JWT"}));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let f = fixture();
        for kind in [TokenKind::Auth, TokenKind::File] {
            let token = issue(&f.accounts, &f.user, kind, NOW).unwrap();
            let exp = NOW + kind.lifetime_secs(Collection::Users);
            assert_eq!(
                reason(verify(&f.accounts, &token, kind, exp)),
                InvalidReason::Expired
            );
            assert_eq!(
                reason(verify(&f.accounts, &token, kind, exp + 1)),
                InvalidReason::Expired
            );
        }
    }

    #[test]
    fn alg_none_is_refused() {
        let f = fixture();
        let token = issue(&f.accounts, &f.superuser, TokenKind::Auth, NOW).unwrap();
        let claims = &parts(&token)[1];
        let header = b64_json(&json!({"alg": "none", "typ": "JWT"}));
        for forged in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
            let got = verify(&f.accounts, &forged, TokenKind::Auth, NOW);
            // Two parts is not even a JWT; three with an empty signature is `alg: none`.
            let expected = if forged.ends_with('.') {
                InvalidReason::BadAlgorithm
            } else {
                InvalidReason::Malformed
            };
            assert_eq!(reason(got), expected, "{forged}");
        }
        let lowercase_hs = b64_json(&json!({"alg": "hs256", "typ": "JWT"}));
        let forged = format!("{lowercase_hs}.{claims}.{}", parts(&token)[2]);
        assert_eq!(
            reason(verify(&f.accounts, &forged, TokenKind::Auth, NOW)),
            InvalidReason::BadAlgorithm
        );
    }

    #[test]
    fn other_algorithms_are_refused_even_with_the_right_key() {
        let f = fixture();
        let hs512 = signed_with(&f, &f.superuser, Algorithm::HS512);
        assert_eq!(
            reason(verify(&f.accounts, &hs512, TokenKind::Auth, NOW)),
            InvalidReason::BadAlgorithm
        );
        let hs384 = signed_with(&f, &f.superuser, Algorithm::HS384);
        assert_eq!(
            reason(verify(&f.accounts, &hs384, TokenKind::Auth, NOW)),
            InvalidReason::BadAlgorithm
        );

        // RS256 header on a token whose signature is an HMAC with the secret key (key confusion).
        let good = issue(&f.accounts, &f.superuser, TokenKind::Auth, NOW).unwrap();
        let p = parts(&good);
        let rs256 = b64_json(&json!({"alg": "RS256", "typ": "JWT"}));
        let forged = format!("{rs256}.{}.{}", p[1], p[2]);
        assert_eq!(
            reason(verify(&f.accounts, &forged, TokenKind::Auth, NOW)),
            InvalidReason::BadAlgorithm
        );
    }

    #[test]
    fn unexpected_header_fields_are_refused() {
        let f = fixture();
        let good = issue(&f.accounts, &f.superuser, TokenKind::Auth, NOW).unwrap();
        let p = parts(&good);
        for header in [
            json!({"alg": "HS256"}),
            json!({"alg": "HS256", "typ": "JOSE"}),
            json!({"alg": "HS256", "typ": "JWT", "kid": "x"}),
            json!({"alg": "HS256", "typ": "JWT", "crit": ["exp"]}),
        ] {
            let forged = format!("{}.{}.{}", b64_json(&header), p[1], p[2]);
            assert_eq!(
                reason(verify(&f.accounts, &forged, TokenKind::Auth, NOW)),
                InvalidReason::Malformed,
                "{header}"
            );
        }
    }

    #[test]
    fn wrong_key_is_refused() {
        let f = fixture();
        let claims = json!({"collectionId": "pbc_3142635823", "exp": NOW + 60,
                            "id": f.superuser.id, "refreshable": true, "type": "auth"});
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"not the key"),
        )
        .unwrap();
        assert_eq!(
            reason(verify(&f.accounts, &forged, TokenKind::Auth, NOW)),
            InvalidReason::BadSignature
        );

        // Right token key with the file secret in place of the auth secret.
        let key = signing_key(&f.accounts, &f.superuser, TokenKind::File);
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&key),
        )
        .unwrap();
        assert_eq!(
            reason(verify(&f.accounts, &forged, TokenKind::Auth, NOW)),
            InvalidReason::BadSignature
        );
    }

    #[test]
    fn tampered_payload_is_refused() {
        let f = fixture();
        let other = f
            .accounts
            .upsert(Collection::Users, "other@example.com", "password-3")
            .unwrap();
        let token = issue(&f.accounts, &f.user, TokenKind::Auth, NOW).unwrap();
        let p = parts(&token);
        let mut claims = payload(&token);

        claims["id"] = json!(other.id);
        let forged = format!("{}.{}.{}", p[0], b64_json(&claims), p[2]);
        assert_eq!(
            reason(verify(&f.accounts, &forged, TokenKind::Auth, NOW)),
            InvalidReason::BadSignature
        );

        let mut longer = payload(&token);
        longer["exp"] = json!(NOW + 10 * USER_AUTH_TOKEN_SECS);
        let forged = format!("{}.{}.{}", p[0], b64_json(&longer), p[2]);
        assert_eq!(
            reason(verify(&f.accounts, &forged, TokenKind::Auth, NOW)),
            InvalidReason::BadSignature
        );
    }

    #[test]
    fn user_token_under_the_superusers_collection_id_is_refused() {
        let f = fixture();
        let token = issue(&f.accounts, &f.user, TokenKind::Auth, NOW).unwrap();
        let p = parts(&token);
        let mut claims = payload(&token);
        claims["collectionId"] = json!(Collection::Superusers.id());
        let forged = format!("{}.{}.{}", p[0], b64_json(&claims), p[2]);
        assert_eq!(
            reason(verify(&f.accounts, &forged, TokenKind::Auth, NOW)),
            InvalidReason::UnknownRecord
        );

        // Pointing at the real superuser instead changes the signed bytes.
        claims["id"] = json!(f.superuser.id);
        let forged = format!("{}.{}.{}", p[0], b64_json(&claims), p[2]);
        assert_eq!(
            reason(verify(&f.accounts, &forged, TokenKind::Auth, NOW)),
            InvalidReason::BadSignature
        );

        claims["collectionId"] = json!("no_such_collection");
        let forged = format!("{}.{}.{}", p[0], b64_json(&claims), p[2]);
        assert_eq!(
            reason(verify(&f.accounts, &forged, TokenKind::Auth, NOW)),
            InvalidReason::UnknownRecord
        );
    }

    #[test]
    fn file_and_auth_tokens_are_not_interchangeable() {
        let f = fixture();
        let file = issue(&f.accounts, &f.superuser, TokenKind::File, NOW).unwrap();
        assert_eq!(
            reason(verify(&f.accounts, &file, TokenKind::Auth, NOW)),
            InvalidReason::WrongType
        );
        let auth = issue(&f.accounts, &f.superuser, TokenKind::Auth, NOW).unwrap();
        assert_eq!(
            reason(verify(&f.accounts, &auth, TokenKind::File, NOW)),
            InvalidReason::WrongType
        );

        // Relabelling an auth token as a file token breaks its signature.
        let p = parts(&auth);
        let mut claims = payload(&auth);
        claims["type"] = json!("file");
        let forged = format!("{}.{}.{}", p[0], b64_json(&claims), p[2]);
        assert_eq!(
            reason(verify(&f.accounts, &forged, TokenKind::File, NOW)),
            InvalidReason::BadSignature
        );
        claims["type"] = json!("refresh");
        let forged = format!("{}.{}.{}", p[0], b64_json(&claims), p[2]);
        assert_eq!(
            reason(verify(&f.accounts, &forged, TokenKind::Auth, NOW)),
            InvalidReason::WrongType
        );
    }

    #[test]
    fn token_of_a_deleted_record_is_refused() {
        let f = fixture();
        let auth = issue(&f.accounts, &f.user, TokenKind::Auth, NOW).unwrap();
        let file = issue(&f.accounts, &f.user, TokenKind::File, NOW).unwrap();
        assert!(f.accounts.delete(Collection::Users, &f.user.email).unwrap());
        assert_eq!(
            reason(verify(&f.accounts, &auth, TokenKind::Auth, NOW)),
            InvalidReason::UnknownRecord
        );
        assert_eq!(
            reason(verify(&f.accounts, &file, TokenKind::File, NOW)),
            InvalidReason::UnknownRecord
        );
    }

    #[test]
    fn token_issued_before_a_password_change_is_refused() {
        let f = fixture();
        let auth = issue(&f.accounts, &f.superuser, TokenKind::Auth, NOW).unwrap();
        let file = issue(&f.accounts, &f.superuser, TokenKind::File, NOW).unwrap();
        let updated = f
            .accounts
            .upsert(Collection::Superusers, "admin@example.com", "new-password")
            .unwrap();
        assert_eq!(
            reason(verify(&f.accounts, &auth, TokenKind::Auth, NOW)),
            InvalidReason::BadSignature
        );
        assert_eq!(
            reason(verify(&f.accounts, &file, TokenKind::File, NOW)),
            InvalidReason::BadSignature
        );
        let fresh = issue(&f.accounts, &updated, TokenKind::Auth, NOW).unwrap();
        assert_eq!(
            verify(&f.accounts, &fresh, TokenKind::Auth, NOW).unwrap(),
            updated
        );
    }

    #[test]
    fn tokens_survive_reopening_the_store() {
        let f = fixture();
        let token = issue(&f.accounts, &f.superuser, TokenKind::Auth, NOW).unwrap();
        let reopened = Accounts::open(f._dir.path()).unwrap();
        assert_eq!(
            verify(&reopened, &token, TokenKind::Auth, NOW).unwrap(),
            f.superuser
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let f = fixture();
        let good = issue(&f.accounts, &f.superuser, TokenKind::Auth, NOW).unwrap();
        let p = parts(&good);
        let cases = [
            String::new(),
            "garbage".to_owned(),
            "a.b.c".to_owned(),
            "..".to_owned(),
            "Bearer x.y.z".to_owned(),
            format!("{good}.extra"),
            format!("{}.{}", p[0], p[1]),
            format!("{}.{}.{}", p[0], p[1], "!!!"),
            format!("{}.{}.{}", p[0], b64(b"not json"), p[2]),
            format!(
                "{}.{}.{}",
                p[0],
                b64_json(&json!({"id": f.superuser.id})),
                p[2]
            ),
            format!("{}.{}.{}", p[0], b64_json(&json!([1, 2])), p[2]),
            format!("{}.{}.{}", b64(b"{"), p[1], p[2]),
            "\u{0}\u{1}.\u{ff}.é".to_owned(),
        ];
        for token in cases {
            assert_eq!(
                reason(verify(&f.accounts, &token, TokenKind::Auth, NOW)),
                InvalidReason::Malformed,
                "{token:?}"
            );
        }
        // exp of the wrong type is malformed even when the rest is right.
        let mut claims = payload(&good);
        claims["exp"] = json!("tomorrow");
        let forged = format!("{}.{}.{}", p[0], b64_json(&claims), p[2]);
        assert_eq!(
            reason(verify(&f.accounts, &forged, TokenKind::Auth, NOW)),
            InvalidReason::Malformed
        );
    }
}

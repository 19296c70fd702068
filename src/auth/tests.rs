//! Unit tests of token issue and verification.

use super::*;
use crate::accounts::Collection;
use serde_json::{json, Value};

const NOW: u64 = 1_700_000_000;
/// PocketBase's default lifetimes, which a data dir we initialise carries.
const SUPERUSER_AUTH_SECS: u64 = 86_400;
const USER_AUTH_SECS: u64 = 432_000;
const FILE_TOKEN_SECS: u64 = 180;

fn key_of(f: &Fixture, record: &Record, kind: TokenKind) -> Vec<u8> {
    signing_key(f.accounts.collection(&record.collection_id).unwrap(), record, kind)
}

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
    URL_SAFE_NO_PAD.encode(bytes)
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
        collection_id: record.collection_id.clone(),
        exp: NOW + 60,
        id: record.id.clone(),
        refreshable: Some(true),
        kind: "auth".to_owned(),
    };
    let key = key_of(f, record, TokenKind::Auth);
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
            let last = NOW + lifetime_secs(&f.accounts, record, kind).unwrap() - 1;
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
        json!({"collectionId": "pbc_3142635823", "exp": NOW + SUPERUSER_AUTH_SECS,
               "id": f.superuser.id, "refreshable": true, "type": "auth"})
    );
    let user_auth = issue(&f.accounts, &f.user, TokenKind::Auth, NOW).unwrap();
    assert_eq!(payload(&user_auth)["exp"], NOW + USER_AUTH_SECS);
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
        let exp = NOW + lifetime_secs(&f.accounts, &f.user, kind).unwrap();
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
    let key = key_of(&f, &f.superuser, TokenKind::File);
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
    longer["exp"] = json!(NOW + 10 * USER_AUTH_SECS);
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
    claims["collectionId"] = json!("pbc_3142635823");
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

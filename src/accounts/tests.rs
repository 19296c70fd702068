//! Unit tests of the accounts store in PocketBase's layout.

use super::*;
use hashes::HashRefused;

const SU: &str = schema::SUPERUSERS;
const USERS: &str = schema::USERS;

fn open_temp() -> (tempfile::TempDir, Accounts) {
    let dir = tempfile::tempdir().expect("tempdir");
    let accounts = Accounts::open(dir.path()).expect("open");
    (dir, accounts)
}

fn collection_id(accounts: &Accounts, name: &str) -> String {
    accounts.collection(name).unwrap().id.clone()
}

#[test]
fn a_new_data_dir_has_pocketbase_s_collections_and_ids() {
    let (dir, accounts) = open_temp();
    assert_eq!(collection_id(&accounts, SU), "pbc_3142635823");
    assert_eq!(collection_id(&accounts, USERS), "_pb_users_auth_");
    assert_eq!(accounts.collection("pbc_3142635823").unwrap().name, SU);
    assert!(accounts.collection("_mfas").is_none(), "base collections are not auth collections");
    let conn = Connection::open(dir.path().join(DATA_DB)).unwrap();
    let mut stmt = conn.prepare("SELECT id, name FROM _collections ORDER BY name").unwrap();
    let rows: Vec<(String, String)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    // The ids PocketBase 0.40.6 gives its system collections.
    let expected = [
        ("pbc_4275539003", "_authOrigins"),
        ("pbc_2281828961", "_externalAuths"),
        ("pbc_2279338944", "_mfas"),
        ("pbc_1638494021", "_otps"),
        ("pbc_3142635823", "_superusers"),
        ("_pb_users_auth_", "users"),
    ];
    let rows: Vec<(&str, &str)> = rows.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(rows, expected);
    let migrations: i64 = conn.query_row("SELECT COUNT(*) FROM _migrations", [], |r| r.get(0)).unwrap();
    assert_eq!(migrations, schema::APPLIED_MIGRATIONS.len() as i64);
    let settings: String = conn.query_row("SELECT value FROM _params WHERE id = 'settings'", [], |r| r.get(0)).unwrap();
    let settings: Value = serde_json::from_str(&settings).unwrap();
    assert_eq!(settings["backups"]["cron"], "");
    assert!(dir.path().join(AUX_DB).exists());
}

#[test]
fn field_ids_follow_pocketbase_s_rule() {
    assert_eq!(schema::derived_id("text", "id"), "text3208210256");
    assert_eq!(schema::derived_id("password", "password"), "password901924565");
}

#[test]
fn upsert_creates_a_record_with_a_bcrypt_hash() {
    let (dir, accounts) = open_temp();
    let r = accounts.upsert(Collection::Superusers, "Admin@Example.com", "password123").unwrap();
    assert_eq!(r.email, "admin@example.com");
    assert!(r.is_superuser());
    assert_eq!(r.collection_id, "pbc_3142635823");
    assert_eq!(r.id.len(), ID_LEN);
    assert!(r.id.bytes().all(|b| ID_ALPHABET.contains(&b)));
    assert_eq!(r.token_key.len(), SECRET_LEN);
    assert_eq!(r.created, r.updated);
    assert_eq!(accounts.count(Collection::Superusers).unwrap(), 1);
    assert_eq!(accounts.count(Collection::Users).unwrap(), 0);
    assert_eq!(accounts.find("pbc_3142635823", &r.id).unwrap(), Some(r.clone()));
    assert_eq!(accounts.find("_pb_users_auth_", &r.id).unwrap(), None);
    let conn = Connection::open(dir.path().join(DATA_DB)).unwrap();
    let hash: String = conn.query_row("SELECT password FROM _superusers", [], |row| row.get(0)).unwrap();
    assert!(hash.starts_with("$2a$10$"), "{hash}");
}

#[test]
fn timestamps_use_pocketbase_format() {
    let (_dir, accounts) = open_temp();
    let r = accounts.upsert(Collection::Users, "a@b.c", "password123").unwrap();
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]Z");
    assert!(time::PrimitiveDateTime::parse(&r.created, format).is_ok(), "{}", r.created);
}

#[test]
fn second_upsert_changes_password_and_token_key() {
    let (_dir, accounts) = open_temp();
    let first = accounts.upsert(Collection::Users, "u@example.com", "first-password").unwrap();
    let second = accounts.upsert(Collection::Users, "U@EXAMPLE.COM", "second-password").unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(second.created, first.created);
    assert_ne!(second.token_key, first.token_key);
    assert_eq!(accounts.count(Collection::Users).unwrap(), 1);
    assert_eq!(accounts.authenticate(USERS, "u@example.com", None, "first-password").unwrap(), None);
    assert_eq!(accounts.authenticate(USERS, "u@example.com", None, "second-password").unwrap(), Some(second));
}

#[test]
fn same_email_in_both_collections_is_two_accounts() {
    let (_dir, accounts) = open_temp();
    let s = accounts.upsert(Collection::Superusers, "x@y.z", "password-s").unwrap();
    let u = accounts.upsert(Collection::Users, "x@y.z", "password-u").unwrap();
    assert_ne!(s.id, u.id);
    assert!(accounts.authenticate(SU, "x@y.z", None, "password-u").unwrap().is_none());
    assert!(accounts.authenticate(USERS, "x@y.z", None, "password-u").unwrap().is_some());
    assert!(accounts.authenticate("_pb_users_auth_", "x@y.z", None, "password-u").unwrap().is_some(), "by id");
}

#[test]
fn authenticate_right_wrong_and_missing() {
    let (_dir, accounts) = open_temp();
    let r = accounts.upsert(Collection::Superusers, "admin@example.com", "correct-horse").unwrap();
    assert_eq!(accounts.authenticate(SU, "admin@example.com", None, "correct-horse").unwrap(), Some(r));
    // The email's unique index has no COLLATE NOCASE: PocketBase matches it exactly, so do we.
    assert_eq!(accounts.authenticate(SU, "ADMIN@example.com", None, "correct-horse").unwrap(), None);
    assert_eq!(accounts.authenticate(SU, "admin@example.com", None, "Correct-horse").unwrap(), None);
    assert_eq!(accounts.authenticate(SU, "nobody@example.com", None, "correct-horse").unwrap(), None);
    assert_eq!(accounts.authenticate(SU, "", None, "").unwrap(), None);
    assert_eq!(accounts.authenticate("nope", "admin@example.com", None, "correct-horse").unwrap(), None);
}

#[test]
fn bcrypt_hashes_of_other_variants_and_costs_verify() {
    let (dir, accounts) = open_temp();
    let r = accounts.upsert(Collection::Users, "v@example.com", "first-password").unwrap();
    let conn = Connection::open(dir.path().join(DATA_DB)).unwrap();
    for (version, cost) in [(bcrypt::Version::TwoB, 4), (bcrypt::Version::TwoY, 5), (bcrypt::Version::TwoA, 12)] {
        let hash = bcrypt::hash_with_result("other-password", cost).unwrap().format_for_version(version);
        conn.execute("UPDATE users SET password = ?1 WHERE id = ?2", params![hash, r.id]).unwrap();
        assert!(accounts.authenticate(USERS, "v@example.com", None, "other-password").unwrap().is_some(), "{hash}");
        assert!(accounts.authenticate(USERS, "v@example.com", None, "first-password").unwrap().is_none());
    }
    for garbage in ["", "plain", "$2a$99$abc", "$argon2id$nope"] {
        conn.execute("UPDATE users SET password = ?1 WHERE id = ?2", params![garbage, r.id]).unwrap();
        // Never a match and never a panic; an unreadable hash is an error the log names.
        let got = accounts.authenticate(USERS, "v@example.com", None, "x-password");
        assert!(matches!(got, Ok(None) | Err(AccountsError::Hash)), "{garbage:?}: {got:?}");
    }
}

#[test]
fn password_auth_disabled_in_options_refuses_logins() {
    let dir = tempfile::tempdir().unwrap();
    Accounts::open(dir.path()).unwrap().upsert(Collection::Users, "a@b.c", "password123").unwrap();
    let conn = Connection::open(dir.path().join(DATA_DB)).unwrap();
    conn.execute("UPDATE _collections SET options = json_set(options, '$.passwordAuth.enabled', json('false')) WHERE name = 'users'", [])
        .unwrap();
    let accounts = Accounts::open(dir.path()).unwrap();
    assert_eq!(accounts.authenticate(USERS, "a@b.c", None, "password123").unwrap(), None);
}

#[test]
fn delete_removes_only_that_account() {
    let (_dir, accounts) = open_temp();
    let c = Collection::Users;
    accounts.upsert(c, "a@example.com", "password-a").unwrap();
    let b = accounts.upsert(c, "b@example.com", "password-b").unwrap();
    assert!(accounts.delete(c, "A@Example.com").unwrap());
    assert!(!accounts.delete(c, "a@example.com").unwrap());
    assert!(!accounts.delete(Collection::Superusers, "b@example.com").unwrap());
    assert_eq!(accounts.count(c).unwrap(), 1);
    assert_eq!(accounts.authenticate(USERS, "a@example.com", None, "password-a").unwrap(), None);
    assert_eq!(accounts.find("_pb_users_auth_", &b.id).unwrap(), Some(b));
}

#[test]
fn invalid_emails_are_refused() {
    let (_dir, accounts) = open_temp();
    let long = format!("{}@example.com", "a".repeat(250));
    for email in ["", "plain", "@example.com", "a@", "a b@example.com", "a@b@c", "a@.com", "a@b.", "a\n@b", long.as_str()] {
        let err = accounts.upsert(Collection::Users, email, "password123").unwrap_err();
        assert!(matches!(err, AccountsError::InvalidEmail), "{email:?}: {err:?}");
    }
    assert_eq!(accounts.count(Collection::Users).unwrap(), 0);
}

#[test]
fn password_length_is_checked_in_characters_and_bytes() {
    let (_dir, accounts) = open_temp();
    let c = Collection::Users;
    // 37 two-byte characters: 74 bytes, past what bcrypt reads.
    for bad in ["", "1234567", &"x".repeat(73), &"é".repeat(37)] {
        let err = accounts.upsert(c, "a@b.c", bad).unwrap_err();
        assert!(matches!(err, AccountsError::InvalidPassword), "{}: {err:?}", bad.len());
    }
    accounts.upsert(c, "a@b.c", "12345678").unwrap();
    let wide = "é".repeat(36);
    accounts.upsert(c, "a@b.c", &wide).unwrap();
    assert!(accounts.authenticate(USERS, "a@b.c", None, &wide).unwrap().is_some());
}

#[test]
fn reopening_keeps_records_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (record, collections) = {
        let accounts = Accounts::open(dir.path()).unwrap();
        let r = accounts.upsert(Collection::Superusers, "a@b.c", "password123").unwrap();
        (r, accounts.collections.clone())
    };
    let accounts = Accounts::open(dir.path()).unwrap();
    assert_eq!(accounts.find(&record.collection_id, &record.id).unwrap(), Some(record));
    assert!(accounts.collections == collections);
}

#[test]
fn secrets_are_random_and_distinct() {
    let (_dir, a) = open_temp();
    let (_dir2, b) = open_temp();
    let s = a.collection(SU).unwrap();
    let u = a.collection(USERS).unwrap();
    for secret in [&s.auth_token.secret, &s.file_token.secret, &u.auth_token.secret, &u.file_token.secret] {
        assert_eq!(secret.len(), SECRET_LEN);
        assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
    assert_ne!(s.auth_token.secret, s.file_token.secret);
    assert_ne!(s.auth_token.secret, u.auth_token.secret);
    assert_ne!(s.auth_token.secret, b.collection(SU).unwrap().auth_token.secret);
    assert_eq!((s.auth_token.duration_secs, s.file_token.duration_secs), (86_400, 180));
    assert_eq!(u.auth_token.duration_secs, 432_000);
}

#[test]
fn database_is_in_wal_mode() {
    let (dir, _accounts) = open_temp();
    let conn = Connection::open(dir.path().join(DATA_DB)).unwrap();
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn record_json_has_pocketbase_shape() {
    let (_dir, accounts) = open_temp();
    let r = accounts.upsert(Collection::Users, "a@b.c", "password123").unwrap();
    let v = r.to_json();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["collectionId", "collectionName", "created", "email", "emailVisibility", "id", "updated", "verified"]);
    assert_eq!(v["collectionId"], "_pb_users_auth_");
    assert_eq!(v["collectionName"], "users");
    assert_eq!(v["id"], r.id.as_str());
    assert_eq!(v["email"], "a@b.c");
    assert!(!format!("{r:?}").contains(&r.token_key));
}

/// Writes a data.db in the layout pb-backups used before PocketBase's, with one superuser
/// whose argon2 hash is of `password`.
fn write_legacy(dir: &Path, password: &str) -> (String, String) {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let conn = Connection::open(dir.join(DATA_DB)).unwrap();
    conn.execute_batch(
        "CREATE TABLE _collection_secrets (collection_id TEXT PRIMARY KEY NOT NULL, auth_secret TEXT NOT NULL, file_secret TEXT NOT NULL);
         INSERT INTO _collection_secrets VALUES ('pbc_3142635823', 'su-auth-secret', 'su-file-secret'), ('_pb_users_auth_', 'u-auth', 'u-file');
         CREATE TABLE _superusers (id TEXT PRIMARY KEY NOT NULL, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, token_key TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL);
         CREATE TABLE users (id TEXT PRIMARY KEY NOT NULL, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, token_key TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL);
         PRAGMA user_version = 1;",
    )
    .unwrap();
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    let hash = argon2::Argon2::default().hash_password(password.as_bytes(), &salt).unwrap().to_string();
    conn.execute(
        "INSERT INTO _superusers VALUES ('legacyid1234567', 'old@example.com', ?1, 'legacy-token-key', '2026-01-01 00:00:00.000Z', '2026-01-01 00:00:00.000Z')",
        [&hash],
    )
    .unwrap();
    ("legacyid1234567".into(), hash)
}

#[test]
fn a_legacy_data_dir_is_converted_keeping_ids_keys_secrets_and_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let (id, argon) = write_legacy(dir.path(), "legacy-password");
    check_usable(&dir.path().join(DATA_DB)).unwrap();
    let accounts = Accounts::open(dir.path()).unwrap();
    let su = accounts.collection(SU).unwrap();
    assert_eq!(su.auth_token.secret, "su-auth-secret");
    assert_eq!(su.file_token.secret, "su-file-secret");
    let record = accounts.find("pbc_3142635823", &id).unwrap().unwrap();
    assert_eq!(record.token_key, "legacy-token-key");
    assert_eq!(accounts.authenticate(SU, "old@example.com", None, "wrong-password").unwrap(), None);
    assert_eq!(accounts.authenticate(SU, "old@example.com", None, "legacy-password").unwrap(), Some(record.clone()));
    // The argon2 hash was replaced by bcrypt on that login; the token key stayed.
    let conn = Connection::open(dir.path().join(DATA_DB)).unwrap();
    let (hash, key): (String, String) =
        conn.query_row("SELECT password, tokenKey FROM _superusers", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert!(hash.starts_with("$2a$10$") && hash != argon, "{hash}");
    assert_eq!(key, "legacy-token-key");
    let legacy_left: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name LIKE '%legacy%' OR name = '_collection_secrets'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(legacy_left, 0);
    assert!(Accounts::open(dir.path()).unwrap().authenticate(SU, "old@example.com", None, "legacy-password").unwrap().is_some());
}

fn check_err(dir: &Path) -> String {
    check_usable(&dir.join(DATA_DB)).unwrap_err().to_string()
}

#[test]
fn unusable_databases_are_named_and_refused() {
    // A foreign SQLite database.
    let dir = tempfile::tempdir().unwrap();
    Connection::open(dir.path().join(DATA_DB)).unwrap().execute_batch("CREATE TABLE notes (body TEXT)").unwrap();
    assert!(check_err(dir.path()).contains("not a PocketBase data dir"));
    assert!(matches!(Accounts::open(dir.path()), Err(AccountsError::Layout(LayoutError::Foreign))));

    // PocketBase before 0.23.
    let dir = tempfile::tempdir().unwrap();
    Connection::open(dir.path().join(DATA_DB))
        .unwrap()
        .execute_batch("CREATE TABLE _admins (id TEXT); CREATE TABLE _collections (id TEXT, schema JSON)")
        .unwrap();
    assert!(check_err(dir.path()).contains("before 0.23"));

    // An empty database: nobody could log in.
    let dir = tempfile::tempdir().unwrap();
    Connection::open(dir.path().join(DATA_DB)).unwrap().execute_batch("PRAGMA user_version = 3").unwrap();
    assert!(check_err(dir.path()).contains("not a PocketBase"));

    // PocketBase layout but no superuser account.
    let dir = tempfile::tempdir().unwrap();
    drop(Accounts::open(dir.path()).unwrap());
    assert!(check_err(dir.path()).contains("no superuser account"));
}

#[test]
fn broken_superusers_collections_are_refused() {
    let cases: [(&str, &str); 5] = [
        ("UPDATE _collections SET options = 'not json' WHERE name = '_superusers'", "unreadable options"),
        ("UPDATE _collections SET options = json_remove(options, '$.authToken.secret') WHERE name = '_superusers'", "no authToken secret"),
        ("UPDATE _collections SET options = json_set(options, '$.fileToken.secret', '') WHERE name = '_superusers'", "no fileToken secret"),
        ("UPDATE _collections SET options = json_set(options, '$.authToken.duration', -5) WHERE name = '_superusers'", "duration"),
        ("DELETE FROM _collections WHERE name = '_superusers'", "no `_superusers` auth collection"),
    ];
    for (sql, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        Accounts::open(dir.path()).unwrap().upsert(Collection::Superusers, "a@b.c", "password123").unwrap();
        check_usable(&dir.path().join(DATA_DB)).unwrap();
        Connection::open(dir.path().join(DATA_DB)).unwrap().execute_batch(sql).unwrap();
        let err = check_err(dir.path());
        assert!(err.contains(expected), "{sql}: {err}");
        assert!(Accounts::open(dir.path()).is_err(), "{sql}");
    }
    // A broken non-superuser collection is left out, not fatal.
    let dir = tempfile::tempdir().unwrap();
    Accounts::open(dir.path()).unwrap().upsert(Collection::Superusers, "a@b.c", "password123").unwrap();
    Connection::open(dir.path().join(DATA_DB))
        .unwrap()
        .execute_batch("UPDATE _collections SET options = '[]' WHERE name = 'users'")
        .unwrap();
    check_usable(&dir.path().join(DATA_DB)).unwrap();
    let accounts = Accounts::open(dir.path()).unwrap();
    assert!(accounts.collection(USERS).is_none());
    assert!(matches!(accounts.upsert(Collection::Users, "u@b.c", "password123"), Err(AccountsError::NoSuchCollection(_))));
}

/// Adds a `username` text field with a unique index to `users` (as PocketBase's API would)
/// and makes it an identity field; `nocase` puts `COLLATE NOCASE` on the index.
fn add_username(dir: &std::path::Path, nocase: bool, identity_fields: &[&str]) -> Accounts {
    let conn = Connection::open(dir.join(DATA_DB)).unwrap();
    let collate = if nocase { " COLLATE NOCASE" } else { "" };
    conn.execute_batch(&format!(
        "ALTER TABLE users ADD COLUMN username TEXT DEFAULT '' NOT NULL;
         CREATE UNIQUE INDEX idx_username ON users (username{collate}) WHERE username != '';"
    ))
    .unwrap();
    let sql = "SELECT fields, options FROM _collections WHERE name = 'users'";
    let (fields, options): (String, String) = conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    let mut fields: Value = serde_json::from_str(&fields).unwrap();
    fields.as_array_mut().unwrap().push(json!({"name": "username", "type": "text", "hidden": false}));
    let mut options: Value = serde_json::from_str(&options).unwrap();
    options["passwordAuth"]["identityFields"] = json!(identity_fields);
    conn.execute(
        "UPDATE _collections SET fields = ?1, options = ?2 WHERE name = 'users'",
        params![fields.to_string(), options.to_string()],
    )
    .unwrap();
    Accounts::open(dir).unwrap()
}

#[test]
fn a_login_searches_every_identity_field_with_its_index_s_collation() {
    let (dir, accounts) = open_temp();
    let bob = accounts.upsert(Collection::Users, "bob@example.com", "bob-password").unwrap();
    let carol = accounts.upsert(Collection::Users, "carol@example.com", "carol-password").unwrap();
    drop(accounts);
    let accounts = add_username(dir.path(), true, &["email", "username"]);
    let conn = Connection::open(dir.path().join(DATA_DB)).unwrap();
    conn.execute("UPDATE users SET username = 'Bobby' WHERE id = ?1", [&bob.id]).unwrap();
    // A username that looks like someone else's email: the email is searched first.
    conn.execute("UPDATE users SET username = 'bob@example.com' WHERE id = ?1", [&carol.id]).unwrap();
    let id = |r: Option<Record>| r.map(|r| r.id);
    assert_eq!(id(accounts.authenticate(USERS, "Bobby", None, "bob-password").unwrap()), Some(bob.id.clone()));
    assert_eq!(id(accounts.authenticate(USERS, "bOBBY", None, "bob-password").unwrap()), Some(bob.id.clone()), "NOCASE");
    assert_eq!(id(accounts.authenticate(USERS, "bob@example.com", None, "bob-password").unwrap()), Some(bob.id.clone()));
    assert_eq!(accounts.authenticate(USERS, "bob@example.com", None, "carol-password").unwrap(), None);
    // Naming the field searches that one only.
    let by = |field| accounts.authenticate(USERS, "bob@example.com", Some(field), "carol-password").unwrap();
    assert_eq!(id(by("username")), Some(carol.id.clone()));
    assert_eq!(by("email"), None);
    drop(accounts);

    // Without NOCASE the username matches exactly; without `email` listed, emails are not searched.
    let dir = tempfile::tempdir().unwrap();
    let accounts = Accounts::open(dir.path()).unwrap();
    let dave = accounts.upsert(Collection::Users, "dave@example.com", "dave-password").unwrap();
    drop(accounts);
    let accounts = add_username(dir.path(), false, &["username"]);
    let conn = Connection::open(dir.path().join(DATA_DB)).unwrap();
    conn.execute("UPDATE users SET username = 'Dave' WHERE id = ?1", [&dave.id]).unwrap();
    assert!(accounts.authenticate(USERS, "Dave", None, "dave-password").unwrap().is_some());
    assert!(accounts.authenticate(USERS, "dave", None, "dave-password").unwrap().is_none());
    assert!(accounts.authenticate(USERS, "dave@example.com", None, "dave-password").unwrap().is_none());
}

#[test]
fn an_identity_field_without_a_unique_index_is_not_searched() {
    let (dir, accounts) = open_temp();
    accounts.upsert(Collection::Users, "erin@example.com", "erin-password").unwrap();
    drop(accounts);
    let conn = Connection::open(dir.path().join(DATA_DB)).unwrap();
    let options: String = conn.query_row("SELECT options FROM _collections WHERE name = 'users'", [], |r| r.get(0)).unwrap();
    let mut options: Value = serde_json::from_str(&options).unwrap();
    options["passwordAuth"]["identityFields"] = json!(["name", "email"]);
    conn.execute("UPDATE _collections SET options = ?1 WHERE name = 'users'", [options.to_string()]).unwrap();
    conn.execute("UPDATE users SET name = 'Erin'", []).unwrap();
    let accounts = Accounts::open(dir.path()).unwrap();
    assert_eq!(accounts.collection(USERS).unwrap().identity_fields, ["name", "email"]);
    assert!(accounts.authenticate(USERS, "Erin", None, "erin-password").unwrap().is_none());
    assert!(accounts.authenticate(USERS, "erin@example.com", None, "erin-password").unwrap().is_some());
}

fn set_auth_rule(dir: &std::path::Path, rule: Value) -> Accounts {
    let conn = Connection::open(dir.join(DATA_DB)).unwrap();
    let options: String = conn.query_row("SELECT options FROM _collections WHERE name = 'users'", [], |r| r.get(0)).unwrap();
    let mut options: Value = serde_json::from_str(&options).unwrap();
    options["authRule"] = rule;
    conn.execute("UPDATE _collections SET options = ?1 WHERE name = 'users'", [options.to_string()]).unwrap();
    Accounts::open(dir).unwrap()
}

#[test]
fn rules_are_evaluated_on_the_record_s_own_row() {
    let (dir, accounts) = open_temp();
    let user = accounts.upsert(Collection::Users, "frank@example.com", "frank-password").unwrap();
    Connection::open(dir.path().join(DATA_DB)).unwrap().execute("UPDATE users SET verified = FALSE", []).unwrap();
    let users = accounts.collection(USERS).unwrap();
    let outcome = |rule: &str| accounts.record_matches(users, &user.id, rule).unwrap();
    assert_eq!(outcome(""), RuleOutcome::Allowed);
    assert_eq!(outcome("verified = false && email ~ 'frank'"), RuleOutcome::Allowed);
    assert_eq!(outcome("verified = true"), RuleOutcome::Denied);
    assert_eq!(outcome("name = null && avatar = ''"), RuleOutcome::Allowed);
    // Another record's id never matches this one.
    assert_eq!(accounts.record_matches(users, "nosuchid", "verified = false").unwrap(), RuleOutcome::Denied);
    for rule in ["@request.auth.id != ''", "nosuch = 1", "verified = ", "tokenKey:lower = 'x'"] {
        assert!(matches!(outcome(rule), RuleOutcome::Unsupported(_)), "{rule}");
    }
    // The collection's own authRule: "" and a rule as written; null refuses everyone.
    assert_eq!(accounts.auth_rule_allows(users, &user.id).unwrap(), RuleOutcome::Allowed);
    drop(accounts);
    let accounts = set_auth_rule(dir.path(), json!("verified = true"));
    assert_eq!(accounts.auth_rule_allows(accounts.collection(USERS).unwrap(), &user.id).unwrap(), RuleOutcome::Denied);
    let accounts = set_auth_rule(dir.path(), Value::Null);
    assert_eq!(accounts.collection(USERS).unwrap().auth_rule, None);
    assert_eq!(accounts.auth_rule_allows(accounts.collection(USERS).unwrap(), &user.id).unwrap(), RuleOutcome::Denied);
}

#[test]
fn a_rule_does_not_read_huge_values() {
    let (dir, accounts) = open_temp();
    let user = accounts.upsert(Collection::Users, "gina@example.com", "gina-password").unwrap();
    let conn = Connection::open(dir.path().join(DATA_DB)).unwrap();
    let users = accounts.collection(USERS).unwrap();
    conn.execute("UPDATE users SET name = printf('%.*c', 1000, 'a')", []).unwrap();
    assert_eq!(accounts.record_matches(users, &user.id, "name ~ 'aa'").unwrap(), RuleOutcome::Allowed);
    // 2 MB in one field: the rule is refused unread, so its time stays bounded.
    conn.execute("UPDATE users SET name = printf('%.*c', 2000000, 'a')", []).unwrap();
    let outcome = accounts.record_matches(users, &user.id, "name ~ 'aa'").unwrap();
    assert!(matches!(&outcome, RuleOutcome::Unsupported(reason) if reason.contains("too big")), "{outcome:?}");
    // Other queries are not limited afterwards: a 2 MB token key is read back whole.
    conn.execute("UPDATE users SET tokenKey = printf('%.*c', 2000000, 'k')", []).unwrap();
    let found = accounts.find(&users.id, &user.id).unwrap().unwrap();
    assert_eq!(found.token_key.len(), 2_000_000);
}

// ---------------------------------------------------------------------------------------
// Foreign data.db: stored hashes verified within bounds, queries bounded, tables not views
// ---------------------------------------------------------------------------------------

/// `hash` with its two cost digits replaced: the same salt and digest, claiming `cost`.
fn with_bcrypt_cost(hash: &str, cost: u32) -> String {
    format!("{}{cost:02}{}", &hash[..4], &hash[6..])
}

fn set_password(dir: &Path, table: &str, email: &str, hash: &str) {
    let conn = Connection::open(dir.join(DATA_DB)).unwrap();
    let n = conn.execute(&format!("UPDATE {table} SET password = ?1 WHERE email = ?2"), params![hash, email]).unwrap();
    assert_eq!(n, 1);
}

#[test]
fn bcrypt_hashes_above_cost_14_are_refused_before_any_hashing() {
    let cheap = bcrypt::hash_with_result("right-password", 4).unwrap();
    for version in [bcrypt::Version::TwoA, bcrypt::Version::TwoB, bcrypt::Version::TwoX, bcrypt::Version::TwoY] {
        let hash = cheap.format_for_version(version);
        assert_eq!(hashes::verify("right-password", &hash), Ok(true), "{hash}");
        // A cost-31 check would take about 42 hours: refusing it must not start it.
        for cost in [15, 20, 31, 99] {
            let crafted = with_bcrypt_cost(&hash, cost);
            assert_eq!(hashes::verify("right-password", &crafted), Err(HashRefused::BcryptCost(cost)), "{crafted}");
        }
    }
    // 14, the bound, still verifies (about a second).
    let at_bound = bcrypt::hash_with_result("right-password", hashes::MAX_BCRYPT_COST).unwrap().format_for_version(bcrypt::Version::TwoB);
    assert_eq!(hashes::verify("right-password", &at_bound), Ok(true));
    assert_eq!(hashes::verify("wrong-password", &with_bcrypt_cost(&at_bound, 3)), Err(HashRefused::Unreadable));
}

/// An argon2id hash of `password` with these parameters (cheap ones; the costly ones are
/// written by hand, since making them is what must never happen).
fn argon2_hash(password: &str, m_kib: u32, t: u32, p: u32, algorithm: argon2::Algorithm) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    let params = argon2::Params::new(m_kib, t, p, None).unwrap();
    argon2::Argon2::new(algorithm, argon2::Version::V0x13, params).hash_password(password.as_bytes(), &salt).unwrap().to_string()
}

#[test]
fn argon2_verifies_only_in_the_legacy_layout_s_form_and_cost() {
    use argon2::Algorithm::{Argon2i, Argon2id};
    // What the legacy layout wrote, and cheaper: verified.
    let legacy = argon2_hash("right-password", 19 * 1024, 2, 1, Argon2id);
    assert_eq!(hashes::verify("right-password", &legacy), Ok(true));
    assert_eq!(hashes::verify("wrong-password", &legacy), Ok(false));
    assert_eq!(hashes::verify("right-password", &argon2_hash("right-password", 64, 1, 1, Argon2id)), Ok(true));
    // Above it in any one parameter: refused before the 4 TiB (or the hours) are asked for.
    let digest = legacy.rsplit('$').next().unwrap();
    for (m, t, p) in [(4_294_967_295u32, 1u32, 1u32), (19 * 1024 + 1, 2, 1), (64, 4_294_967_295, 1), (64, 3, 1), (64, 1, 2)] {
        let crafted = format!("$argon2id$v=19$m={m},t={t},p={p}$MDEyMzQ1Njc4OWFiY2RlZg${digest}");
        assert_eq!(hashes::verify("right-password", &crafted), Err(HashRefused::Argon2Cost { m_kib: m, t, p }), "{crafted}");
    }
    // Another variant or version, or no parameters to read: not the legacy layout's.
    assert!(matches!(hashes::verify("right-password", &argon2_hash("right-password", 64, 1, 1, Argon2i)), Err(HashRefused::Argon2(_))));
    let v16 = legacy.replace("v=19", "v=16");
    assert!(matches!(hashes::verify("right-password", &v16), Err(HashRefused::Argon2(_))));
    let nope = hashes::verify("right-password", "$argon2id$nope");
    assert!(matches!(nope, Err(HashRefused::Argon2(_))), "{nope:?}");
}

#[test]
fn a_refused_hash_fails_the_login_and_changes_nothing() {
    let (dir, accounts) = open_temp();
    accounts.upsert(Collection::Users, "u@example.com", "right-password").unwrap();
    let right = bcrypt::hash_with_result("right-password", 4).unwrap().format_for_version(bcrypt::Version::TwoA);
    let legacy = argon2_hash("right-password", 64, 1, 1, argon2::Algorithm::Argon2id);
    let digest = legacy.rsplit('$').next().unwrap();
    for crafted in [
        with_bcrypt_cost(&right, 31),
        format!("$argon2id$v=19$m=4294967295,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg${digest}"),
        format!("$argon2id$v=19$m=64,t=4294967295,p=1$MDEyMzQ1Njc4OWFiY2RlZg${digest}"),
        "plain".to_string(),
    ] {
        set_password(dir.path(), USERS, "u@example.com", &crafted);
        assert_eq!(accounts.authenticate(USERS, "u@example.com", None, "right-password").unwrap(), None, "{crafted}");
        let stored: String = Connection::open(dir.path().join(DATA_DB))
            .unwrap()
            .query_row("SELECT password FROM users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, crafted, "a refused hash is left as it was");
    }
    // A legacy hash in bounds logs in, and is replaced by bcrypt on the way.
    set_password(dir.path(), USERS, "u@example.com", &legacy);
    assert!(accounts.authenticate(USERS, "u@example.com", None, "right-password").unwrap().is_some());
}

/// A data dir of ours with one superuser, changed by `sql` afterwards.
fn crafted(sql: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    Accounts::open(dir.path()).unwrap().upsert(Collection::Superusers, "a@b.c", "password123").unwrap();
    Connection::open(dir.path().join(DATA_DB)).unwrap().execute_batch(sql).unwrap();
    dir
}

/// A view in place of a table, whose rows never end: `PRAGMA integrity_check` passes, and
/// counting or scanning it never returns.
fn endless_view(table: &str) -> String {
    format!(
        "ALTER TABLE `{table}` RENAME TO `{table}_moved`;
         CREATE VIEW `{table}` AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
         SELECT t.* FROM `{table}_moved` t, n;"
    )
}

#[test]
fn system_tables_that_are_views_or_virtual_tables_are_refused() {
    let cases = [
        (endless_view("_superusers"), "`_superusers` is a view, not a table"),
        (endless_view("_collections"), "`_collections` is a view, not a table"),
        (endless_view("users"), ""),
        (
            "ALTER TABLE _superusers RENAME TO _su; CREATE VIRTUAL TABLE _superusers USING fts5(id, email, emailVisibility, verified, created, updated, tokenKey, password); INSERT INTO _superusers SELECT id, email, emailVisibility, verified, created, updated, tokenKey, password FROM _su;".to_string(),
            "`_superusers` is a virtual table, not a table",
        ),
    ];
    for (sql, expected) in cases {
        let dir = crafted(&sql);
        let checked = check_usable(&dir.path().join(DATA_DB));
        let opened = Accounts::open(dir.path());
        if expected.is_empty() {
            // `users` is not needed: left out with a warning, the superusers still log in.
            checked.unwrap();
            let accounts = opened.unwrap();
            assert!(accounts.collection(USERS).is_none());
            assert!(accounts.authenticate(SU, "a@b.c", None, "password123").unwrap().is_some());
            continue;
        }
        assert!(checked.as_ref().is_err_and(|e| e.to_string().contains(expected)), "{sql}: {checked:?}");
        assert!(opened.as_ref().is_err_and(|e| e.to_string().contains(expected)), "{sql}: {:?}", opened.err());
    }
    // The legacy layout's tables too.
    let dir = tempfile::tempdir().unwrap();
    write_legacy(dir.path(), "legacy-password");
    Connection::open(dir.path().join(DATA_DB)).unwrap().execute_batch(&endless_view("_superusers")).unwrap();
    let e = check_usable(&dir.path().join(DATA_DB)).unwrap_err();
    assert!(e.to_string().contains("`_superusers` is a view"), "{e}");
}

#[test]
fn every_operation_on_the_accounts_is_bounded_in_time() {
    // 20,000 accounts: a login's lookup runs well past the few thousand steps between two
    // looks at the clock, so a budget of zero stops it whatever the machine's speed.
    let dir = crafted(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 20000)
         INSERT INTO users (id, email, password, tokenKey, created, updated)
         SELECT printf('u%014d', i), printf('u%d@example.com', i), 'x', printf('k%d', i), '', '' FROM n;",
    );
    let accounts = Accounts::open(dir.path()).unwrap();
    let zero = Accounts { budget: Duration::ZERO, ..accounts };
    let got = zero.authenticate(USERS, "nobody@example.com", None, "password123");
    assert!(matches!(got, Err(AccountsError::TooSlow)), "{got:?}");
    // Each operation gets its own budget: the next one, with time, works.
    let accounts = Accounts { budget: sqlite::QUERY_BUDGET, ..zero };
    assert_eq!(accounts.authenticate(USERS, "u20000@example.com", None, "password123").unwrap(), None);
    assert!(accounts.authenticate(SU, "a@b.c", None, "password123").unwrap().is_some());
}

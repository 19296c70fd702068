//! MFA, one-time passwords, login alerts and mail, against a live in-process server and a
//! local SMTP sink: the flows PocketBase runs (measured on 0.40.6, see `tests/pocketbase/mfa.rs`
//! for the side-by-side comparison), the rows they leave in `_otps`, `_mfas` and
//! `_authOrigins`, the mail settings of `/api/settings`, and a snapshot of every documented
//! response of these operations (`tests/snapshots/mfa__*`).

mod support;

use std::path::Path;
use std::time::Duration;

use pb_backups::i18n::Lang;
use serde_json::{json, Value};
use support::smtp::{configure, merge, Mail, SmtpSink};
use support::*;

const SECOND_SUPERUSER: (&str, &str) = ("second@example.com", "second-password");

/// The code goes between markers, so tests find it whatever else the mail holds.
fn otp_on(length: usize) -> Value {
    json!({"otp": {"enabled": true, "duration": 180, "length": length,
                   "emailTemplate": {"subject": "Code for {APP_NAME}", "body": "<p>CODE:{OTP}:END for {RECORD:email}</p>"}}})
}

fn mfa_on() -> Value {
    let mut options = otp_on(8);
    merge(&mut options, &json!({"mfa": {"enabled": true, "duration": 600, "rule": ""}}));
    options
}

fn code_in(mail: &Mail, length: usize) -> String {
    let code = mail.digits_after("CODE:", length).unwrap_or_else(|| panic!("no code in {}", mail.text()));
    assert_eq!(code.len(), length);
    code
}

/// A server whose superusers need MFA (password + OTP) and whose users may log in with OTP
/// alone; mail goes to `sink`.
async fn start(sink: &SmtpSink, collections: Vec<(&'static str, Value)>) -> TestServer {
    let port = sink.port;
    TestServer::start_with(Options {
        lang: Some(Lang::En),
        prepare: Some(Box::new(move |dir: &Path| {
            let accounts = pb_backups::datadir::open(dir).unwrap();
            accounts.upsert(pb_backups::accounts::Collection::Superusers, SECOND_SUPERUSER.0, SECOND_SUPERUSER.1).unwrap();
            drop(accounts);
            configure(dir, port, &collections);
        })),
        ..Default::default()
    })
    .await
}

async fn post(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    post_with(s, path, body, &[]).await
}

async fn post_with(s: &TestServer, path: &str, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut r = s.client.post(s.url(path)).json(&body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    status_json(r.send().await.unwrap()).await
}

async fn password_step(s: &TestServer, collection: &str, (email, password): (&str, &str)) -> (u16, Value) {
    post(s, &format!("/api/collections/{collection}/auth-with-password"), json!({"identity": email, "password": password})).await
}

/// Asks for a code for `email` and reads it from the mail: (otpId, code).
async fn otp_for(s: &TestServer, sink: &SmtpSink, collection: &str, email: &str) -> (String, String) {
    let before = sink.mails_to(email).len();
    let (status, body) = post(s, &format!("/api/collections/{collection}/request-otp"), json!({"email": email})).await;
    assert_eq!(status, 200, "{body}");
    let code = code_in(&wait_mail(sink, email, before + 1).await, 8);
    (body["otpId"].as_str().unwrap().to_string(), code)
}

/// Waits until `to` has `n` mails; the last of them.
async fn wait_mail(sink: &SmtpSink, to: &str, n: usize) -> Mail {
    eventually(Duration::from_secs(20), "a mail", || async move {
        let mails = sink.mails_to(to);
        (mails.len() >= n).then(|| mails[n - 1].clone())
    })
    .await
}

fn db(s: &TestServer) -> rusqlite::Connection {
    rusqlite::Connection::open(s.data_dir().join("data.db")).unwrap()
}

fn rows(s: &TestServer, sql: &str) -> Vec<Vec<String>> {
    let conn = db(s);
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    let rows = stmt.query_map([], |r| (0..n).map(|i| r.get::<_, String>(i)).collect::<Result<Vec<_>, _>>()).unwrap();
    rows.map(Result::unwrap).collect()
}

async fn list_status(s: &TestServer, token: &str) -> u16 {
    s.client.get(s.url("/api/backups")).header("Authorization", token).send().await.unwrap().status().as_u16()
}

fn error(status: u16, message: &str) -> Value {
    error_body(status, message)
}

/// Pins a response: ids, tokens and times redacted.
fn snap(name: &str, status: u16, body: &Value) {
    insta::assert_json_snapshot!(name, json!({"status": status, "body": body}), {
        ".body.mfaId" => "[mfaId]",
        ".body.otpId" => "[otpId]",
        ".body.token" => "[token]",
        ".body.record.id" => "[id]",
        ".body.record.created" => "[datetime]",
        ".body.record.updated" => "[datetime]",
        ".body.smtp.port" => "[port]",
    });
}

#[tokio::test]
async fn password_then_otp_logs_a_superuser_in_with_pocketbase_s_rows() {
    let sink = SmtpSink::start();
    let s = start(&sink, vec![("_superusers", mfa_on())]).await;

    let (status, body) = password_step(&s, "_superusers", SUPERUSER).await;
    assert_eq!(status, 401, "{body}");
    snap("password_step_401_mfa", status, &body);
    let mfa_id = body["mfaId"].as_str().unwrap().to_string();
    assert_eq!(body.as_object().unwrap().len(), 1, "only the mfaId: {body}");
    let su_id = rows(&s, "SELECT id FROM _superusers WHERE email = 'admin@example.com'")[0][0].clone();
    let mfas = rows(&s, "SELECT id, collectionRef, recordRef, method, CAST(created = updated AS TEXT) FROM _mfas");
    assert_eq!(mfas, [[mfa_id.clone(), "pbc_3142635823".into(), su_id.clone(), "password".into(), "1".into()]]);

    let (status, body) = post(&s, "/api/collections/_superusers/request-otp", json!({"email": SUPERUSER.0})).await;
    assert_eq!(status, 200, "{body}");
    snap("request_otp_200", status, &body);
    let otp_id = body["otpId"].as_str().unwrap().to_string();
    let mail = wait_mail(&sink, SUPERUSER.0, 1).await;
    assert_eq!(mail.from, "support@acme.test");
    assert!(mail.raw.contains("Acme Support"), "{}", mail.raw);
    let code = code_in(&mail, 8);
    assert_eq!(mail.subject(), "Code for Acme");
    assert!(mail.text().contains(&format!("CODE:{code}:END for {}", SUPERUSER.0)), "{{RECORD:email}} filled in");
    // The row as PocketBase keeps it: the code hashed (bcrypt cost 8), where it went.
    let otp = eventually(Duration::from_secs(10), "sentTo noted", || {
        let s = &s;
        async move {
            let r = rows(s, "SELECT id, collectionRef, recordRef, password, sentTo FROM _otps");
            (r.len() == 1 && r[0][4] == SUPERUSER.0).then(|| r[0].clone())
        }
    })
    .await;
    assert_eq!(otp[..3], [otp_id.clone(), "pbc_3142635823".to_string(), su_id]);
    assert!(otp[3].starts_with("$2a$08$") && !otp[3].contains(&code), "{}", otp[3]);

    // The SDK sends the mfaId as a query parameter.
    let (status, body) = post(
        &s,
        &format!("/api/collections/_superusers/auth-with-otp?mfaId={mfa_id}"),
        json!({"otpId": otp_id, "password": code}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    snap("auth_with_otp_200", status, &body);
    assert_eq!(body["record"]["email"], SUPERUSER.0);
    assert_eq!(list_status(&s, body["token"].as_str().unwrap()).await, 200);
    assert!(rows(&s, "SELECT id FROM _mfas").is_empty(), "the MFA session is used up");
    assert!(rows(&s, "SELECT id FROM _otps").is_empty(), "the code is used up");
    s.stop().await;
}

#[tokio::test]
async fn otp_first_then_password_and_the_mfa_session_refusals() {
    let sink = SmtpSink::start();
    let s = start(&sink, vec![("_superusers", mfa_on())]).await;
    let su = "/api/collections/_superusers";

    // OTP as the first step: 401 with an mfaId, the code used up all the same.
    let (otp_id, code) = otp_for(&s, &sink, "_superusers", SUPERUSER.0).await;
    let (status, body) = post(&s, &format!("{su}/auth-with-otp"), json!({"otpId": otp_id, "password": code})).await;
    assert_eq!(status, 401, "{body}");
    snap("auth_with_otp_401_mfa", status, &body);
    let mfa_id = body["mfaId"].as_str().unwrap().to_string();
    assert_eq!(rows(&s, "SELECT method FROM _mfas"), [["otp"]]);
    assert!(rows(&s, "SELECT id FROM _otps").is_empty());

    // Refusals, each as PocketBase words it; none of them uses the session up.
    let with = |id: &str| json!({"identity": SUPERUSER.0, "password": SUPERUSER.1, "mfaId": id});
    let (status, body) = post(&s, &format!("{su}/auth-with-password"), with("nosuchsession00")).await;
    assert_eq!((status, body), (400, error(400, "Invalid or expired MFA session.")));
    let (_, other) = password_step(&s, "_superusers", SECOND_SUPERUSER).await;
    let other_id = other["mfaId"].as_str().unwrap().to_string();
    let (status, body) = post(&s, &format!("{su}/auth-with-password"), with(&other_id)).await;
    assert_eq!((status, body), (400, error(400, "Invalid MFA session.")));
    let (otp_id, code) = otp_for(&s, &sink, "_superusers", SUPERUSER.0).await;
    let (status, body) =
        post(&s, &format!("{su}/auth-with-otp"), json!({"otpId": otp_id, "password": code, "mfaId": mfa_id})).await;
    assert_eq!((status, body), (400, error(400, "A different authentication method is required.")));
    assert!(rows(&s, "SELECT id FROM _otps").is_empty(), "a matching code is used up even when MFA refuses");

    // The password as the second step finishes it.
    let (status, body) = post(&s, &format!("{su}/auth-with-password"), with(&mfa_id)).await;
    assert_eq!(status, 200, "{body}");
    snap("password_step_200_second_factor", status, &body);
    assert_eq!(list_status(&s, body["token"].as_str().unwrap()).await, 200);

    // An expired session is refused and deleted.
    let (_, body) = password_step(&s, "_superusers", SUPERUSER).await;
    let stale = body["mfaId"].as_str().unwrap().to_string();
    db(&s).execute("UPDATE _mfas SET created = '2020-01-01 00:00:00.000Z' WHERE id = ?1", [&stale]).unwrap();
    let (otp_id, code) = otp_for(&s, &sink, "_superusers", SUPERUSER.0).await;
    let (status, body) =
        post(&s, &format!("{su}/auth-with-otp"), json!({"otpId": otp_id, "password": code, "mfaId": stale})).await;
    assert_eq!((status, body), (400, error(400, "Invalid or expired MFA session.")));
    assert!(rows(&s, &format!("SELECT id FROM _mfas WHERE id = '{stale}'")).is_empty());
    s.stop().await;
}

#[tokio::test]
async fn wrong_expired_and_too_many_codes() {
    let sink = SmtpSink::start();
    let s = start(&sink, vec![("_superusers", mfa_on())]).await;
    let auth = "/api/collections/_superusers/auth-with-otp";

    let (otp_id, code) = otp_for(&s, &sink, "_superusers", SUPERUSER.0).await;
    let wrong = if code == "00000000" { "11111111" } else { "00000000" };
    let (status, body) = post(&s, auth, json!({"otpId": otp_id, "password": wrong})).await;
    assert_eq!((status, &body), (400, &error(400, "Invalid or expired OTP.")));
    snap("auth_with_otp_400_wrong_code", status, &body);
    let (status, _) = post(&s, auth, json!({"otpId": "nosuchotp000000", "password": code})).await;
    assert_eq!(status, 400);
    assert_eq!(rows(&s, "SELECT id FROM _otps").len(), 1, "a wrong code leaves the row");

    // Past otp.duration (180 s) from its creation, the right code is refused too.
    db(&s).execute("UPDATE _otps SET created = '2020-01-01 00:00:00.000Z'", []).unwrap();
    let (status, body) = post(&s, auth, json!({"otpId": otp_id, "password": code})).await;
    assert_eq!((status, body), (400, error(400, "Invalid or expired OTP.")));

    // Five checks per account in three minutes, then 429 even for the right code.
    let (otp_id, code) = otp_for(&s, &sink, "_superusers", SUPERUSER.0).await;
    // (The first wrong code above was the first check.)
    for _ in 0..4 {
        assert_eq!(post(&s, auth, json!({"otpId": otp_id, "password": wrong})).await.0, 400);
    }
    let (status, body) = post(&s, auth, json!({"otpId": otp_id, "password": code})).await;
    assert_eq!((status, &body), (429, &error(429, "Too many attempts, please try again later with a new OTP.")));
    snap("auth_with_otp_429_attempts", status, &body);
    s.stop().await;
}

#[tokio::test]
async fn request_otp_answers_alike_for_unknown_emails_and_checks_its_input() {
    let sink = SmtpSink::start();
    let s = start(&sink, vec![("_superusers", mfa_on())]).await;
    let request = "/api/collections/_superusers/request-otp";

    let (status, body) = post(&s, request, json!({"email": "nobody@example.com"})).await;
    assert_eq!(status, 200, "{body}");
    let id = body["otpId"].as_str().unwrap();
    assert!(id.len() == 15 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{id}");
    let (status, body) = post(&s, request, json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(body["data"]["email"]["code"], "validation_required");
    snap("request_otp_400", status, &body);
    let (_, body) = post(&s, request, json!({"email": "not an email"})).await;
    assert_eq!(body["data"]["email"], json!({"code": "validation_is_email", "message": "Must be a valid email address."}));
    let (status, body) = post(&s, request, json!({"email": 5})).await;
    assert_eq!((status, body["message"].as_str().unwrap()), (400, "The request body is not valid JSON."));

    // users has OTP off: 403 whatever the body; unknown collections 404.
    let (status, body) = post(&s, "/api/collections/users/request-otp", json!({"nothing": true})).await;
    assert_eq!((status, &body), (403, &error(403, "The collection is not configured to allow OTP authentication.")));
    snap("request_otp_403", status, &body);
    let (status, body) = post(&s, "/api/collections/users/auth-with-otp", json!({})).await;
    assert_eq!(status, 403);
    snap("auth_with_otp_403", status, &body);
    let (status, body) = post(&s, "/api/collections/nope/request-otp", json!({"email": "a@b.co"})).await;
    assert_eq!(status, 404);
    snap("request_otp_404", status, &body);
    let (status, body) = post(&s, "/api/collections/nope/auth-with-otp", json!({})).await;
    assert_eq!(status, 404);
    snap("auth_with_otp_404", status, &body);
    let (status, body) = post(&s, "/api/collections/_superusers/auth-with-otp", json!({"password": "x".repeat(72)})).await;
    assert_eq!(status, 400);
    assert_eq!(body["data"]["otpId"]["code"], "validation_required");
    assert_eq!(body["data"]["password"]["code"], "validation_length_out_of_range");
    snap("auth_with_otp_400_validation", status, &body);

    // Ten unexpired codes for one account: the newest again, without another mail.
    for _ in 0..10 {
        assert_eq!(post(&s, request, json!({"email": SECOND_SUPERUSER.0})).await.0, 200);
    }
    wait_mail(&sink, SECOND_SUPERUSER.0, 10).await;
    let newest = rows(&s, "SELECT id FROM _otps ORDER BY created DESC, rowid DESC LIMIT 1")[0][0].clone();
    let (_, body) = post(&s, request, json!({"email": SECOND_SUPERUSER.0})).await;
    assert_eq!(body["otpId"], newest.as_str());
    assert_eq!(rows(&s, "SELECT id FROM _otps").len(), 10);
    assert!(sink.mails().iter().all(|m| !m.to.contains(&"nobody@example.com".to_string())));
    assert_eq!(sink.mails_to(SECOND_SUPERUSER.0).len(), 10);
    s.stop().await;
}

#[tokio::test]
async fn an_otp_only_login_verifies_the_user_and_retires_its_password() {
    let sink = SmtpSink::start();
    let s = start(&sink, vec![("users", otp_on(6))]).await;
    db(&s).execute("UPDATE users SET verified = FALSE", []).unwrap();
    let key_before = rows(&s, "SELECT tokenKey FROM users")[0][0].clone();
    let before = password_step(&s, "users", USER).await.1["token"].as_str().unwrap().to_string();

    let (otp_id, code) = otp_for_len(&s, &sink, USER.0, 6).await;
    let (status, body) = post(&s, "/api/collections/users/auth-with-otp", json!({"otpId": otp_id, "password": code})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["record"]["verified"], true);
    let token = body["token"].as_str().unwrap();
    assert_eq!(list_status(&s, token).await, 403, "a user's token, valid");
    // Whoever set the password before the address was proven cannot use it any more.
    assert_ne!(rows(&s, "SELECT tokenKey FROM users")[0][0], key_before);
    assert_eq!(password_step(&s, "users", USER).await.0, 400);
    assert_eq!(list_status(&s, &before).await, 401, "tokens signed with the old key are void");
    s.stop().await;
}

async fn otp_for_len(s: &TestServer, sink: &SmtpSink, email: &str, len: usize) -> (String, String) {
    let before = sink.mails_to(email).len();
    let (status, body) = post(s, "/api/collections/users/request-otp", json!({"email": email})).await;
    assert_eq!(status, 200, "{body}");
    let code = code_in(&wait_mail(sink, email, before + 1).await, len);
    (body["otpId"].as_str().unwrap().to_string(), code)
}

#[tokio::test]
async fn a_code_that_cannot_be_mailed_is_dropped() {
    let sink = SmtpSink::start();
    let s = start(&sink, vec![("_superusers", mfa_on())]).await;
    // Nothing listens on the port now: the answer is the same, the row goes.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    patch_settings_row(&s, json!({"smtp": {"port": closed}}));
    let (status, body) = post(&s, "/api/collections/_superusers/request-otp", json!({"email": SUPERUSER.0})).await;
    assert_eq!(status, 200, "{body}");
    let id = body["otpId"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(20), "the undelivered code deleted", || {
        let (s, id) = (&s, id.clone());
        async move { rows(s, &format!("SELECT id FROM _otps WHERE id = '{id}'")).is_empty().then_some(()) }
    })
    .await;
    assert!(sink.mails().is_empty());
    s.stop().await;
}

/// Changes the stored settings row directly (as PocketBase or another process might).
fn patch_settings_row(s: &TestServer, patch: Value) {
    patch_settings_file(s.data_dir(), patch);
}

#[tokio::test]
async fn a_login_from_a_new_origin_is_mailed_about_and_recorded() {
    let sink = SmtpSink::start();
    let s = start(&sink, vec![]).await;
    let login = |ua: &'static str| {
        let s = &s;
        async move {
            post_with(s, "/api/collections/users/auth-with-password", json!({"identity": USER.0, "password": USER.1}), &[("User-Agent", ua)]).await
        }
    };
    let origins = || rows(&s, "SELECT fingerprint FROM _authOrigins ORDER BY created");

    // The first login of an account is recorded, not mailed about.
    assert_eq!(login("agent-one").await.0, 200);
    assert_eq!(origins(), [["0c69950bade3214b17edc83ad39a07db".to_string()]], "MD5 of 127.0.0.1 + agent-one");
    assert_eq!(login("agent-one").await.0, 200);
    // A new origin: an alert with when, where and which agent (escaped), then it is known.
    assert_eq!(login("agent-<two>").await.0, 200);
    let alert = wait_mail(&sink, USER.0, 1).await;
    assert_eq!(alert.subject(), "New sign-in to Acme");
    let text = alert.text();
    assert!(text.contains("127.0.0.1 agent-&lt;two&gt;"), "{text}");
    assert_eq!(origins().len(), 2);
    assert_eq!(login("agent-<two>").await.0, 200);
    // At most five origins are kept, the newest.
    for ua in ["a3", "a4", "a5", "a6"] {
        assert_eq!(login(ua).await.0, 200);
    }
    wait_mail(&sink, USER.0, 5).await;
    assert_eq!(origins().len(), 5);
    assert_eq!(sink.mails_to(USER.0).len(), 5, "one alert per new origin, none for the first login or known ones");

    // When the alert cannot be sent, the login still succeeds but the origin is not recorded.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    patch_settings_row(&s, json!({"smtp": {"port": closed}}));
    assert_eq!(login("agent-unmailed").await.0, 200);
    assert_eq!(origins().len(), 5);
    s.stop().await;
}

#[tokio::test]
async fn a_failed_scheduled_backup_is_mailed_to_every_superuser() {
    let sink = SmtpSink::start();
    let (clock, source) = pb_backups::schedule::ManualClock::new();
    let port = sink.port;
    let s = TestServer::start_with(Options {
        lang: Some(Lang::En),
        schedule_clock: Some(source),
        prepare: Some(Box::new(move |dir: &Path| {
            let accounts = pb_backups::datadir::open(dir).unwrap();
            accounts.upsert(pb_backups::accounts::Collection::Superusers, SECOND_SUPERUSER.0, SECOND_SUPERUSER.1).unwrap();
            drop(accounts);
            configure(dir, port, &[]);
        })),
        ..Default::default()
    })
    .await;
    pb_backups::settings::update_backups(
        s.data_dir(),
        &pb_backups::settings::BackupsPatch { cron: Some("* * * * *".into()), cron_max_keep: Some(3) },
    )
    .unwrap();
    // Once the server serves (it has opened the backups folder), that folder replaced by a
    // file: the create fails when it publishes.
    assert_eq!(s.client.get(s.url("/api/health")).send().await.unwrap().status(), 200);
    let backups = s.data_dir().join("backups");
    std::fs::remove_dir_all(&backups).unwrap();
    std::fs::write(&backups, b"not a folder").unwrap();
    let at = time::macros::datetime!(2026-03-01 03:00:00 UTC);
    let outcome = clock.tick(at).await.expect("the scheduler runs");
    assert!(matches!(outcome, pb_backups::schedule::TickOutcome::Failed { .. }), "{outcome:?}");
    for who in [SUPERUSER.0, SECOND_SUPERUSER.0] {
        let mail = wait_mail(&sink, who, 1).await;
        assert_eq!(mail.subject(), "[Acme] Scheduled backup failed");
        let text = mail.text();
        assert!(text.contains("@auto_pb_backup_acme_20260301030000.zip"), "{text}");
        assert!(!text.contains(&s.data_dir().display().to_string()), "no paths in mail: {text}");
    }
    assert!(sink.mails_to(USER.0).is_empty(), "superusers only");
    s.stop().await;
}

#[tokio::test]
async fn smtp_logins_and_the_mail_settings_api() {
    let sink = SmtpSink::start();
    let s = start(&sink, vec![("users", otp_on(8))]).await;
    let token = s.superuser_token().await;
    let get = || async { status_json(s.client.get(s.url("/api/settings")).header("Authorization", &token).send().await.unwrap()).await };
    let patch = |body: Value| {
        let (s, token) = (&s, token.clone());
        async move {
            status_json(s.client.patch(s.url("/api/settings")).header("Authorization", token).json(&body).send().await.unwrap()).await
        }
    };

    let (status, body) = get().await;
    assert_eq!(status, 200);
    snap("settings_get_200", status, &body);
    assert_eq!(body["meta"]["senderAddress"], "support@acme.test");

    // LOGIN with a password; the password is stored but never served.
    let (status, body) = patch(json!({"smtp": {"username": "mailer", "password": "s3cret", "authMethod": "LOGIN"},
                                      "meta": {"senderName": "Ops", "senderAddress": "ops@acme.test"}})).await;
    assert_eq!(status, 200, "{body}");
    snap("settings_patch_200", status, &body);
    assert!(body["smtp"].get("password").is_none(), "{body}");
    assert!(!get().await.1.to_string().contains("s3cret"));
    otp_for_len(&s, &sink, USER.0, 8).await;
    let mail = sink.mails_to(USER.0).pop().unwrap();
    assert_eq!(mail.login, Some(("mailer".into(), "s3cret".into())));
    assert_eq!(mail.from, "ops@acme.test");

    // PLAIN; a PATCH without the password keeps it.
    assert_eq!(patch(json!({"smtp": {"authMethod": "PLAIN"}})).await.0, 200);
    otp_for_len(&s, &sink, USER.0, 8).await;
    assert_eq!(sink.mails_to(USER.0).pop().unwrap().login, Some(("mailer".into(), "s3cret".into())));

    let before = get().await.1;
    let (status, body) = patch(json!({"smtp": {"enabled": true, "host": "", "port": 0, "authMethod": "CRAM-MD5"},
                                      "meta": {"senderAddress": "nope"}})).await;
    assert_eq!(status, 400);
    snap("settings_patch_400", status, &body);
    assert_eq!(body["data"]["smtp"]["host"]["code"], "validation_required");
    assert_eq!(body["data"]["smtp"]["port"]["code"], "validation_required");
    assert_eq!(body["data"]["smtp"]["authMethod"]["code"], "validation_in_invalid");
    assert_eq!(body["data"]["meta"]["senderAddress"]["code"], "validation_is_email");
    assert_eq!(get().await.1, before, "nothing stored");

    let (status, body) = status_json(s.client.get(s.url("/api/settings")).send().await.unwrap()).await;
    assert_eq!(status, 401);
    snap("settings_get_401", status, &body);
    let user = s.user_token().await;
    let (status, body) =
        status_json(s.client.patch(s.url("/api/settings")).header("Authorization", user).json(&json!({})).send().await.unwrap()).await;
    assert_eq!(status, 403);
    snap("settings_patch_403", status, &body);
    s.stop().await;
}

#[tokio::test]
async fn logins_are_throttled_per_client_on_every_step() {
    let sink = SmtpSink::start();
    let rate = pb_backups::http::ratelimit::RateLimit { burst: 2, per_attempt: Duration::from_secs(3600) };
    let port = sink.port;
    let s = TestServer::start_with(Options {
        lang: Some(Lang::En),
        login_rate: Some(rate),
        prepare: Some(Box::new(move |dir: &Path| configure(dir, port, &[("_superusers", mfa_on())]))),
        ..Default::default()
    })
    .await;
    assert_eq!(post(&s, "/api/collections/_superusers/request-otp", json!({"email": SUPERUSER.0})).await.0, 200);
    assert_eq!(password_step(&s, "_superusers", SUPERUSER).await.0, 401);
    let (status, body) = post(&s, "/api/collections/_superusers/request-otp", json!({"email": SUPERUSER.0})).await;
    assert_eq!(status, 429);
    snap("request_otp_429", status, &body);
    let (status, body) = post(&s, "/api/collections/_superusers/auth-with-otp", json!({"otpId": "x", "password": "1"})).await;
    assert_eq!(status, 429);
    snap("auth_with_otp_429_throttled", status, &body);
    s.stop().await;
}

/// With `smtp.enabled` off, mail goes through the local `sendmail`, as PocketBase's does:
/// here a stand-in on the server's `PATH` that files each message.
#[tokio::test]
async fn with_smtp_off_the_code_goes_through_sendmail() {
    let root = tempfile::tempdir().unwrap();
    let (dir, bin, outbox) = (root.path().join("pb_data"), root.path().join("bin"), root.path().join("outbox"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&outbox).unwrap();
    let script = bin.join("sendmail");
    std::fs::write(&script, format!("#!/bin/sh\ncat > {}/$$.eml\n", outbox.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    seed_accounts(&dir);
    configure(&dir, 1, &[("users", otp_on(8))]);
    patch_settings_file(&dir, json!({"smtp": {"enabled": false}}));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let server = BinaryServer::start_with(&dir, &[("PATH", path.as_str())]);
    let r = reqwest::Client::new()
        .post(format!("{}/api/collections/users/request-otp", server.base))
        .json(&json!({"email": USER.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mail = eventually(Duration::from_secs(20), "a message handed to sendmail", || {
        let outbox = outbox.clone();
        async move {
            let file = std::fs::read_dir(&outbox).ok()?.flatten().next()?;
            let raw = std::fs::read_to_string(file.path()).ok()?;
            // Complete once the headers and the body's end are in.
            raw.trim_end().ends_with("--").then_some(raw)
        }
    })
    .await;
    let mail = Mail { from: String::new(), to: Vec::new(), login: None, raw: mail };
    assert!(mail.raw.contains("To: user@example.com"), "{}", mail.raw);
    assert_eq!(code_in(&mail, 8).len(), 8);
}

fn patch_settings_file(dir: &Path, patch: Value) {
    let conn = rusqlite::Connection::open(dir.join("data.db")).unwrap();
    let raw: String = conn.query_row("SELECT value FROM _params WHERE id = 'settings'", [], |r| r.get(0)).unwrap();
    let mut settings: Value = serde_json::from_str(&raw).unwrap();
    merge(&mut settings, &patch);
    conn.execute("UPDATE _params SET value = ?1 WHERE id = 'settings'", [settings.to_string()]).unwrap();
}

/// `mfa.rule` picks the accounts that need the second factor (a rule this server cannot
/// evaluate picks all of them), and `authRule` is checked before a one-time password login
/// gets its token, as in PocketBase.
#[tokio::test]
async fn mfa_rule_selects_the_accounts_and_auth_rule_guards_otp_logins() {
    const OTHER: (&str, &str) = ("other@example.com", "other-password");
    const BLOCKED: (&str, &str) = ("blocked@example.com", "blocked-password");
    let start_with_rule = |rule: &'static str, sink: &SmtpSink| {
        let port = sink.port;
        TestServer::start_with(Options {
            lang: Some(Lang::En),
            prepare: Some(Box::new(move |dir: &Path| {
                let accounts = pb_backups::datadir::open(dir).unwrap();
                for who in [OTHER, BLOCKED] {
                    accounts.upsert(pb_backups::accounts::Collection::Users, who.0, who.1).unwrap();
                }
                drop(accounts);
                let mut options = otp_on(8);
                merge(&mut options, &json!({"mfa": {"enabled": true, "duration": 600, "rule": rule},
                                            "authRule": "email != 'blocked@example.com'"}));
                configure(dir, port, &[("users", options)]);
            })),
            ..Default::default()
        })
    };
    let sink = SmtpSink::start();
    let s = start_with_rule("email != 'user@example.com'", &sink).await;
    let (status, body) = password_step(&s, "users", USER).await;
    assert_eq!(status, 200, "the rule leaves this account out: {body}");
    let (status, body) = password_step(&s, "users", OTHER).await;
    assert_eq!((status, body.as_object().map(|o| o.len())), (401, Some(1)), "{body}");
    // authRule refuses before any token, the one-time password way too (the code is used up).
    assert_eq!(password_step(&s, "users", BLOCKED).await.0, 403);
    let (otp_id, code) = otp_for_len(&s, &sink, BLOCKED.0, 8).await;
    let (status, body) = post(&s, "/api/collections/users/auth-with-otp", json!({"otpId": otp_id, "password": code})).await;
    assert_eq!((status, body["message"].as_str()), (403, Some("The request doesn't satisfy the collection requirements to authenticate.")));
    assert!(rows(&s, "SELECT id FROM _otps").is_empty());
    s.stop().await;

    // A rule out of this server's reach: every account is asked for the second factor.
    let s = start_with_rule("@request.auth.id = ''", &sink).await;
    let (status, body) = password_step(&s, "users", USER).await;
    assert_eq!(status, 401, "{body}");
    s.stop().await;
}

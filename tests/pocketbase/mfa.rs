//! MFA, one-time passwords, login alerts and the backup failure mail, side by side with the
//! real PocketBase 0.40.6. Every rule is set through PocketBase's own API (settings `smtp`,
//! `_superusers` with `mfa` and `otp`, an auth collection with OTP alone), PocketBase is
//! stopped, and the same steps run against PocketBase and against this server on copies of
//! that data dir, both mailing one local SMTP sink; the answers must be the same.
//!
//! What PocketBase 0.40.6 answers (measured, and what the steps below check):
//! - A right password on a collection with `mfa.enabled`: 401 `{"mfaId"}` and a `_mfas` row
//!   (`method` `password`). Any login step on such a collection answers that when no `mfaId`
//!   is given, a one-time password too (`method` `otp`).
//! - `request-otp`: 200 `{"otpId"}` for any well-formed email; a known one gets a `_otps` row
//!   (the code bcrypt-hashed at cost 8, `sentTo` filled once the mail is out) and a mail; an
//!   unknown one a made-up id and no mail. A code that cannot be mailed is deleted, the answer
//!   is the same. Beyond 10 unexpired codes per account the newest id is handed out again.
//!   `otp.enabled` off: 403 whatever the body.
//! - `auth-with-otp`: a wrong code 400 `Invalid or expired OTP.` (the row stays); a code past
//!   `otp.duration` from `created` the same; 5 checks per account in 180 s, then 429 `Too many
//!   attempts, please try again later with a new OTP.`; a matching code is deleted before the
//!   MFA check, so a bad `mfaId` (400 `Invalid or expired MFA session.`) costs the code.
//!   `mfaId` of another account: 400 `Invalid MFA session.`; of the same method: 400 `A
//!   different authentication method is required.`; `mfaId` is read from the query (the JS
//!   SDK puts it there) or the body. An unverified account whose email got the code becomes
//!   verified and, without MFA, gets a random password.
//! - `_authOrigins`: `fingerprint` is the MD5 of the client address and user agent; an
//!   account's first login is recorded without a mail; a login from a new origin is mailed
//!   about ("Login from a new location") and then recorded; at most 5 are kept. An alert that
//!   cannot be sent leaves the login alone and the origin unrecorded.
//! - `mfa.rule` picks the accounts MFA applies to; `authRule` is checked before any token, a
//!   one-time password login's too (403 `The request doesn't satisfy the collection
//!   requirements to authenticate.`, the code used up all the same).
//! - A failed scheduled backup mails every superuser, one mail each.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::support::smtp::{Mail, SmtpSink};
use super::support::{eventually, BinaryServer};
use super::{pocketbase_bin, PocketBase, PB_SUPERUSER, PB_USER};

const SECOND: (&str, &str) = ("pb-second@example.com", "pb-second-password");
const MEMBER: (&str, &str) = ("member@example.com", "member-password");
/// Accounts of `staff`, whose `mfa.rule` leaves EXEMPT out and whose `authRule` refuses BLOCKED.
const EXEMPT: (&str, &str) = ("exempt@example.com", "exempt-password");
const STAFF: (&str, &str) = ("staff@example.com", "staff-password");
const BLOCKED: (&str, &str) = ("blocked@example.com", "blocked-password");

/// One server under test: its base URL.
struct Target<'a> {
    base: &'a str,
    dir: &'a Path,
    sink: &'a SmtpSink,
}

async fn call(base: &str, path: &str, body: Value, user_agent: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("Accept-Language", "en")
        .header("User-Agent", user_agent)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A body with what differs between runs replaced: ids, tokens, and the record reduced to
/// what both servers must agree on.
fn shape(body: &Value) -> Value {
    match body {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("mfaId" | "otpId", Value::String(id)) if is_id(id) => json!("<id>"),
                        ("token", Value::String(t)) if t.split('.').count() == 3 => json!("<jwt>"),
                        ("record", r) => json!({"collectionName": r["collectionName"], "email": r["email"], "verified": r["verified"]}),
                        (_, v) => shape(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        v => v.clone(),
    }
}

fn is_id(id: &str) -> bool {
    id.len() == 15 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn rows(dir: &Path, sql: &str) -> Vec<Vec<String>> {
    let conn = rusqlite::Connection::open(dir.join("data.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    let rows = stmt.query_map([], |r| (0..n).map(|i| r.get::<_, String>(i)).collect::<Result<Vec<_>, _>>()).unwrap();
    rows.map(Result::unwrap).collect()
}

async fn wait_mail(sink: &SmtpSink, to: &str, n: usize) -> Mail {
    eventually(Duration::from_secs(30), "a mail", || async move {
        let mails = sink.mails_to(to);
        (mails.len() >= n).then(|| mails[n - 1].clone())
    })
    .await
}

/// The code of the `n`th one-time password mailed to `to`, from PocketBase's default
/// template (which both servers use, as it is the collection's).
async fn code(sink: &SmtpSink, to: &str, n: usize) -> String {
    let mail = eventually(Duration::from_secs(30), "a one-time password mail", || async move {
        let codes: Vec<Mail> = sink.mails_to(to).into_iter().filter(|m| m.subject().starts_with("OTP for")).collect();
        codes.get(n - 1).cloned()
    })
    .await;
    mail.digits_after("one-time password is:", 8).unwrap_or_else(|| panic!("no code in {}", mail.text()))
}

/// The steps, run the same way against each server; what each answered, in order.
async fn scenario(t: &Target<'_>) -> Vec<(&'static str, u16, Value)> {
    let mut out = Vec::new();
    let ua = "pb-backups-test";
    let su = "/api/collections/_superusers";
    let (base, sink) = (t.base, t.sink);
    let mut step = |name: &'static str, (status, body): (u16, Value)| {
        out.push((name, status, shape(&body)));
        body
    };
    let password = |who: (&str, &str), mfa: Option<&str>| {
        let mut body = json!({"identity": who.0, "password": who.1});
        if let Some(id) = mfa {
            body["mfaId"] = json!(id);
        }
        body
    };

    let first = step("password step", call(base, &format!("{su}/auth-with-password"), password(PB_SUPERUSER, None), ua).await);
    let mfa = first["mfaId"].as_str().unwrap_or_default().to_string();
    let su_id = rows(t.dir, &format!("SELECT id FROM _superusers WHERE email = '{}'", PB_SUPERUSER.0))[0][0].clone();
    assert_eq!(
        rows(t.dir, &format!("SELECT collectionRef, recordRef, method FROM _mfas WHERE id = '{mfa}'")),
        [["pbc_3142635823".to_string(), su_id.clone(), "password".into()]],
        "{}",
        t.base
    );

    let otp = step("request-otp", call(base, &format!("{su}/request-otp"), json!({"email": PB_SUPERUSER.0}), ua).await);
    let otp_id = otp["otpId"].as_str().unwrap_or_default().to_string();
    let code1 = code(sink, PB_SUPERUSER.0, 1).await;
    let otp_row = eventually(Duration::from_secs(10), "sentTo noted", || async {
        let r = rows(t.dir, &format!("SELECT recordRef, password, sentTo FROM _otps WHERE id = '{otp_id}'"));
        (r.len() == 1 && !r[0][2].is_empty()).then(|| r[0].clone())
    })
    .await;
    assert_eq!((otp_row[0].as_str(), otp_row[2].as_str()), (su_id.as_str(), PB_SUPERUSER.0), "{}", t.base);
    assert!(otp_row[1].starts_with("$2a$08$"), "{} stores {}", t.base, otp_row[1]);

    step("request-otp, unknown email", call(base, &format!("{su}/request-otp"), json!({"email": "nobody@example.com"}), ua).await);
    step("request-otp, bad email", call(base, &format!("{su}/request-otp"), json!({"email": "not an email"}), ua).await);
    step("request-otp, no email", call(base, &format!("{su}/request-otp"), json!({}), ua).await);
    let wrong = if code1 == "00000000" { "11111111" } else { "00000000" };
    step("wrong code", call(base, &format!("{su}/auth-with-otp"), json!({"otpId": otp_id, "password": wrong}), ua).await);
    step(
        "right code, unknown mfaId",
        call(base, &format!("{su}/auth-with-otp"), json!({"otpId": otp_id, "password": code1, "mfaId": "bogusbogusbogus"}), ua).await,
    );
    step("the same code again", call(base, &format!("{su}/auth-with-otp"), json!({"otpId": otp_id, "password": code1}), ua).await);

    // The whole MFA login: password, then the code with the mfaId in the query (as the SDK sends it).
    step("request-otp again", call(base, &format!("{su}/request-otp"), json!({"email": PB_SUPERUSER.0}), ua).await);
    let otp_id = rows(t.dir, &format!("SELECT id FROM _otps WHERE recordRef = '{su_id}' ORDER BY created DESC LIMIT 1"))[0][0].clone();
    let code2 = code(sink, PB_SUPERUSER.0, 2).await;
    let done = step(
        "right code with the mfaId",
        call(base, &format!("{su}/auth-with-otp?mfaId={mfa}"), json!({"otpId": otp_id, "password": code2}), ua).await,
    );
    let token = done["token"].as_str().unwrap_or_default().to_string();
    assert_eq!(super::list_status(base, &token).await, 200, "{}", t.base);
    assert!(rows(t.dir, &format!("SELECT id FROM _mfas WHERE id = '{mfa}'")).is_empty(), "{}", t.base);

    let again = step("password step again", call(base, &format!("{su}/auth-with-password"), password(PB_SUPERUSER, None), ua).await);
    let mfa2 = again["mfaId"].as_str().unwrap_or_default().to_string();
    step("password twice", call(base, &format!("{su}/auth-with-password"), password(PB_SUPERUSER, Some(&mfa2)), ua).await);
    let other = step("another superuser's password step", call(base, &format!("{su}/auth-with-password"), password(SECOND, None), ua).await);
    let other_mfa = other["mfaId"].as_str().unwrap_or_default().to_string();
    step(
        "another superuser's mfaId",
        call(base, &format!("{su}/auth-with-password"), password(PB_SUPERUSER, Some(&other_mfa)), ua).await,
    );

    // A one-time password as the first step, the password as the second.
    step("request-otp third", call(base, &format!("{su}/request-otp"), json!({"email": PB_SUPERUSER.0}), ua).await);
    let otp_id = rows(t.dir, &format!("SELECT id FROM _otps WHERE recordRef = '{su_id}' ORDER BY created DESC LIMIT 1"))[0][0].clone();
    let code3 = code(sink, PB_SUPERUSER.0, 3).await;
    let first_otp = step("code first", call(base, &format!("{su}/auth-with-otp"), json!({"otpId": otp_id, "password": code3}), ua).await);
    let mfa3 = first_otp["mfaId"].as_str().unwrap_or_default().to_string();
    assert_eq!(rows(t.dir, &format!("SELECT method FROM _mfas WHERE id = '{mfa3}'")), [["otp"]], "{}", t.base);
    step("then the password", call(base, &format!("{su}/auth-with-password"), password(PB_SUPERUSER, Some(&mfa3)), ua).await);

    // users has OTP off.
    step("request-otp, OTP off", call(base, "/api/collections/users/request-otp", json!({"email": PB_USER.0}), ua).await);
    step("auth-with-otp, OTP off", call(base, "/api/collections/users/auth-with-otp", json!({}), ua).await);

    // members: OTP alone, an unverified account.
    let members = "/api/collections/members";
    step("member request-otp", call(base, &format!("{members}/request-otp"), json!({"email": MEMBER.0}), ua).await);
    let otp_id = rows(t.dir, "SELECT id FROM _otps WHERE collectionRef = (SELECT id FROM _collections WHERE name = 'members')")[0][0].clone();
    let member_code = code(sink, MEMBER.0, 1).await;
    // PocketBase notes where the code went just after the mail is out; the OTP login verifies
    // the account only then.
    eventually(Duration::from_secs(10), "sentTo noted", || async {
        let r = rows(t.dir, &format!("SELECT sentTo FROM _otps WHERE id = '{otp_id}'"));
        (r.len() == 1 && r[0][0] == MEMBER.0).then_some(())
    })
    .await;
    step("member OTP login", call(base, &format!("{members}/auth-with-otp"), json!({"otpId": otp_id, "password": member_code}), ua).await);
    step("member's old password", call(base, &format!("{members}/auth-with-password"), password(MEMBER, None), ua).await);

    // staff: mfa.rule leaves one account out; authRule is checked before any token, the
    // one-time password way too.
    let staff = "/api/collections/staff";
    step("mfa.rule leaves out", call(base, &format!("{staff}/auth-with-password"), password(EXEMPT, None), ua).await);
    step("mfa.rule applies", call(base, &format!("{staff}/auth-with-password"), password(STAFF, None), ua).await);
    step("authRule, password", call(base, &format!("{staff}/auth-with-password"), password(BLOCKED, None), ua).await);
    step("authRule, request-otp", call(base, &format!("{staff}/request-otp"), json!({"email": BLOCKED.0}), ua).await);
    let otp_id = rows(t.dir, "SELECT id FROM _otps WHERE collectionRef = (SELECT id FROM _collections WHERE name = 'staff')")[0][0].clone();
    let blocked_code = code(sink, BLOCKED.0, 1).await;
    step("authRule, OTP", call(base, &format!("{staff}/auth-with-otp"), json!({"otpId": otp_id, "password": blocked_code}), ua).await);

    // Login alerts, on users (no MFA): the first login and a known origin are not mailed
    // about, a new one is.
    let users = "/api/collections/users/auth-with-password";
    step("user login", call(base, users, password(PB_USER, None), "agent-one").await);
    step("user login, same origin", call(base, users, password(PB_USER, None), "agent-one").await);
    step("user login, new origin", call(base, users, password(PB_USER, None), "agent-two").await);
    let alert = wait_mail(sink, PB_USER.0, 1).await;
    assert_eq!(alert.subject(), "Login from a new location", "{}", t.base);
    assert!(alert.text().contains("127.0.0.1 agent-two"), "{}: {}", t.base, alert.text());
    let fingerprints = rows(t.dir, "SELECT fingerprint FROM _authOrigins WHERE recordRef = (SELECT id FROM users) ORDER BY created");
    assert_eq!(
        fingerprints,
        [["0c69950bade3214b17edc83ad39a07db".to_string()], ["2af6689399199f3ef7d3313b6df35f25".to_string()]],
        "{}: MD5 of the address and the user agent",
        t.base
    );
    assert!(sink.mails_to("nobody@example.com").is_empty());
    // The superuser's first login was PocketBase's, during the set-up (another user agent):
    // the full login above came from a new origin, the password one after it did not.
    let alerts = sink.mails_to(PB_SUPERUSER.0).iter().filter(|m| m.subject() == "Login from a new location").count();
    assert_eq!(alerts, 1, "{}", t.base);
    out
}

/// PocketBase's logged warnings and errors (it keeps its log in `auxiliary.db`).
fn pocketbase_errors(dir: &Path) -> String {
    let Ok(conn) = rusqlite::Connection::open(dir.join("auxiliary.db")) else { return String::new() };
    let Ok(mut stmt) = conn.prepare("SELECT created || ' ' || message || ' ' || data FROM _logs WHERE level > 0 ORDER BY created") else {
        return String::new();
    };
    let lines = stmt.query_map([], |r| r.get::<_, String>(0)).map(|rows| rows.flatten().collect::<Vec<_>>());
    lines.unwrap_or_default().join("\n")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

async fn patch(base: &str, token: &str, path: &str, body: Value) {
    let r = reqwest::Client::new().patch(format!("{base}{path}")).header("Authorization", token).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "PATCH {path}: {}", r.text().await.unwrap());
}

async fn create(base: &str, token: &str, collection: &str, who: (&str, &str)) {
    let body = json!({"email": who.0, "password": who.1, "passwordConfirm": who.1});
    let r = reqwest::Client::new()
        .post(format!("{base}/api/collections/{collection}/records"))
        .header("Authorization", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "create {}: {}", who.0, r.text().await.unwrap());
}

/// A PocketBase data dir with every rule set through PocketBase's API, mail to `sink`, the
/// backups schedule `cron`;
/// PocketBase is stopped when it returns. The data dir has a parent of its own (PocketBase
/// writes `pb_migrations/` beside it).
async fn configured_data_dir(bin: &Path, root: &Path, sink: &SmtpSink, cron: &str) -> PathBuf {
    let dir = root.join("pb").join("pb_data");
    PocketBase::superuser_upsert(bin, &dir, PB_SUPERUSER);
    let pb = PocketBase::start(bin, &dir).await;
    let su = super::login(&pb.base, "_superusers", PB_SUPERUSER).await;
    patch(&pb.base, &su, "/api/settings", json!({
        "smtp": {"enabled": true, "host": "127.0.0.1", "port": sink.port, "tls": false},
        "meta": {"appName": "Acme", "senderName": "Acme Support", "senderAddress": "support@acme.test"},
        "backups": {"cron": cron, "cronMaxKeep": 3}
    }))
    .await;
    create(&pb.base, &su, "_superusers", SECOND).await;
    create(&pb.base, &su, "users", PB_USER).await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/collections", pb.base))
        .header("Authorization", &su)
        // As PocketBase makes a new auth collection: without `created`/`updated` fields.
        .json(&json!({"name": "members", "type": "auth", "otp": {"enabled": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "create members: {}", r.text().await.unwrap());
    create(&pb.base, &su, "members", MEMBER).await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/collections", pb.base))
        .header("Authorization", &su)
        .json(&json!({"name": "staff", "type": "auth", "authRule": "email != 'blocked@example.com'",
            "mfa": {"enabled": true, "rule": "email != 'exempt@example.com'"}, "otp": {"enabled": true},
            "fields": [
                {"name": "created", "type": "autodate", "onCreate": true},
                {"name": "updated", "type": "autodate", "onCreate": true, "onUpdate": true}
            ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "create staff: {}", r.text().await.unwrap());
    for who in [EXEMPT, STAFF, BLOCKED] {
        create(&pb.base, &su, "staff", who).await;
    }
    patch(&pb.base, &su, "/api/collections/_superusers", json!({"otp": {"enabled": true}, "mfa": {"enabled": true}})).await;
    // The admin's own login above is its first: recorded, so later logins from elsewhere alert.
    pb.stop();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn mfa_otp_and_login_alerts_answer_as_pocketbase_does() {
    let bin = pocketbase_bin("0.40.6");
    let root = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start();
    let dir = configured_data_dir(&bin, root.path(), &sink, "").await;
    let ours_dir = root.path().join("ours").join("pb_data");
    copy_dir(&dir, &ours_dir);

    let pb = PocketBase::start(&bin, &dir).await;
    sink.clear();
    let theirs = scenario(&Target { base: &pb.base, dir: &dir, sink: &sink }).await;
    pb.stop();

    sink.clear();
    let ours = BinaryServer::start(&ours_dir);
    let mine = scenario(&Target { base: &ours.base, dir: &ours_dir, sink: &sink }).await;
    for (t, m) in theirs.iter().zip(&mine) {
        assert_eq!(m, t, "step {:?}: ours (left) and PocketBase's (right) differ", t.0);
    }
    assert_eq!(mine.len(), theirs.len());
    // Spot checks that the comparison is about something.
    let status = |name: &str| mine.iter().find(|s| s.0 == name).unwrap().1;
    assert_eq!(status("password step"), 401);
    assert_eq!(status("right code with the mfaId"), 200);
    assert_eq!(status("right code, unknown mfaId"), 400);
    assert_eq!(status("request-otp, OTP off"), 403);
    assert_eq!(status("member's old password"), 400);
    assert_eq!((status("mfa.rule leaves out"), status("mfa.rule applies")), (200, 401));
    assert_eq!((status("authRule, password"), status("authRule, OTP")), (403, 403));
}

/// A login begun on one server is finished on the other, and the token works on both: the
/// state is PocketBase's own rows.
#[tokio::test(flavor = "multi_thread")]
async fn an_mfa_login_begun_on_one_server_finishes_on_the_other() {
    let bin = pocketbase_bin("0.40.6");
    let root = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start();
    let dir = configured_data_dir(&bin, root.path(), &sink, "").await;
    let su = "/api/collections/_superusers";
    let ua = "pb-backups-test";

    // Begun on PocketBase, finished here.
    let pb = PocketBase::start(&bin, &dir).await;
    let (_, first) = call(&pb.base, &format!("{su}/auth-with-password"), json!({"identity": PB_SUPERUSER.0, "password": PB_SUPERUSER.1}), ua).await;
    let (_, otp) = call(&pb.base, &format!("{su}/request-otp"), json!({"email": PB_SUPERUSER.0}), ua).await;
    let code1 = code(&sink, PB_SUPERUSER.0, 1).await;
    pb.stop();
    let ours = BinaryServer::start(&dir);
    let (status, done) = call(
        &ours.base,
        &format!("{su}/auth-with-otp"),
        json!({"otpId": otp["otpId"], "password": code1, "mfaId": first["mfaId"]}),
        ua,
    )
    .await;
    assert_eq!(status, 200, "{done}");
    let ours_token = done["token"].as_str().unwrap().to_string();
    assert_eq!(super::list_status(&ours.base, &ours_token).await, 200);

    // Begun here, finished on PocketBase.
    let (_, first) = call(&ours.base, &format!("{su}/auth-with-password"), json!({"identity": PB_SUPERUSER.0, "password": PB_SUPERUSER.1}), ua).await;
    let (_, otp) = call(&ours.base, &format!("{su}/request-otp"), json!({"email": PB_SUPERUSER.0}), ua).await;
    let code2 = code(&sink, PB_SUPERUSER.0, 2).await;
    drop(ours);
    let pb = PocketBase::start(&bin, &dir).await;
    let (status, done) = call(
        &pb.base,
        &format!("{su}/auth-with-otp"),
        json!({"otpId": otp["otpId"], "password": code2, "mfaId": first["mfaId"]}),
        ua,
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(super::list_status(&pb.base, done["token"].as_str().unwrap()).await, 200);
    assert_eq!(super::list_status(&pb.base, &ours_token).await, 200, "the token we issued, checked by PocketBase");
    pb.stop();
}

/// A scheduled backup that fails mails each superuser, on both servers: two copies of one
/// data dir with a cron of every minute, their backups folder replaced by a file.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_scheduled_backup_mails_every_superuser_on_both_servers() {
    let bin = pocketbase_bin("0.40.6");
    let root = tempfile::tempdir().unwrap();
    let (theirs_sink, ours_sink) = (SmtpSink::start(), SmtpSink::start());
    let dir = configured_data_dir(&bin, root.path(), &theirs_sink, "* * * * *").await;
    theirs_sink.clear();
    let ours_dir = root.path().join("ours").join("pb_data");
    copy_dir(&dir, &ours_dir);
    super::support::smtp::configure(&ours_dir, ours_sink.port, &[]);

    let pb = PocketBase::start(&bin, &dir).await;
    let ours = BinaryServer::start(&ours_dir);
    // Serving, so each has opened its backups folder (ours refuses to start without one).
    let health = reqwest::get(format!("{}/api/health", ours.base)).await.unwrap();
    assert_eq!(health.status(), 200);
    for d in [&dir, &ours_dir] {
        let backups = d.join("backups");
        let _ = std::fs::remove_dir_all(&backups);
        std::fs::write(&backups, b"not a folder").unwrap();
    }
    let superusers = [PB_SUPERUSER.0, SECOND.0];
    let failure_mails = |sink: &SmtpSink| -> Vec<Mail> {
        sink.mails().into_iter().filter(|m| m.subject().to_lowercase().contains("backup")).collect()
    };
    // Both schedules fire at the next minute; a mail server a little slow is waited for.
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    while failure_mails(&theirs_sink).len() < 2 || failure_mails(&ours_sink).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "failure mails: PocketBase {:?}, ours {:?}\n--- our log\n{}\n--- PocketBase's log\n{}",
            failure_mails(&theirs_sink).iter().map(|m| m.to.clone()).collect::<Vec<_>>(),
            failure_mails(&ours_sink).iter().map(|m| m.to.clone()).collect::<Vec<_>>(),
            std::fs::read_to_string(&ours.log).unwrap_or_default(),
            pocketbase_errors(&dir),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for sink in [&theirs_sink, &ours_sink] {
        let mut to: Vec<String> = failure_mails(sink).iter().flat_map(|m| m.to.clone()).collect();
        to.sort();
        to.dedup();
        assert_eq!(to, superusers, "one mail to each superuser");
        assert!(failure_mails(sink).iter().all(|m| m.to.len() == 1), "one recipient per mail");
    }
    assert!(ours_sink.mails().iter().all(|m| !m.text().contains(&ours_dir.display().to_string())), "no paths in our mail");
    drop(ours);
    pb.stop();
}

//! PocketBase's access rules, configured on the real PocketBase 0.40.6 through its own API
//! (`POST`/`PATCH /api/collections`, `PATCH /api/settings`), answered by it, then answered by
//! this server on the same data dir with PocketBase stopped: the same status and body for
//! every case, except where a difference is stated and asserted (we refuse rules we cannot
//! evaluate that PocketBase would pass; health stays open; a download's 403 has our text).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::support::BinaryServer;
use super::{login, pocketbase_bin, PocketBase, PB_SUPERUSER, PB_USER as USER};

/// What came back: status and JSON body (Null when empty or not JSON).
#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    body: Value,
}

/// One request of a comparison, sent alike to both servers.
#[derive(Clone, Debug)]
struct Probe {
    label: String,
    method: reqwest::Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
}

impl Probe {
    fn new(label: impl Into<String>, method: reqwest::Method, path: impl Into<String>) -> Probe {
        Probe { label: label.into(), method, path: path.into(), headers: Vec::new(), body: None }
    }

    fn login(label: impl Into<String>, collection: &str, body: Value) -> Probe {
        let path = format!("/api/collections/{collection}/auth-with-password");
        Probe { body: Some(body), ..Probe::new(label, reqwest::Method::POST, path) }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Probe {
        self.headers.push((name, value.into()));
        self
    }
}

async fn ask(base: &str, probe: &Probe) -> Answer {
    let mut r = reqwest::Client::new().request(probe.method.clone(), format!("{base}{}", probe.path));
    for (name, value) in &probe.headers {
        r = r.header(*name, value);
    }
    if let Some(body) = &probe.body {
        r = r.json(body);
    }
    let r = r.send().await.unwrap_or_else(|e| panic!("{}: {e}", probe.label));
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    Answer { status, body }
}

async fn ask_all(base: &str, probes: &[Probe]) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(probes.len());
    for probe in probes {
        answers.push(ask(base, probe).await);
    }
    answers
}

/// The part of an answer both servers must agree on: the whole body of an error; for a
/// login, which record it is (tokens and the fields shown differ by design).
fn comparable(a: &Answer) -> Value {
    match (a.status, a.body.get("record")) {
        (200, Some(record)) => json!({"status": 200, "record": record["id"], "token": a.body["token"].is_string()}),
        (200, _) => json!({"status": 200}),
        _ => json!({"status": a.status, "body": a.body}),
    }
}

/// A data dir for PocketBase with a parent of its own (its automigrate writes
/// `pb_migrations/` beside it) and its superuser.
fn pocketbase_dir(root: &Path, bin: &Path) -> PathBuf {
    let dir = root.join("pb").join("pb_data");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    PocketBase::superuser_upsert(bin, &dir, PB_SUPERUSER);
    dir
}

/// Our binary on `dir`, English by default (as PocketBase), behind a proxy at 127.0.0.1, with a
/// login burst no test here reaches.
fn ours(dir: &Path) -> BinaryServer {
    BinaryServer::start_with(dir, &[("PB_LANG", "en"), ("PB_TRUSTED_PROXIES", "127.0.0.1/32"), ("PB_LOGIN_BURST", "100000")])
}

async fn api(base: &str, token: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .header("Authorization", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The records every rule collection holds: (email, password, fields).
fn people() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("alice@example.com", "alice-password", json!({"verified": true, "name": "Alice", "age": 42, "roles": ["admin", "dev"]})),
        ("bob@example.com", "bob-password", json!({"verified": false, "name": "", "age": 0, "roles": []})),
        ("carol@example.org", "carol-password", json!({"verified": false, "name": "Carol_100%", "age": 17, "roles": ["dev"]})),
    ]
}

/// Each rule PocketBase accepts as an `authRule`, in a collection of its own.
const RULES: &[&str] = &[
    "",
    "verified = true",
    "verified = false && name = ''",
    "name != ''",
    "name = null",
    "null != name",
    "age > 18",
    "age >= 17 && age < 42",
    "age = '42'",
    "age ?> 20",
    "name ~ 'ali'",
    "name ~ 'L_1'",
    "name ~ '%100\\%'",
    "name !~ 'a'",
    "email ~ 'example.com' && (age > 40 || verified = false)",
    "verified = true || age = 17 && name ~ 'carol'",
    "roles ?= 'admin'",
    "roles ~ 'dev'",
    "roles = '[]'",
    "id != '' && emailVisibility = false",
    "created > '2000-01-01' && updated != ''",
    "'a' = 'a'",
    "name = true",
    "TRUE = true && NULL = null",
    "verified = true // a comment\n|| name ~ 'bob'",
    // Not evaluated here; PocketBase refuses these logins too (no auth on a login request).
    "@request.auth.id != ''",
];

/// Rules PocketBase evaluates and we do not: we refuse every login, it admits some.
const UNSUPPORTED: &[&str] = &["@request.method = 'POST'", "name:lower = 'alice'"];

#[tokio::test(flavor = "multi_thread")]
async fn auth_rules_and_identity_fields_get_pocketbase_s_answers() {
    let bin = pocketbase_bin("0.40.6");
    let root = tempfile::tempdir().unwrap();
    let dir = pocketbase_dir(root.path(), &bin);
    let pb = PocketBase::start(&bin, &dir).await;
    let su = login(&pb.base, "_superusers", PB_SUPERUSER).await;
    let post = reqwest::Method::POST;

    // One auth collection per rule (and a null rule), each with the same people.
    let mut probes = Vec::new();
    let mut unsupported_probes = Vec::new();
    let rules = RULES.iter().map(|r| (json!(r), false));
    let rules = rules.chain([(Value::Null, false)]).chain(UNSUPPORTED.iter().map(|r| (json!(r), true)));
    for (i, (rule, unsupported)) in rules.enumerate() {
        let name = format!("rule{i:02}");
        let collection = json!({
            "name": name, "type": "auth", "authRule": rule,
            "fields": [
                {"name": "name", "type": "text"},
                {"name": "age", "type": "number"},
                {"name": "roles", "type": "select", "maxSelect": 2, "values": ["admin", "dev"]},
                {"name": "created", "type": "autodate", "onCreate": true},
                {"name": "updated", "type": "autodate", "onCreate": true, "onUpdate": true}
            ]
        });
        api(&pb.base, &su, post.clone(), "/api/collections", collection).await;
        for (email, password, fields) in people() {
            let mut record = fields.clone();
            record["email"] = json!(email);
            record["password"] = json!(password);
            record["passwordConfirm"] = json!(password);
            api(&pb.base, &su, post.clone(), &format!("/api/collections/{name}/records"), record).await;
            let probe = Probe::login(format!("{name} {rule} {email}"), &name, json!({"identity": email, "password": password}));
            if unsupported {
                unsupported_probes.push(probe);
            } else {
                probes.push(probe);
            }
        }
        // A wrong password is a 400 whatever the rule.
        let wrong = json!({"identity": "alice@example.com", "password": "wrong-password"});
        probes.push(Probe::login(format!("{name} {rule} wrong password"), &name, wrong));
    }

    // Identity fields: a unique `username`, binary or NOCASE, searched after `email`.
    for (name, collate) in [("members", ""), ("members_nocase", " COLLATE NOCASE")] {
        let collection = json!({
            "name": name, "type": "auth",
            "fields": [{"name": "username", "type": "text"}],
            "indexes": [format!("CREATE UNIQUE INDEX `idx_{name}_username` ON `{name}` (`username`{collate})")],
            "passwordAuth": {"enabled": true, "identityFields": ["email", "username"]}
        });
        api(&pb.base, &su, post.clone(), "/api/collections", collection).await;
        // m2's username is m1's email.
        for (email, username, password) in
            [("m1@example.com", "Mallory", "m1-password"), ("m2@example.com", "m1@example.com", "m2-password")]
        {
            let record = json!({"email": email, "username": username, "password": password, "passwordConfirm": password});
            api(&pb.base, &su, post.clone(), &format!("/api/collections/{name}/records"), record).await;
        }
        for (label, body) in [
            ("username", json!({"identity": "Mallory", "password": "m1-password"})),
            ("username in another case", json!({"identity": "mALLORY", "password": "m1-password"})),
            ("email", json!({"identity": "m1@example.com", "password": "m1-password"})),
            ("email in another case", json!({"identity": "M1@example.com", "password": "m1-password"})),
            ("an email that is another's username", json!({"identity": "m1@example.com", "password": "m2-password"})),
            ("by username field", json!({"identity": "m1@example.com", "password": "m2-password", "identityField": "username"})),
            ("by email field", json!({"identity": "Mallory", "password": "m1-password", "identityField": "email"})),
            ("by a field that is none", json!({"identity": "Mallory", "password": "m1-password", "identityField": "name"})),
            ("unknown", json!({"identity": "nobody", "password": "m1-password"})),
        ] {
            probes.push(Probe::login(format!("{name}: {label}"), name, body));
        }
    }
    // The `users` collection's own rule, as the issue describes it.
    api(&pb.base, &su, reqwest::Method::PATCH, "/api/collections/users", json!({"authRule": "verified = true"})).await;
    for (email, verified) in [("unverified@example.com", false), ("verified@example.com", true)] {
        let user = json!({"email": email, "password": "user-password", "passwordConfirm": "user-password", "verified": verified});
        api(&pb.base, &su, post.clone(), "/api/collections/users/records", user).await;
        probes.push(Probe::login(format!("users: {email}"), "users", json!({"identity": email, "password": "user-password"})));
    }

    let theirs = ask_all(&pb.base, &probes).await;
    let theirs_unsupported = ask_all(&pb.base, &unsupported_probes).await;
    pb.stop();

    let server = ours(&dir);
    let mine = ask_all(&server.base, &probes).await;
    let mine_unsupported = ask_all(&server.base, &unsupported_probes).await;
    let differing: Vec<String> = probes
        .iter()
        .zip(theirs.iter().zip(&mine))
        .filter(|(_, (t, m))| comparable(t) != comparable(m))
        .map(|(p, (t, m))| format!("{}: PocketBase {} / ours {}", p.label, comparable(t), comparable(m)))
        .collect();
    assert!(differing.is_empty(), "answers differ:\n{}", differing.join("\n"));

    // The case the issue names, and that every kind of answer occurs at all.
    let unverified = probes.iter().position(|p| p.label == "users: unverified@example.com").unwrap();
    assert_eq!((theirs[unverified].status, mine[unverified].status), (403, 403));
    assert_eq!(
        mine[unverified].body,
        json!({"status": 403, "message": "The request doesn't satisfy the collection requirements to authenticate.", "data": {}})
    );
    for status in [200, 400, 403] {
        assert!(theirs.iter().any(|a| a.status == status), "no {status} among PocketBase's answers");
    }

    // Rules we cannot evaluate: PocketBase admits some of those logins, we refuse them all.
    assert!(theirs_unsupported.iter().any(|a| a.status == 200), "{theirs_unsupported:?}");
    for (probe, answer) in unsupported_probes.iter().zip(&mine_unsupported) {
        assert_eq!(answer.status, 403, "{}: {:?}", probe.label, answer.body);
    }
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("authRule cannot be evaluated here") && log.contains("@request.method"), "the rule is logged");
}

/// The settings probes: logins and superuser requests from several client addresses, as a
/// proxy at 127.0.0.1 names them in `X-Forwarded-For`.
fn address_probes(su_token: &str, su_file_token: &str) -> Vec<Probe> {
    let get = reqwest::Method::GET;
    let su_login = |label: &str, xff: Option<&str>, password: &str| {
        let probe = Probe::login(label, "_superusers", json!({"identity": PB_SUPERUSER.0, "password": password}));
        match xff {
            Some(xff) => probe.header("X-Forwarded-For", xff),
            None => probe,
        }
    };
    let pw = PB_SUPERUSER.1;
    vec![
        su_login("login from an allowed address", Some("10.1.2.3"), pw),
        su_login("login from a listed range", Some("192.168.7.7"), pw),
        su_login("login with no header (the proxy itself)", None, pw),
        su_login("login, allowed address leftmost", Some("10.1.2.3, 203.0.113.9"), pw),
        su_login("login, allowed address rightmost", Some("203.0.113.9, 10.1.2.3"), pw),
        su_login("login, wrong password from elsewhere", Some("203.0.113.9"), "wrong-password"),
        su_login("login with its own Forwarded", Some("203.0.113.9"), pw).header("Forwarded", "for=10.1.2.3"),
        Probe::login("a user's login from elsewhere", "users", json!({"identity": USER.0, "password": USER.1}))
            .header("X-Forwarded-For", "203.0.113.9"),
        Probe::new("list from an allowed address", get.clone(), "/api/backups")
            .header("Authorization", su_token)
            .header("X-Forwarded-For", "10.1.2.3"),
        Probe::new("list from elsewhere", get.clone(), "/api/backups")
            .header("Authorization", su_token)
            .header("X-Forwarded-For", "203.0.113.9"),
        Probe::new("settings from elsewhere", get.clone(), "/api/settings").header("Authorization", su_token),
        Probe::new("file token from elsewhere", reqwest::Method::POST, "/api/files/token").header("Authorization", su_token),
        Probe::new("health without a token", get.clone(), "/api/health"),
        // Compared apart below.
        Probe::new("health with a superuser's token from elsewhere", get.clone(), "/api/health")
            .header("Authorization", su_token),
        Probe::new("download with a superuser's file token from elsewhere", get, format!("/api/backups/kept.zip?token={su_file_token}")),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn superuser_ips_and_trusted_proxy_get_pocketbase_s_answers_both_ways() {
    let bin = pocketbase_bin("0.40.6");
    let root = tempfile::tempdir().unwrap();
    let dir = pocketbase_dir(root.path(), &bin);
    let pb = PocketBase::start(&bin, &dir).await;
    let su = login(&pb.base, "_superusers", PB_SUPERUSER).await;
    let user = json!({"email": USER.0, "password": USER.1, "passwordConfirm": USER.1});
    api(&pb.base, &su, reqwest::Method::POST, "/api/collections/users/records", user).await;
    let r = reqwest::Client::new().post(format!("{}/api/backups", pb.base)).header("Authorization", &su);
    assert_eq!(r.json(&json!({"name": "kept.zip"})).send().await.unwrap().status(), 204);
    let file_token = api(&pb.base, &su, reqwest::Method::POST, "/api/files/token", json!({})).await;
    let file_token = file_token["token"].as_str().unwrap().to_string();
    let settings = json!({
        "superuserIPs": ["10.1.2.3", "192.168.0.0/16"],
        "trustedProxy": {"headers": ["X-Forwarded-For"], "useLeftmostIP": false}
    });
    api(&pb.base, &su, reqwest::Method::PATCH, "/api/settings", settings).await;
    let probes = address_probes(&su, &file_token);
    let theirs_rightmost = ask_all(&pb.base, &probes).await;
    pb.stop();

    let server = ours(&dir);
    let mine_rightmost = ask_all(&server.base, &probes).await;
    drop(server);

    // The other way: leftmost, set through PocketBase's API from an allowed address.
    let pb = PocketBase::start(&bin, &dir).await;
    let r = reqwest::Client::new()
        .patch(format!("{}/api/settings", pb.base))
        .header("Authorization", &su)
        .header("X-Forwarded-For", "10.1.2.3")
        .json(&json!({"trustedProxy": {"useLeftmostIP": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let theirs_leftmost = ask_all(&pb.base, &probes).await;
    pb.stop();
    let server = ours(&dir);
    let mine_leftmost = ask_all(&server.base, &probes).await;
    // Our GET of the settings PocketBase wrote (from an allowed address).
    let r = reqwest::Client::new()
        .get(format!("{}/api/settings", server.base))
        .header("Authorization", &su)
        .header("X-Forwarded-For", "192.168.1.1")
        .send()
        .await
        .unwrap();
    let stored: Value = r.json().await.unwrap();
    assert_eq!(stored["superuserIPs"], json!(["10.1.2.3", "192.168.0.0/16"]));
    assert_eq!(stored["trustedProxy"], json!({"headers": ["X-Forwarded-For"], "useLeftmostIP": true}));

    let compared = probes.len() - 2;
    let ways = [("rightmost", &theirs_rightmost, &mine_rightmost), ("leftmost", &theirs_leftmost, &mine_leftmost)];
    for (way, theirs, mine) in ways {
        let differing: Vec<String> = probes[..compared]
            .iter()
            .zip(theirs.iter().zip(mine.iter()))
            .filter(|(_, (t, m))| comparable(t) != comparable(m))
            .map(|(p, (t, m))| format!("{way}, {}: PocketBase {} / ours {}", p.label, comparable(t), comparable(m)))
            .collect();
        assert!(differing.is_empty(), "answers differ:\n{}", differing.join("\n"));
        // Health stays open here: a superuser's token from elsewhere is answered as anyone's
        // (PocketBase answers 403).
        assert_eq!(theirs[compared].status, 403);
        assert_eq!((mine[compared].status, &mine[compared].body["data"]), (200, &json!({})));
        // A download with a superuser's file token from elsewhere: 403 on both, ours with the
        // message of every other refused superuser request.
        assert_eq!((theirs[compared + 1].status, mine[compared + 1].status), (403, 403));
        assert_eq!(mine[compared + 1].body["message"], "You are not allowed to perform this request.");
    }
    let status = |answers: &[Answer], label: &str| answers[probes.iter().position(|p| p.label == label).unwrap()].status;
    // The two ways differ where they should, so each was exercised.
    assert_eq!(status(&mine_rightmost, "login, allowed address rightmost"), 200);
    assert_eq!(status(&mine_rightmost, "login, allowed address leftmost"), 403);
    assert_eq!(status(&mine_leftmost, "login, allowed address rightmost"), 403);
    assert_eq!(status(&mine_leftmost, "login, allowed address leftmost"), 200);
    assert_eq!(status(&mine_rightmost, "login with no header (the proxy itself)"), 403);
    assert_eq!(status(&mine_rightmost, "login with its own Forwarded"), 403);
}

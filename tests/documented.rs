//! Documented responses beyond the spec's 27 (those are `conformance.rs`'s): the settings'
//! (`GET` / `PATCH /api/settings`, `POST /api/settings/test/s3`, against moto) and the refusals the access rules add to the login and the
//! file token. Each is produced by a live in-process server over HTTP, in Chinese (default)
//! and English, and pinned as an insta snapshot (`tests/snapshots/documented__*`).
//!
//! The table in `documented!` names one case per response (several when one status has
//! several causes); `the_table_covers_the_document` holds it to the OpenAPI document: every
//! status of a fully covered operation has a case, and no case names a status the document
//! lacks. A new documented response is a new row here and a function in `cases`.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};
use support::*;

/// (label, `Accept-Language` sent).
const LANGS: [(&str, Option<&str>); 2] = [("zh", None), ("en", Some("en"))];

macro_rules! documented {
    ($($name:ident: $op:literal $status:literal, $setup:ident, $when:literal;)*) => {
        /// (operationId, status, test) for every generated test.
        const TABLE: &[(&str, u16, &str)] = &[$(($op, $status, stringify!($name))),*];
        $(
            #[tokio::test]
            async fn $name() {
                let f = Fixture::start(Setup::$setup).await;
                for (lang, accept) in LANGS {
                    let got = cases::$name(&f, accept).await;
                    assert_eq!(got.status, $status, "{}: {}", got.request, got.body);
                    snapshot(stringify!($name), $op, $when, lang, &got);
                }
                f.s.stop().await;
            }
        )*
    };
}

documented! {
    get_settings_200: "getSettings" 200, Plain, "a superuser's token";
    get_settings_400: "getSettings" 400, Plain, "the settings row is not JSON";
    get_settings_401: "getSettings" 401, Plain, "no token";
    get_settings_403: "getSettings" 403, Plain, "a regular user's token";
    get_settings_403_address: "getSettings" 403, AddressRestricted, "a superuser's token, from an address outside superuserIPs";
    update_settings_200: "updateSettings" 200, Plain, "a superuser's token, valid values";
    update_settings_400: "updateSettings" 400, Plain, "an invalid cron and keep";
    update_settings_400_superuser_ips: "updateSettings" 400, Plain, "superuserIPs entries that are not addresses or ranges";
    update_settings_400_type: "updateSettings" 400, Plain, "values of the wrong type";
    update_settings_400_s3: "updateSettings" 400, Plain, "backups.s3 enabled without a bucket or secret, and an s3 endpoint that is not a URL";
    update_settings_400_json: "updateSettings" 400, Plain, "a body that is not JSON";
    update_settings_401: "updateSettings" 401, Plain, "no token";
    update_settings_403: "updateSettings" 403, Plain, "a regular user's token";
    test_s3_204: "testS3" 204, Plain, "backups.s3 saved with a bucket that exists";
    test_s3_400: "testS3" 400, Plain, "backups.s3 not enabled";
    test_s3_400_filesystem: "testS3" 400, Plain, "a filesystem that is neither backups nor storage";
    test_s3_400_unreachable: "testS3" 400, Plain, "the file storage's s3 saved with an endpoint nothing listens on";
    test_s3_400_no_bucket: "testS3" 400, Plain, "backups.s3 saved with a bucket that does not exist";
    test_s3_401: "testS3" 401, Plain, "no token";
    test_s3_403: "testS3" 403, Plain, "a regular user's token";
    auth_with_password_400_identity_field: "authWithPassword" 400, Plain, "an identityField that is not one of the collection's";
    auth_with_password_403_auth_rule: "authWithPassword" 403, UnverifiedUsers, "the right password of a user the authRule `verified = true` refuses";
    auth_with_password_403_address: "authWithPassword" 403, AddressRestricted, "a superuser's right password, from an address outside superuserIPs";
    file_token_403: "fileToken" 403, AddressRestricted, "a superuser's token, from an address outside superuserIPs";
}

/// Operations whose every documented status is in the table.
const FULLY_COVERED: &[&str] = &["getSettings", "updateSettings", "testS3"];

#[test]
fn the_table_covers_the_document() {
    let doc = pb_backups::http::openapi::document();
    let mut documented = BTreeSet::new();
    for methods in doc["paths"].as_object().unwrap().values() {
        for op in methods.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            for status in op["responses"].as_object().into_iter().flat_map(|r| r.keys()) {
                documented.insert((id.clone(), status.parse::<u16>().unwrap()));
            }
        }
    }
    let tested: BTreeSet<(String, u16)> = TABLE.iter().map(|&(op, status, _)| (op.to_string(), status)).collect();
    let undocumented: Vec<_> = tested.difference(&documented).collect();
    assert!(undocumented.is_empty(), "tested but not documented: {undocumented:?}");
    let untested: Vec<_> =
        documented.iter().filter(|r| FULLY_COVERED.contains(&r.0.as_str()) && !tested.contains(*r)).collect();
    assert!(untested.is_empty(), "documented but not tested: {untested:?}");
}

/// One response as received, with the request that produced it (tokens replaced by labels).
struct Got {
    request: String,
    status: u16,
    content_type: Option<String>,
    body: Value,
}

enum Setup {
    Plain,
    /// `superuserIPs: ["10.1.2.3"]`: every request here comes from 127.0.0.1.
    AddressRestricted,
    /// `users` has the authRule `verified = true` and an unverified user.
    UnverifiedUsers,
}

struct Fixture {
    s: TestServer,
    su: String,
    user: String,
}

fn unverified_users(dir: &Path) {
    let conn = rusqlite::Connection::open(dir.join("data.db")).unwrap();
    let options: String = conn.query_row("SELECT options FROM _collections WHERE name = 'users'", [], |r| r.get(0)).unwrap();
    let mut options: Value = serde_json::from_str(&options).unwrap();
    options["authRule"] = json!("verified = true");
    conn.execute("UPDATE _collections SET options = ?1 WHERE name = 'users'", [options.to_string()]).unwrap();
    conn.execute("UPDATE users SET verified = FALSE", []).unwrap();
}

impl Fixture {
    async fn start(setup: Setup) -> Fixture {
        let prepare: Option<Box<dyn FnOnce(&Path) + Send>> = match setup {
            Setup::UnverifiedUsers => Some(Box::new(unverified_users)),
            _ => None,
        };
        let s = TestServer::start_with(Options { prepare, ..Default::default() }).await;
        let su = s.superuser_token().await;
        let user = match setup {
            Setup::UnverifiedUsers => String::new(),
            _ => s.user_token().await,
        };
        if let Setup::AddressRestricted = setup {
            let r = s.client.patch(s.url("/api/settings")).header("Authorization", &su);
            let r = r.json(&json!({"superuserIPs": ["10.1.2.3"]})).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
        Fixture { s, su, user }
    }

    fn request(&self, accept: Option<&str>, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.s.client.request(method, self.s.url(path));
        match accept {
            Some(lang) => r.header("Accept-Language", lang),
            None => r,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Got {
        let request = request.build().unwrap();
        let mut line = format!("{} {}", request.method(), request.url().path());
        for (name, value) in request.headers() {
            if matches!(name.as_str(), "authorization" | "accept-language") {
                line.push_str(&format!(", {}: {}", name, value.to_str().unwrap()));
            }
        }
        if let Some(body) = request.body().and_then(|b| b.as_bytes()) {
            line.push_str(&format!(", body: {}", String::from_utf8_lossy(body)));
        }
        for (token, label) in [(&self.su, "[superuser token]"), (&self.user, "[user token]")] {
            if !token.is_empty() {
                line = line.replace(token.as_str(), label);
            }
        }
        let r = self.s.client.execute(request).await.unwrap();
        let status = r.status().as_u16();
        let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
        let (_, body) = status_json(r).await;
        Got { request: line, status, content_type, body }
    }
}

/// Pins the response as `documented__{name}_{lang}.snap`.
fn snapshot(name: &str, op: &str, when: &str, lang: &str, got: &Got) {
    let value = json!({
        "request": got.request,
        "when": when,
        "status": got.status,
        "headers": {"content-type": got.content_type},
        "body": got.body,
    });
    insta::with_settings!({ description => format!("{op} {}, {lang}", got.status), omit_expression => true }, {
        insta::assert_json_snapshot!(format!("{name}_{lang}"), value);
    });
}

/// One function per documented response: send the request, return what came back (plus
/// checks that only make sense for that case).
mod cases {
    use super::*;

    const SETTINGS: &str = "/api/settings";

    fn get(f: &Fixture, accept: Option<&str>, token: Option<&str>) -> reqwest::RequestBuilder {
        let r = f.request(accept, reqwest::Method::GET, SETTINGS);
        match token {
            Some(token) => r.header("Authorization", token),
            None => r,
        }
    }

    fn patch(f: &Fixture, accept: Option<&str>, token: Option<&str>) -> reqwest::RequestBuilder {
        let r = f.request(accept, reqwest::Method::PATCH, SETTINGS);
        match token {
            Some(token) => r.header("Authorization", token),
            None => r,
        }
    }

    fn login(f: &Fixture, accept: Option<&str>, collection: &str, body: Value) -> reqwest::RequestBuilder {
        f.request(accept, reqwest::Method::POST, &format!("/api/collections/{collection}/auth-with-password")).json(&body)
    }

    pub async fn get_settings_200(f: &Fixture, accept: Option<&str>) -> Got {
        f.send(get(f, accept, Some(&f.su))).await
    }

    pub async fn get_settings_400(f: &Fixture, accept: Option<&str>) -> Got {
        let conn = rusqlite::Connection::open(f.s.data_dir().join("data.db")).unwrap();
        conn.execute("UPDATE _params SET value = 'not json' WHERE id = 'settings'", []).unwrap();
        f.send(get(f, accept, Some(&f.su))).await
    }

    pub async fn get_settings_401(f: &Fixture, accept: Option<&str>) -> Got {
        f.send(get(f, accept, None)).await
    }

    pub async fn get_settings_403(f: &Fixture, accept: Option<&str>) -> Got {
        f.send(get(f, accept, Some(&f.user))).await
    }

    pub async fn get_settings_403_address(f: &Fixture, accept: Option<&str>) -> Got {
        f.send(get(f, accept, Some(&f.su))).await
    }

    pub async fn update_settings_200(f: &Fixture, accept: Option<&str>) -> Got {
        let body = json!({
            "backups": {"cron": "0 3 * * *", "cronMaxKeep": 5},
            "superuserIPs": ["127.0.0.1", "10.0.0.0/8", "::1"],
            "trustedProxy": {"headers": ["X-Forwarded-For"], "useLeftmostIP": false}
        });
        let got = f.send(patch(f, accept, Some(&f.su)).json(&body)).await;
        assert_eq!(f.send(get(f, accept, Some(&f.su))).await.body, got.body, "stored as answered");
        got
    }

    pub async fn update_settings_400(f: &Fixture, accept: Option<&str>) -> Got {
        let body = json!({"backups": {"cron": "61 * * * *", "cronMaxKeep": -1}});
        f.send(patch(f, accept, Some(&f.su)).json(&body)).await
    }

    pub async fn update_settings_400_superuser_ips(f: &Fixture, accept: Option<&str>) -> Got {
        // The list PocketBase 0.40.6 was asked the same with: same codes at the same indexes.
        let body = json!({"superuserIPs": ["not-an-ip", "10.0.0.0/8", "::1", "1.2.3.4/33", "", " 10.1.1.1"]});
        let got = f.send(patch(f, accept, Some(&f.su)).json(&body)).await;
        assert_eq!(f.send(get(f, accept, Some(&f.su))).await.body["superuserIPs"], json!([]), "nothing stored");
        got
    }

    pub async fn update_settings_400_type(f: &Fixture, accept: Option<&str>) -> Got {
        let body = json!({"superuserIPs": ["10.0.0.1", 5], "trustedProxy": {"headers": "X-Real-IP", "useLeftmostIP": "yes"}});
        f.send(patch(f, accept, Some(&f.su)).json(&body)).await
    }

    pub async fn update_settings_400_json(f: &Fixture, accept: Option<&str>) -> Got {
        let r = patch(f, accept, Some(&f.su)).header("Content-Type", "application/json").body("{");
        f.send(r).await
    }

    pub async fn update_settings_401(f: &Fixture, accept: Option<&str>) -> Got {
        f.send(patch(f, accept, None).json(&json!({"superuserIPs": []}))).await
    }

    pub async fn update_settings_403(f: &Fixture, accept: Option<&str>) -> Got {
        f.send(patch(f, accept, Some(&f.user)).json(&json!({"superuserIPs": []}))).await
    }

    pub async fn update_settings_400_s3(f: &Fixture, accept: Option<&str>) -> Got {
        // What PocketBase 0.40.6 answers for the same body: the same codes at the same places.
        let body = json!({"backups": {"s3": {"enabled": true, "endpoint": "http://127.0.0.1:9000", "region": "us-east-1", "accessKey": "a"}},
                          "s3": {"endpoint": "not a url"}});
        let got = f.send(patch(f, accept, Some(&f.su)).json(&body)).await;
        assert_eq!(f.send(get(f, accept, Some(&f.su))).await.body["backups"]["s3"]["enabled"], false, "nothing stored");
        got
    }

    fn test_s3(f: &Fixture, accept: Option<&str>, token: Option<&str>, filesystem: &str) -> reqwest::RequestBuilder {
        let r = f.request(accept, reqwest::Method::POST, "/api/settings/test/s3").json(&json!({"filesystem": filesystem}));
        match token {
            Some(token) => r.header("Authorization", token),
            None => r,
        }
    }

    /// Saves `section` (`backups.s3` or `s3`) on, with moto's test keys.
    async fn save_s3(f: &Fixture, section: &str, endpoint: &str, bucket: &str) {
        let s3 = json!({"enabled": true, "bucket": bucket, "region": "us-east-1", "endpoint": endpoint,
                        "accessKey": "test", "secret": "test", "forcePathStyle": true});
        let body = match section {
            "backups" => json!({"backups": {"s3": s3}}),
            _ => json!({"s3": s3}),
        };
        let got = f.send(patch(f, None, Some(&f.su)).json(&body)).await;
        assert_eq!(got.status, 200, "{}", got.body);
    }

    pub async fn test_s3_204(f: &Fixture, accept: Option<&str>) -> Got {
        let endpoint = support::s3::moto();
        let bucket = support::s3::new_bucket(endpoint).await;
        save_s3(f, "backups", endpoint, &bucket).await;
        let got = f.send(test_s3(f, accept, Some(&f.su), "backups")).await;
        let left = support::s3::object_names(&support::s3::raw(endpoint, &bucket)).await;
        assert_eq!(left, Vec::<String>::new(), "the test object is deleted");
        got
    }

    pub async fn test_s3_400(f: &Fixture, accept: Option<&str>) -> Got {
        f.send(test_s3(f, accept, Some(&f.su), "backups")).await
    }

    pub async fn test_s3_400_filesystem(f: &Fixture, accept: Option<&str>) -> Got {
        f.send(test_s3(f, accept, Some(&f.su), "other")).await
    }

    pub async fn test_s3_400_unreachable(f: &Fixture, accept: Option<&str>) -> Got {
        // A port bound and never listened on, held until the answer: connections are refused,
        // and no other server (a parallel test's moto) can take it meanwhile.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        save_s3(f, "storage", &format!("http://127.0.0.1:{port}"), "files").await;
        let got = f.send(test_s3(f, accept, Some(&f.su), "storage")).await;
        drop(socket);
        got
    }

    pub async fn test_s3_400_no_bucket(f: &Fixture, accept: Option<&str>) -> Got {
        save_s3(f, "backups", support::s3::moto(), "no-such-bucket").await;
        f.send(test_s3(f, accept, Some(&f.su), "backups")).await
    }

    pub async fn test_s3_401(f: &Fixture, accept: Option<&str>) -> Got {
        f.send(test_s3(f, accept, None, "backups")).await
    }

    pub async fn test_s3_403(f: &Fixture, accept: Option<&str>) -> Got {
        f.send(test_s3(f, accept, Some(&f.user), "backups")).await
    }

    pub async fn auth_with_password_400_identity_field(f: &Fixture, accept: Option<&str>) -> Got {
        let body = json!({"identity": USER.0, "password": USER.1, "identityField": "name"});
        f.send(login(f, accept, "users", body)).await
    }

    pub async fn auth_with_password_403_auth_rule(f: &Fixture, accept: Option<&str>) -> Got {
        let wrong = f.send(login(f, accept, "users", json!({"identity": USER.0, "password": "wrong-password"}))).await;
        assert_eq!(wrong.status, 400, "a wrong password is refused as such first");
        f.send(login(f, accept, "users", json!({"identity": USER.0, "password": USER.1}))).await
    }

    pub async fn auth_with_password_403_address(f: &Fixture, accept: Option<&str>) -> Got {
        let user = f.send(login(f, accept, "users", json!({"identity": USER.0, "password": USER.1}))).await;
        assert_eq!(user.status, 200, "regular users are not restricted");
        f.send(login(f, accept, "_superusers", json!({"identity": SUPERUSER.0, "password": SUPERUSER.1}))).await
    }

    pub async fn file_token_403(f: &Fixture, accept: Option<&str>) -> Got {
        f.send(f.request(accept, reqwest::Method::POST, "/api/files/token").header("Authorization", &f.su)).await
    }
}

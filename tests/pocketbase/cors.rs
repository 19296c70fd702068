//! CORS side by side: the same cross-origin requests (preflights for an allowed method, for
//! `CONNECT` and `TRACE`, without a method; simple requests with and without `Origin`, an
//! error) to PocketBase 0.40.6 and to ours, whose CORS headers must be the same.

use std::collections::BTreeMap;

use super::*;

/// The CORS headers of an answer: each name with its values in order (`vary` repeats).
type CorsHeaders = BTreeMap<String, Vec<String>>;

async fn cors_headers(base: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, CorsHeaders) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let r = request.send().await.unwrap();
    let mut out = CorsHeaders::new();
    for (name, value) in r.headers() {
        let name = name.as_str().to_string();
        if name.starts_with("access-control-") || name == "vary" {
            out.entry(name).or_default().push(value.to_str().unwrap().to_string());
        }
    }
    (r.status().as_u16(), out)
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_answers_as_pocketbase_does() {
    let bin = pocketbase_bin("0.40.6");
    let root = tempfile::tempdir().unwrap();
    let pb_dir = root.path().join("pocketbase").join("pb_data");
    PocketBase::superuser_upsert(&bin, &pb_dir, PB_SUPERUSER);
    let pb = PocketBase::start(&bin, &pb_dir).await;
    let ours = support::TestServer::start().await;

    let origin = ("Origin", "https://app.example.com");
    let asked_headers = ("Access-Control-Request-Headers", "authorization,content-type");
    let preflight = |method: &'static str| vec![origin, ("Access-Control-Request-Method", method), asked_headers];
    let cases: Vec<(&str, &str, &str, Vec<(&str, &str)>)> = vec![
        ("preflight for POST", "OPTIONS", "/api/backups", preflight("POST")),
        ("preflight for DELETE", "OPTIONS", "/api/backups/a.zip", preflight("DELETE")),
        ("preflight for CONNECT", "OPTIONS", "/api/backups", preflight("CONNECT")),
        ("preflight for TRACE", "OPTIONS", "/api/backups", preflight("TRACE")),
        ("preflight without a method", "OPTIONS", "/api/backups", vec![origin]),
        ("GET with an origin", "GET", "/api/health", vec![origin]),
        ("GET without an origin", "GET", "/api/health", vec![]),
        ("a 401 with an origin", "GET", "/api/backups", vec![origin]),
    ];
    for (what, method, path, headers) in cases {
        let theirs = cors_headers(&pb.base, method, path, &headers).await;
        let mine = cors_headers(&ours.base, method, path, &headers).await;
        assert_eq!(mine, theirs, "{what}: ours (left) and PocketBase's (right)");
    }

    // What that is, written out: CONNECT and TRACE are never allowed, every answer varies on
    // the origin, a preflight also on what it asks for.
    let (status, preflight) = cors_headers(&ours.base, "OPTIONS", "/api/backups", &preflight("CONNECT")).await;
    assert_eq!(status, 204);
    let one = |v: &str| vec![v.to_string()];
    assert_eq!(preflight["access-control-allow-methods"], one("GET,HEAD,PUT,PATCH,POST,DELETE"));
    assert_eq!(preflight["access-control-allow-origin"], one("*"));
    assert_eq!(preflight["access-control-allow-headers"], one("authorization,content-type"));
    assert_eq!(preflight["vary"], ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"]);
    let (status, simple) = cors_headers(&ours.base, "GET", "/api/backups", &[origin]).await;
    assert_eq!(status, 401);
    assert_eq!(simple, [("access-control-allow-origin".to_string(), one("*")), ("vary".to_string(), one("Origin"))].into());
    ours.stop().await;
    pb.stop();
}

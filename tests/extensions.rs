//! The API beyond the spec that the console at `/_/` uses: `POST /api/backups/{key}/verify`
//! (each documented response, snapshotted in zh and en, and how it stands to creates and
//! restores) and `data.progress` in `/api/health` for superusers.

mod support;

use std::time::Duration;

use serde_json::{json, Value};

use support::gate::Gate;
use support::*;

const DEADLINE: Duration = Duration::from_secs(60);

async fn verify(s: &TestServer, key: &str, token: Option<&str>, lang: &str) -> (u16, Value) {
    let mut r = s.client.post(s.url(&format!("/api/backups/{key}/verify"))).header("Accept-Language", lang);
    if let Some(token) = token {
        r = r.header("Authorization", token);
    }
    status_json(r.send().await.unwrap()).await
}

async fn health(s: &TestServer, token: Option<&str>) -> Value {
    let mut r = s.client.get(s.url("/api/health"));
    if let Some(token) = token {
        r = r.header("Authorization", token);
    }
    let (status, body) = status_json(r.send().await.unwrap()).await;
    assert_eq!(status, 200);
    body
}

fn snapshot(name: &str, request: &str, when: &str, (status, body): &(u16, Value)) {
    let value = json!({"request": request, "when": when, "status": status, "body": body});
    insta::with_settings!({ omit_expression => true }, {
        insta::assert_json_snapshot!(name, value);
    });
}

#[tokio::test]
async fn verify_answers_its_documented_responses() {
    let restores = Gate::new();
    let s = TestServer::start_with(Options { restore_gate: Some(restores.hook()), ..Default::default() }).await;
    let su = s.superuser_token().await;
    let user = s.user_token().await;
    assert_eq!(create(&s, &su, json!({"name": "good.zip"})).await.0, 204);
    // A zip's signature and nothing after it.
    std::fs::write(s.data_dir().join("backups/bad.zip"), b"PK\x03\x04 not an archive").unwrap();

    for lang in ["zh", "en"] {
        let ok = verify(&s, "good.zip", Some(&su), lang).await;
        assert_eq!(ok, (200, json!({"ok": true})));
        snapshot(&format!("verify_200_ok_{lang}"), "POST /api/backups/good.zip/verify", "a backup that would restore", &ok);
        let bad = verify(&s, "bad.zip", Some(&su), lang).await;
        assert_eq!((bad.0, &bad.1["ok"]), (200, &json!(false)), "{}", bad.1);
        snapshot(&format!("verify_200_bad_{lang}"), "POST /api/backups/bad.zip/verify", "a backup that would not restore", &bad);
        let missing = verify(&s, "missing.zip", Some(&su), lang).await;
        assert_eq!(missing.0, 404);
        snapshot(&format!("verify_404_{lang}"), "POST /api/backups/missing.zip/verify", "no such backup", &missing);
        let anonymous = verify(&s, "good.zip", None, lang).await;
        assert_eq!(anonymous.0, 401);
        snapshot(&format!("verify_401_{lang}"), "POST /api/backups/good.zip/verify", "no token", &anonymous);
        let regular = verify(&s, "good.zip", Some(&user), lang).await;
        assert_eq!(regular.0, 403);
        snapshot(&format!("verify_403_{lang}"), "POST /api/backups/good.zip/verify", "a regular user's token", &regular);
    }
    // The reason is the one a restore of it is refused with.
    let (status, refused) = status_json(
        s.client.post(s.url("/api/backups/bad.zip/restore")).header("Authorization", &su).header("Accept-Language", "en").send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(verify(&s, "bad.zip", Some(&su), "en").await.1["reason"], refused["message"]);

    // While a restore runs the server is about to restart: refused as busy.
    restores.hold_next();
    let restore = {
        let (client, url, su) = (s.client.clone(), s.url("/api/backups/good.zip/restore"), su.clone());
        tokio::spawn(async move { client.post(url).header("Authorization", su).send().await.unwrap().status() })
    };
    tokio::time::timeout(DEADLINE, restores.held()).await.expect("the restore reaches its gate");
    // Held once extracted, before the swap: health shows the restore's progress, all done.
    let data = health(&s, Some(&su)).await["data"].clone();
    assert_eq!((&data["canBackup"], &data["progress"]["action"], &data["progress"]["key"]), (&json!(false), &json!("restore"), &json!("good.zip")), "{data}");
    assert!(data["progress"]["total"].as_u64() > Some(0) && data["progress"]["done"] == data["progress"]["total"], "{data}");
    for lang in ["zh", "en"] {
        let busy = verify(&s, "bad.zip", Some(&su), lang).await;
        assert_eq!(busy.0, 400);
        snapshot(&format!("verify_400_{lang}"), "POST /api/backups/bad.zip/verify", "a restore runs", &busy);
    }
    restores.release();
    assert_eq!(restore.await.unwrap(), 204);
    eventually(DEADLINE, "the restarted server", || async {
        let h = s.client.get(s.url("/api/health")).header("Authorization", &su).send().await.ok()?;
        let body: Value = h.json().await.ok()?;
        (body["data"]["canBackup"] == json!(true)).then_some(())
    })
    .await;
    assert_eq!(verify(&s, "good.zip", Some(&su), "en").await, (200, json!({"ok": true})));
}

/// A verify is not a create: it runs beside one, and health tells superusers (only) how far
/// the create is.
#[tokio::test]
async fn verify_runs_beside_a_create_and_health_shows_its_progress() {
    let creates = Gate::new();
    let s = TestServer::start_with(Options { create_gate: Some(creates.hook()), ..Default::default() }).await;
    let su = s.superuser_token().await;
    let user = s.user_token().await;
    assert_eq!(health(&s, Some(&su)).await["data"], json!({"canBackup": true}));
    assert_eq!(create(&s, &su, json!({"name": "first.zip"})).await.0, 204);
    std::fs::write(s.data_dir().join("payload.bin"), vec![7u8; 256 << 10]).unwrap();

    creates.hold_next();
    let creating = {
        let (client, url, su) = (s.client.clone(), s.url("/api/backups"), su.clone());
        tokio::spawn(async move {
            client.post(url).header("Authorization", su).json(&json!({"name": "held.zip"})).send().await.unwrap().status()
        })
    };
    tokio::time::timeout(DEADLINE, creates.held()).await.expect("the create reaches its gate");
    // Held after its archive is written, before it is stored.
    let data = health(&s, Some(&su)).await["data"].clone();
    assert_eq!(data["canBackup"], json!(false));
    assert_eq!((data["progress"]["action"].as_str(), data["progress"]["key"].as_str()), (Some("create"), Some("held.zip")));
    let (done, total) = (data["progress"]["done"].as_u64().unwrap(), data["progress"]["total"].as_u64().unwrap());
    assert!(total >= 256 << 10 && done == total, "{data}");
    assert_eq!(health(&s, Some(&user)).await["data"], json!({}), "only superusers see it");
    assert_eq!(health(&s, None).await["data"], json!({}));

    assert_eq!(verify(&s, "first.zip", Some(&su), "en").await, (200, json!({"ok": true})));
    assert_eq!(verify(&s, "held.zip", Some(&su), "en").await.0, 404, "not stored yet");
    creates.release();
    assert_eq!(creating.await.unwrap(), 204);
    assert_eq!(health(&s, Some(&su)).await["data"], json!({"canBackup": true}), "no progress once it ended");
    assert_eq!(verify(&s, "held.zip", Some(&su), "en").await, (200, json!({"ok": true})));
}

/// The console's page and assets: its policy on each, a validator, our 404 for anything else.
#[tokio::test]
async fn the_console_is_served_with_its_policy() {
    let s = TestServer::start().await;
    let r = s.client.get(s.url("/_")).send().await.unwrap();
    assert_eq!(r.url().path(), "/_/", "redirected to the page (relative asset names need the slash)");
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.starts_with("default-src 'none'; script-src 'self'; style-src 'self';"), "{csp}");
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let etag = r.headers()["etag"].clone();
    assert!(r.text().await.unwrap().contains("<script type=\"module\" src=\"console.js\"></script>"));
    let again = s.client.get(s.url("/_/")).header("If-None-Match", etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    for (asset, content_type) in [("console.js", "text/javascript; charset=utf-8"), ("i18n.js", "text/javascript; charset=utf-8"), ("console.css", "text/css; charset=utf-8")] {
        let r = s.client.get(s.url(&format!("/_/{asset}"))).send().await.unwrap();
        assert_eq!((r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()), (200, content_type), "{asset}");
        assert_eq!(r.headers()["content-security-policy"].to_str().unwrap(), csp);
    }
    for missing in ["/_/nope.js", "/_/../Cargo.toml", "/_/%2e%2e/Cargo.toml"] {
        let (status, body) = status_json(s.client.get(s.url(missing)).send().await.unwrap()).await;
        assert_eq!((status, body["status"].as_u64()), (404, Some(404)), "{missing}: {body}");
    }
}

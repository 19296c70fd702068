//! Settings (`GET`/`PATCH /api/settings`) and scheduled backups with retention, driven by a
//! manual clock: no test waits for a real minute.

mod support;


use pb_backups::model::names::BackupKey;
use pb_backups::schedule::{ManualClock, TickOutcome};
use pb_backups::service::Gate;
use serde_json::{json, Value};
use time::macros::datetime;
use time::OffsetDateTime;

use support::*;

/// An in-process server whose schedule runs on a manual clock.
struct Scheduled {
    server: TestServer,
    clock: ManualClock,
    token: String,
}

/// The server's own fields and helpers (`base`, `dir`, `client`, `url`).
impl std::ops::Deref for Scheduled {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl Scheduled {
    async fn start(create_gate: Option<Gate>) -> Scheduled {
        let (clock, source) = ManualClock::new();
        let server = TestServer::start_with(Options { create_gate, schedule_clock: Some(source), ..Default::default() }).await;
        let token = server.superuser_token().await;
        Scheduled { server, clock, token }
    }

    async fn patch_settings(&self, body: Value) -> (u16, Value) {
        let r = self.client.patch(self.url("/api/settings")).header("Authorization", &self.token);
        status_json(r.header("Accept-Language", "en").json(&body).send().await.unwrap()).await
    }

    async fn get_settings(&self) -> Value {
        let r = self.client.get(self.url("/api/settings")).header("Authorization", &self.token).send().await.unwrap();
        let (status, body) = status_json(r).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn keys(&self) -> Vec<String> {
        let r = self.client.get(self.url("/api/backups")).header("Authorization", &self.token).send().await.unwrap();
        let (status, body) = status_json(r).await;
        assert_eq!(status, 200);
        let mut keys: Vec<String> = body.as_array().unwrap().iter().map(|b| b["key"].as_str().unwrap().to_string()).collect();
        keys.sort();
        keys
    }

    async fn tick(&self, at: OffsetDateTime) -> TickOutcome {
        self.clock.tick(at).await.expect("the scheduler runs")
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

fn auto_key(at: OffsetDateTime) -> BackupKey {
    // The default settings row names the app "pb-backups".
    pb_backups::model::names::auto_backup_key("pb-backups", at)
}

fn settings_row(dir: &std::path::Path) -> Value {
    let conn = rusqlite::Connection::open(dir.join("data.db")).unwrap();
    let text: String = conn.query_row("SELECT value FROM _params WHERE id = 'settings'", [], |r| r.get(0)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// An S3 section never set, as served (the secret is never served).
fn s3_off() -> Value {
    json!({"enabled": false, "bucket": "", "region": "", "endpoint": "", "accessKey": "", "forcePathStyle": false})
}

#[tokio::test]
async fn settings_are_for_superusers_and_validated_as_pocketbase_does() {
    let s = Scheduled::start(None).await;
    // 401 without a token, 403 for a regular user: the backups endpoints' answers.
    let (status, body) = status_json(s.client.get(s.url("/api/settings")).send().await.unwrap()).await;
    assert_eq!((status, body["status"].clone()), (401, json!(401)));
    let user = login(&s.client, &s.base, "users", USER.0, USER.1).await;
    for request in [s.client.get(s.url("/api/settings")), s.client.patch(s.url("/api/settings")).json(&json!({}))] {
        let (status, body) = status_json(request.header("Authorization", &user).send().await.unwrap()).await;
        assert_eq!((status, body["status"].clone()), (403, json!(403)), "{body}");
    }
    assert_eq!(settings_row(s.dir.path())["backups"]["cron"], "");

    assert_eq!(
        s.get_settings().await,
        json!({
            "meta": {"appName": "pb-backups", "appURL": "http://127.0.0.1:8090", "senderName": "pb-backups",
                     "senderAddress": "noreply@example.com"},
            "backups": {"cron": "", "cronMaxKeep": 3, "s3": s3_off()},
            "superuserIPs": [],
            "trustedProxy": {"headers": [], "useLeftmostIP": false},
            "smtp": {"enabled": false, "host": "", "port": 0, "username": "", "authMethod": "", "tls": false, "localName": ""},
            "s3": s3_off()
        })
    );
    let before = settings_row(s.dir.path());
    let (status, body) = s.patch_settings(json!({"backups": {"cron": "0 3 * * *", "cronMaxKeep": 2}})).await;
    let schedule = json!({"cron": "0 3 * * *", "cronMaxKeep": 2, "s3": s3_off()});
    assert_eq!((status, &body["backups"]), (200, &schedule));
    assert_eq!(s.get_settings().await["backups"], schedule);
    // Every other section of the row is as it was.
    let mut after = settings_row(s.dir.path());
    after["backups"]["cron"] = before["backups"]["cron"].clone();
    after["backups"]["cronMaxKeep"] = before["backups"]["cronMaxKeep"].clone();
    assert_eq!(after, before);

    let refused = [
        (json!({"backups": {"cron": "61 * * * *"}}), json!({"cron": "validation_invalid_cron"})),
        (json!({"backups": {"cron": "@daily", "cronMaxKeep": 0}}), json!({"cronMaxKeep": "validation_required"})),
        (json!({"backups": {"cron": "", "cronMaxKeep": -1}}), json!({"cronMaxKeep": "validation_min_greater_equal_than_required"})),
        (json!({"backups": {"cron": 5, "cronMaxKeep": "2"}}), json!({"cron": "validation_invalid_type", "cronMaxKeep": "validation_invalid_type"})),
    ];
    for (patch, codes) in refused {
        let (status, body) = s.patch_settings(patch.clone()).await;
        assert_eq!(status, 400, "{patch}: {body}");
        assert_eq!(body["status"], 400);
        assert_eq!(body["message"], "An error occurred while validating the submitted data.");
        let got: serde_json::Map<String, Value> =
            body["data"]["backups"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v["code"].clone())).collect();
        assert_eq!(Value::Object(got), codes, "{patch}");
        assert!(body["data"]["backups"].as_object().unwrap().values().all(|v| !v["message"].as_str().unwrap().is_empty()));
    }
    // Chinese by default.
    let r = s.client.patch(s.url("/api/settings")).header("Authorization", &s.token);
    let (status, body) = status_json(r.json(&json!({"backups": {"cron": "x"}})).send().await.unwrap()).await;
    assert_eq!((status, body["message"].as_str().unwrap()), (400, "验证提交的数据时出错。"));
    assert_eq!(body["data"]["backups"]["cron"]["code"], "validation_invalid_cron");
    // Not JSON: 400, nothing stored.
    let r = s.client.patch(s.url("/api/settings")).header("Authorization", &s.token);
    let (status, body) = status_json(r.header("Content-Type", "application/json").body("{").send().await.unwrap()).await;
    assert_eq!((status, &body["data"]), (400, &json!({})), "{body}");
    assert_eq!(s.get_settings().await["backups"], schedule);
    s.stop().await;
}

#[tokio::test]
async fn scheduled_backups_run_when_due_and_keep_the_newest_n() {
    let s = Scheduled::start(None).await;
    assert_eq!(s.tick(datetime!(2026-05-01 03:00 UTC)).await, TickOutcome::Off);
    let (status, _) = s.patch_settings(json!({"backups": {"cron": "0 3 * * *", "cronMaxKeep": 2}})).await;
    assert_eq!(status, 200);
    // A manual backup and an uploaded one: never pruned.
    let r = s.client.post(s.url("/api/backups")).header("Authorization", &s.token).json(&json!({"name": "manual.zip"}));
    assert_eq!(r.send().await.unwrap().status(), 204);
    let zip = zip_with(&[("data.db", b"SQLite format 3\0")]);
    let r = s.client.post(s.url("/api/backups/upload")).header("Authorization", &s.token).multipart(multipart_file("@auto_uploaded.zip", zip));
    assert_eq!(r.send().await.unwrap().status(), 204);

    assert_eq!(s.tick(datetime!(2026-05-01 02:59 UTC)).await, TickOutcome::NotDue);
    let days = [datetime!(2026-05-01 03:00:00 UTC), datetime!(2026-05-02 03:00:30 UTC), datetime!(2026-05-03 03:00:59 UTC)];
    assert_eq!(s.tick(days[0]).await, TickOutcome::Created { key: auto_key(days[0]), pruned: vec![] });
    assert_eq!(s.tick(days[1]).await, TickOutcome::Created { key: auto_key(days[1]), pruned: vec![] });
    assert_eq!(s.tick(days[2]).await, TickOutcome::Created { key: auto_key(days[2]), pruned: vec![auto_key(days[0])] });
    let mut expected = vec![
        auto_key(days[1]).into_string(),
        auto_key(days[2]).into_string(),
        "@auto_uploaded.zip".to_string(),
        "manual.zip".to_string(),
    ];
    expected.sort();
    assert_eq!(s.keys().await, expected);

    // A schedule change applies from the next minute; a smaller keep prunes further.
    let (status, _) = s.patch_settings(json!({"backups": {"cron": "*/15 * * * *", "cronMaxKeep": 1}})).await;
    assert_eq!(status, 200);
    assert_eq!(s.tick(datetime!(2026-05-03 03:01 UTC)).await, TickOutcome::NotDue);
    let at = datetime!(2026-05-03 03:15 UTC);
    assert_eq!(s.tick(at).await, TickOutcome::Created { key: auto_key(at), pruned: vec![auto_key(days[2]), auto_key(days[1])] });

    // Scheduled backups are keys like any other: downloaded, restored, deleted by key.
    let key = auto_key(at).into_string();
    let file = s.client.post(s.url("/api/files/token")).header("Authorization", &s.token).send().await.unwrap();
    let file: Value = file.json().await.unwrap();
    let r = s.client.get(s.url(&format!("/api/backups/{key}"))).query(&[("token", file["token"].as_str().unwrap())]);
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().starts_with(b"PK\x03\x04"));
    let r = s.client.delete(s.url(&format!("/api/backups/{key}"))).header("Authorization", &s.token);
    assert_eq!(r.send().await.unwrap().status(), 204);
    // Turned off: nothing more happens.
    let (status, _) = s.patch_settings(json!({"backups": {"cron": ""}})).await;
    assert_eq!(status, 200);
    assert_eq!(s.tick(datetime!(2026-05-03 03:30 UTC)).await, TickOutcome::Off);
    s.stop().await;
}

#[tokio::test]
async fn a_scheduled_run_during_a_create_is_skipped_not_queued() {
    let gate = support::gate::Gate::new();
    gate.hold_next();
    let s = Scheduled::start(Some(gate.hook())).await;
    let (status, _) = s.patch_settings(json!({"backups": {"cron": "* * * * *", "cronMaxKeep": 5}})).await;
    assert_eq!(status, 200);
    let create = {
        let r = s.client.post(s.url("/api/backups")).header("Authorization", &s.token).json(&json!({"name": "held.zip"}));
        tokio::spawn(r.send())
    };
    gate.held().await;
    assert_eq!(s.tick(datetime!(2026-06-01 12:00 UTC)).await, TickOutcome::Skipped { pruned: vec![] });
    gate.release();
    assert_eq!(create.await.unwrap().unwrap().status(), 204);
    // Not queued: only the manual backup exists once it is done.
    assert_eq!(s.keys().await, ["held.zip"]);
    // The next minute runs (the gate holds nothing now).
    let at = datetime!(2026-06-01 12:01 UTC);
    assert_eq!(s.tick(at).await, TickOutcome::Created { key: auto_key(at), pruned: vec![] });
    s.stop().await;
}

#[tokio::test]
async fn a_schedule_written_into_the_row_is_honoured_and_the_app_name_is_used() {
    let s = Scheduled::start(None).await;
    // As PocketBase stores it: the row's JSON, edited in place.
    let conn = rusqlite::Connection::open(s.dir.path().join("data.db")).unwrap();
    let mut row = settings_row(s.dir.path());
    row["meta"]["appName"] = json!("Acme Backups");
    row["backups"]["cron"] = json!("@hourly");
    row["backups"]["cronMaxKeep"] = json!(1);
    conn.execute("UPDATE _params SET value = ?1 WHERE id = 'settings'", [row.to_string()]).unwrap();
    let at = datetime!(2026-07-04 10:00:05 UTC);
    let key = pb_backups::model::names::auto_backup_key("Acme Backups", at);
    assert_eq!(key.as_str(), "@auto_pb_backup_acme_backups_20260704100005.zip");
    assert_eq!(s.tick(at).await, TickOutcome::Created { key: key.clone(), pruned: vec![] });
    assert_eq!(s.get_settings().await["meta"]["appName"], "Acme Backups");
    assert_eq!(s.keys().await, [key.as_str()]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_flags_store_the_schedule_at_start_and_refuse_a_bad_one() {
    use std::io::BufRead;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let serve = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pb-backups"));
        cmd.args(["serve", "--http", "127.0.0.1:0", "--dir"]).arg(&dir);
        cmd
    };
    // A bad expression: refused before serving, nothing stored.
    let bad = serve().args(["--backups-cron", "0 25 * * *"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("validation_invalid_cron"), "{}", String::from_utf8_lossy(&bad.stderr));
    assert_eq!(settings_row(&dir)["backups"]["cron"], "");

    // Flag and environment, as PB_BACKUPS_CRON_MAX_KEEP.
    let mut child = serve()
        .args(["--backups-cron", "30 2 * * 0"])
        .env("PB_BACKUPS_CRON_MAX_KEEP", "9")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    // Stopped even when an assertion below fails.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let base = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.trim().strip_prefix("REST API:").map(|u| u.trim().trim_end_matches("/api/").to_string()))
        .expect("the server printed its address");
    let client = reqwest::Client::new();
    let token = login(&client, &base, "_superusers", SUPERUSER.0, SUPERUSER.1).await;
    let r = client.get(format!("{base}/api/settings")).header("Authorization", &token).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!((&body["backups"]["cron"], &body["backups"]["cronMaxKeep"]), (&json!("30 2 * * 0"), &json!(9)));
}

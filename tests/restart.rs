//! A restore with the real binary: the data is replaced, the accounts come from the backup,
//! the process re-executes itself on the same socket, and no connection is ever refused.
//! And the drain before a restart: connections already taken are answered if they speak
//! soon, and a silent one does not hold the restart up.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_replaces_data_and_never_refuses_a_connection() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    std::fs::create_dir_all(dir.join("uploads")).unwrap();
    std::fs::write(dir.join("uploads/a.txt"), "before").unwrap();
    let server = BinaryServer::start(&dir);
    let base = server.base.clone();
    let proc_file = |name: &str| std::fs::read(format!("/proc/{}/{name}", server.pid())).unwrap();
    let (comm_before, cmdline_before) = (proc_file("comm"), proc_file("cmdline"));
    assert_eq!(comm_before, b"pb-backups\n");
    let client = reqwest::Client::new();
    let su = login(&client, &base, "_superusers", SUPERUSER.0, SUPERUSER.1).await;

    let r = client.post(format!("{base}/api/backups")).header("Authorization", &su).json(&json!({"name": "snap.zip"})).send().await.unwrap();
    assert_eq!(r.status(), 204);

    // Change everything after the backup: files, and the accounts.
    std::fs::write(dir.join("uploads/a.txt"), "after").unwrap();
    std::fs::write(dir.join("uploads/new.txt"), "new").unwrap();
    let accounts = pb_backups::accounts::Accounts::open(&dir).unwrap();
    accounts.upsert(pb_backups::accounts::Collection::Users, "late@example.com", "late-password").unwrap();
    drop(accounts);
    let late = login(&client, &base, "users", "late@example.com", "late-password").await;

    // Several pollers, each opening a fresh connection for every request, all through the
    // restore: every request must be answered, none refused or dropped.
    let stop = Arc::new(AtomicBool::new(false));
    let (refused, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let pollers: Vec<_> = (0..8)
        .map(|_| {
            let (stop, refused, answered, base) = (stop.clone(), refused.clone(), answered.clone(), base.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
                    match fresh.get(format!("{base}/api/health")).timeout(Duration::from_secs(10)).send().await {
                        Ok(r) => {
                            assert_eq!(r.status(), 200);
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.is_connect() => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("a request was dropped during the restore: {e:?}"),
                    }
                }
            })
        })
        .collect();
    let poller = futures_util::future::join_all(pollers);

    let r = client.post(format!("{base}/api/backups/snap.zip/restore")).header("Authorization", &su).send().await.unwrap();
    assert_eq!(r.status(), 204);
    // The restored data shows once the new process serves.
    eventually(Duration::from_secs(30), "the restored data", || async {
        (std::fs::read_to_string(dir.join("uploads/a.txt")).ok()? == "before").then_some(())
    })
    .await;
    let fresh = reqwest::Client::new();
    let restored_token = eventually(Duration::from_secs(30), "the restarted server", || async {
        let r = fresh
            .post(format!("{base}/api/collections/_superusers/auth-with-password"))
            .json(&json!({"identity": SUPERUSER.0, "password": SUPERUSER.1}))
            .send()
            .await
            .ok()?;
        let body: Value = r.json().await.ok()?;
        body["token"].as_str().map(String::from)
    })
    .await;
    // Let the poller see the server for a little longer, then stop it.
    let seen = answered.load(Ordering::Relaxed);
    eventually(Duration::from_secs(10), "more polls", || async { (answered.load(Ordering::Relaxed) > seen + 5).then_some(()) }).await;
    stop.store(true, Ordering::Relaxed);
    for p in poller.await {
        p.unwrap();
    }
    assert_eq!(refused.load(Ordering::Relaxed), 0, "connections refused during the restore");

    assert!(!dir.join("uploads/new.txt").exists(), "files made after the backup are gone");
    assert!(dir.join("backups/snap.zip").exists(), "backups are kept across a restore");
    assert!(!dir.join(".pb_temp/restore").exists(), "the restore journal is cleaned up");

    // Accounts are the backup's: the later user is gone; the superuser (same record and
    // secrets in the backup) keeps working, old token included.
    let r = fresh.get(format!("{base}/api/backups")).header("Authorization", &late).send().await.unwrap();
    assert_eq!(r.status(), 401, "a token of an account newer than the backup");
    let r = fresh
        .post(format!("{base}/api/collections/users/auth-with-password"))
        .json(&json!({"identity": "late@example.com", "password": "late-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for token in [&su, &restored_token] {
        let r = fresh.get(format!("{base}/api/backups")).header("Authorization", token).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // The re-executed process keeps the name and the command line the operator started.
    assert_eq!(String::from_utf8_lossy(&proc_file("comm")), String::from_utf8_lossy(&comm_before));
    assert_eq!(proc_file("cmdline"), cmdline_before);
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("restore complete"), "the re-executed server committed the restore:\n{log}");
}

/// The drain before a restart (in-process: the same server loop). Connections the running
/// instance has already taken get their answer if they send their request while it waits
/// for them (here 50 ms after the restart is asked for), and are not waited for past its
/// bound (200 ms): one that speaks only after 300 ms finds itself closed, unanswered, by then
/// and the restarted instance serves meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_answers_taken_connections_that_speak_soon_and_does_not_wait_for_silent_ones() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let gate = support::gate::Gate::new();
    let server = TestServer::start_with(Options { restore_gate: Some(gate.hook()), ..Default::default() }).await;
    let su = server.superuser_token().await;
    let (status, body) = create(&server, &su, json!({"name": "snap.zip"})).await;
    assert_eq!(status, 204, "{body}");
    // Written after the backup: gone once the restore is swapped in.
    let marker = server.data_dir().join("marker.txt");
    std::fs::write(&marker, "after the backup").unwrap();
    let addr = server.base.trim_start_matches("http://").to_string();
    const REQUEST: &[u8] = b"GET /api/health HTTP/1.1\r\nHost: test\r\n\r\n";
    async fn read_all(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut answer)).await.expect("the connection is answered or closed")?;
        Ok(answer)
    }

    // The restore waits in its gate, extracted: the restart has not been asked for yet.
    gate.hold_next();
    let restore = tokio::spawn(server.client.post(server.url("/api/backups/snap.zip/restore")).header("Authorization", &su).send());
    gate.held().await;
    // Two connections the running instance takes: a request on a third one, opened after
    // them, is answered only once they have been taken (the backlog is served in order).
    let mut soon = TcpStream::connect(&addr).await.unwrap();
    let mut late = TcpStream::connect(&addr).await.unwrap();
    // Bounded: a restart that never comes must fail the wait below, not hang it.
    let fresh = || reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(5)).build().unwrap();
    assert_eq!(fresh().get(server.url("/api/health")).send().await.unwrap().status(), 200);

    gate.release();
    let asked = std::time::Instant::now();
    assert_eq!(restore.await.unwrap().unwrap().status(), 204);
    tokio::time::sleep(Duration::from_millis(50).saturating_sub(asked.elapsed())).await;
    soon.write_all(REQUEST).await.unwrap();
    let answer = String::from_utf8_lossy(&read_all(&mut soon).await.expect("an answer, not a reset")).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "the connection that spoke after 50 ms: {answer:?}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "answered by the draining instance: {answer}");

    // The restarted instance serves the restored data while the other is still silent.
    eventually(Duration::from_secs(30), "the restarted instance", || async {
        let r = fresh().get(server.url("/api/health")).send().await.ok()?;
        (r.status() == 200 && !marker.exists()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300).saturating_sub(asked.elapsed())).await;
    let _ = late.write_all(REQUEST).await; // may fail: the peer is gone
    let unanswered = read_all(&mut late).await.unwrap_or_default();
    assert!(unanswered.is_empty(), "the connection silent for 300 ms was closed unanswered: {:?}", String::from_utf8_lossy(&unanswered));
    server.stop().await;
}

//! A restore with the real binary: the data is replaced, the accounts come from the backup,
//! the process re-executes itself on the same socket, and no connection is ever refused. A
//! stop signal at any point of that restart stops the server with the restored data whole.
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

/// Where in the restart after a restore a stop signal is sent.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// This many milliseconds after the 204 (at 0 ms the signal used to be lost every time).
    AfterAnswer(u64),
    /// While the journal says `swapping`.
    Swapping,
    /// Once the journal says `swapped`: the data is in place, the re-exec is next.
    Swapped,
    /// Once the process runs its new image (its environment names the inherited socket).
    Reexecuted,
    /// Once the new image has started its threads (it watches for stop signals before that).
    NewImageRunning,
}

fn journal_phase(dir: &std::path::Path) -> Option<String> {
    let bytes = std::fs::read(dir.join(".pb_temp/restore/journal.json")).ok()?;
    let journal: Value = serde_json::from_slice(&bytes).ok()?;
    journal["phase"].as_str().map(String::from)
}

/// Sends `signal` to `pid` from a thread of its own as soon as `moment` is seen (the swap
/// lasts milliseconds: too short for a timer). Returns whether it was sent; gives up once the
/// moment has passed.
fn signal_at(dir: std::path::PathBuf, pid: u32, moment: Moment, signal: libc::c_int) -> std::thread::JoinHandle<bool> {
    let (environ, status) = (format!("/proc/{pid}/environ"), format!("/proc/{pid}/status"));
    let inherited = format!("{}=", pb_backups::listener::LISTEN_FD_ENV).into_bytes();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut journal_seen = false;
        while std::time::Instant::now() < deadline {
            let phase = journal_phase(&dir);
            let (fire, passed) = match moment {
                Moment::Swapping => (phase.as_deref() == Some("swapping"), phase.as_deref() == Some("swapped")),
                Moment::Swapped => (phase.as_deref() == Some("swapped"), false),
                Moment::Reexecuted | Moment::NewImageRunning => {
                    let environ = std::fs::read(&environ).unwrap_or_default();
                    let new_image = environ.windows(inherited.len()).any(|w| w == inherited);
                    let running = || {
                        let status = std::fs::read_to_string(&status).unwrap_or_default();
                        status.lines().any(|l| l.starts_with("Threads:") && l[8..].trim() != "1")
                    };
                    (new_image && (matches!(moment, Moment::Reexecuted) || running()), false)
                }
                Moment::AfterAnswer(_) => unreachable!("sent by the test itself"),
            };
            let after_exec = matches!(moment, Moment::Reexecuted | Moment::NewImageRunning);
            let passed = passed || (journal_seen && phase.is_none() && !after_exec);
            if fire {
                // SAFETY: kill(2) has no memory effects; the pid is our unreaped child.
                unsafe { libc::kill(pid as libc::pid_t, signal) };
                return true;
            }
            if passed {
                return false;
            }
            journal_seen |= phase.is_some();
            std::thread::yield_now();
        }
        false
    })
}

/// A SIGTERM or SIGINT taken at any point of the restart after a restore's 204 stops the
/// server once the swap is safe: the old process stops instead of re-executing itself, or the
/// new one stops before it serves (or, between the last look at the signals and the new
/// image's first, the signal's default action ends it). The data dir is the restored data
/// whole, committed at the latest by the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_signal_during_the_restart_stops_the_server() {
    use std::os::unix::process::ExitStatusExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    std::fs::create_dir_all(dir.join("uploads")).unwrap();
    std::fs::write(dir.join("uploads/a.txt"), "before").unwrap();
    // Many top-level entries, so that the swap lasts long enough to be seen.
    for i in 0..400 {
        std::fs::write(dir.join(format!("top-{i:03}.txt")), "x").unwrap();
    }
    let mut server = BinaryServer::start(&dir);
    let client = reqwest::Client::new();
    let su = login(&client, &server.base, "_superusers", SUPERUSER.0, SUPERUSER.1).await;
    let r = client.post(format!("{}/api/backups", server.base)).header("Authorization", &su).json(&json!({"name": "snap.zip"})).send().await.unwrap();
    assert_eq!(r.status(), 204);

    let (term, int) = (libc::SIGTERM, libc::SIGINT);
    let moments = [
        (Moment::AfterAnswer(0), term),
        (Moment::AfterAnswer(0), int),
        (Moment::AfterAnswer(5), term),
        (Moment::Swapping, term),
        (Moment::Swapped, int),
        (Moment::Swapped, term),
        (Moment::Reexecuted, term),
        (Moment::Reexecuted, int),
        (Moment::NewImageRunning, term),
        (Moment::NewImageRunning, int),
    ];
    let (mut missed, mut how) = (Vec::new(), std::collections::BTreeMap::<&str, usize>::new());
    for (moment, signal) in moments {
        let context = format!("signal {signal} at {moment:?}");
        std::fs::write(dir.join("uploads/a.txt"), "after").unwrap();
        std::fs::write(dir.join("uploads/new.txt"), "made after the backup").unwrap();
        // A fresh client per round: each round's server is a new process on a new port.
        let client = reqwest::Client::new();
        let su = login(&client, &server.base, "_superusers", SUPERUSER.0, SUPERUSER.1).await;
        let watcher = match moment {
            Moment::AfterAnswer(_) => None,
            _ => Some(signal_at(dir.clone(), server.pid(), moment, signal)),
        };
        let r = client.post(format!("{}/api/backups/snap.zip/restore", server.base)).header("Authorization", &su).send().await.unwrap();
        assert_eq!(r.status(), 204, "{context}");
        match (moment, watcher) {
            (Moment::AfterAnswer(ms), _) => {
                // A delay that places the signal, not a wait for a state.
                if ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                // SAFETY: kill(2) has no memory effects; the pid is our unreaped child.
                unsafe { libc::kill(server.pid() as libc::pid_t, signal) };
            }
            (_, Some(watcher)) => {
                if !tokio::task::spawn_blocking(move || watcher.join().unwrap()).await.unwrap() {
                    // Too late for its moment: sent now, to the restarted server.
                    missed.push(moment);
                    unsafe { libc::kill(server.pid() as libc::pid_t, signal) };
                }
            }
            (_, None) => unreachable!(),
        }
        let status = server.wait_exit(Duration::from_secs(30)).unwrap_or_else(|| {
            panic!("{context}: still running 30 s after the signal:\n{}", std::fs::read_to_string(&server.log).unwrap_or_default())
        });
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        assert!(status.success() || status.signal() == Some(signal), "{context}: ended with {status:?}:\n{log}");
        let stopped_by = if status.signal().is_some() {
            "the signal's default action"
        } else if log.contains("restore finished, not restarting") {
            "the old process, after the swap"
        } else if log.contains("not serving") {
            "the new process, before serving"
        } else {
            "the restarted server"
        };
        *how.entry(stopped_by).or_default() += 1;

        server = BinaryServer::start(&dir);
        assert_eq!(std::fs::read_to_string(dir.join("uploads/a.txt")).unwrap(), "before", "{context}: restored");
        assert!(!dir.join("uploads/new.txt").exists(), "{context}: a file made after the backup is gone");
        assert!(!dir.join(".pb_temp/restore").exists(), "{context}: the restore is committed");
    }
    let client = reqwest::Client::new();
    login(&client, &server.base, "_superusers", SUPERUSER.0, SUPERUSER.1).await;
    eprintln!("stop during the restart: stopped by {how:?}; moments missed {missed:?}");
}

/// In-process: a shutdown that comes while a restore is being checked lets it finish; the
/// restore it answers 204 is swapped in (and committed) before the server stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_answered_during_shutdown_is_swapped_in_before_the_stop() {
    use pb_backups::server::{self, RestartMode, ServeConfig};
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    std::fs::write(dir.join("marker.txt"), "before").unwrap();
    let gate = support::gate::Gate::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = ServeConfig::new(&dir);
    config.restart = RestartMode::InProcess;
    config.restore_gate = Some(gate.hook());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<()>();
    // Resolves when the server's loop takes the stop: then it only finishes what it has.
    let shutdown = async move {
        let _ = stop_rx.await;
        let _ = seen_tx.send(());
    };
    let server = tokio::spawn(server::run(listener, config, shutdown));

    let client = reqwest::Client::new();
    let su = login(&client, &base, "_superusers", SUPERUSER.0, SUPERUSER.1).await;
    let r = client.post(format!("{base}/api/backups")).header("Authorization", &su).json(&json!({"name": "snap.zip"})).send().await.unwrap();
    assert_eq!(r.status(), 204);
    std::fs::write(dir.join("marker.txt"), "after").unwrap();

    gate.hold_next();
    let restore = tokio::spawn(client.post(format!("{base}/api/backups/snap.zip/restore")).header("Authorization", &su).send());
    gate.held().await;
    stop_tx.send(()).unwrap();
    seen_rx.await.unwrap();
    gate.release();
    assert_eq!(restore.await.unwrap().unwrap().status(), 204);
    server.await.unwrap().expect("the server stopped without an error");
    assert_eq!(std::fs::read_to_string(dir.join("marker.txt")).unwrap(), "before", "the answered restore took effect");
    assert!(!dir.join(".pb_temp/restore").exists(), "and was committed");
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

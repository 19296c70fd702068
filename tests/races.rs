//! Exclusivity under real concurrency: many clients released together by a barrier race
//! creates, restores and deletes on one live server, and creates are fired at the old
//! instance in the moment after a restore is accepted.
//!
//! Each client sends on its own connection, opened and answered before the race, so every
//! answer comes from the instance the race started on: a restart cannot be mistaken for
//! a second winner (see `state_machine/http.rs`).

mod support;

#[path = "state_machine/http.rs"]
mod http;
#[path = "state_machine/live.rs"]
mod live;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pb_backups_spec::Lang;
use serde_json::json;
use tokio::sync::{mpsc, Barrier};

use http::{Conn, Request, Response, Sent};
use live::{template, Live};
use support::gate::Gate;

const CLIENTS: usize = 16;
const ROUNDS: usize = 8;
/// A race that one side always wins proves little: rounds go on past `ROUNDS` until each
/// outcome has happened, and the test fails if one has not by this many.
const MAX_ROUNDS: usize = 4 * ROUNDS;
const DEADLINE: Duration = Duration::from_secs(20);

fn su() -> Option<&'static str> {
    Some(&template().superuser)
}

/// A connection known to be served by the instance running now.
async fn warm(live: &Live) -> Conn {
    let mut conn = Conn::connect(live.addr).await;
    match conn.send(&Request::new("GET", "/api/health")).await {
        Sent::Answered(r) => assert_eq!(r.status, 200),
        Sent::Closed => panic!("health check refused"),
    }
    conn
}

async fn send_ok(live: &Live, request: Request) -> Response {
    match Conn::connect(live.addr).await.send(&request).await {
        Sent::Answered(r) => r,
        Sent::Closed => panic!("{} {}: connection closed", request.method, request.path),
    }
}

async fn upload(live: &Live, key: &str) {
    let r = send_ok(live, Request::new("POST", "/api/backups/upload").auth(su()).file(key, &template().backup_zip)).await;
    assert_eq!(r.status, 204, "upload {key}: {}", r.json());
}

async fn keys(live: &Live) -> Vec<String> {
    let r = send_ok(live, Request::new("GET", "/api/backups").auth(su())).await;
    assert_eq!(r.status, 200);
    support::sorted_keys(&r.json())
}

/// Waits until a restore has been swapped in (the old instance has stopped by then) and
/// the restarted instance answers.
async fn restarted(live: &Live, data_db_before: Option<(u64, u64)>) {
    let deadline = Instant::now() + DEADLINE;
    while live.data_db_id().is_none() || live.data_db_id() == data_db_before {
        assert!(Instant::now() < deadline, "timed out waiting for the restore to be swapped in");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(send_ok(live, Request::new("GET", "/api/health")).await.status, 200);
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Create,
    Restore,
    Delete,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_create_or_restore_wins_a_race() {
    let messages = Lang::Zh.messages();
    let gate = Gate::new();
    let live = Live::start(Some(gate.hook()), None);
    upload(&live, "seed.zip").await;
    let mut wins = (0, 0);
    let mut round = 0;
    while round < ROUNDS || (round < MAX_ROUNDS && (wins.0 == 0 || wins.1 == 0)) {
        upload(&live, "doomed.zip").await;
        let data_db_before = live.data_db_id();
        // A winning create waits in the gate until every other client has its answer.
        gate.hold_next();
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..CLIENTS {
            let (kind, request) = match i % 4 {
                0 | 1 => (Kind::Create, Request::new("POST", "/api/backups").auth(su()).json(&json!({"name": format!("race-{round}-{i}.zip")}))),
                2 => (Kind::Restore, Request::new("POST", "/api/backups/seed.zip/restore").auth(su())),
                _ => (Kind::Delete, Request::new("DELETE", "/api/backups/doomed.zip").auth(su())),
            };
            let mut conn = warm(&live).await;
            let (barrier, tx) = (barrier.clone(), tx.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let sent = conn.send(&request).await;
                let _ = tx.send((i, kind, sent));
            });
        }
        let mut answers = Vec::new();
        let mut held = false;
        tokio::time::timeout(DEADLINE, async {
            while answers.len() < CLIENTS {
                tokio::select! {
                    Some(answer) = rx.recv() => answers.push(answer),
                    () = gate.held(), if !held => held = true,
                }
                if held && answers.len() == CLIENTS - 1 {
                    gate.release();
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: {} of {CLIENTS} answers, create held: {held}", answers.len()));
        gate.cancel_hold();
        gate.take_passed();

        let winners: Vec<_> = answers
            .iter()
            .filter(|(_, kind, sent)| *kind != Kind::Delete && matches!(sent, Sent::Answered(r) if r.status == 204))
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let restore_won = winners[0].1 == Kind::Restore;
        let deletes_won = answers
            .iter()
            .filter(|(_, kind, sent)| *kind == Kind::Delete && matches!(sent, Sent::Answered(r) if r.status == 204))
            .count();
        assert!(deletes_won <= 1, "round {round}: {deletes_won} deletes of one key succeeded");
        for (i, kind, sent) in &answers {
            let r = match sent {
                Sent::Answered(r) => r,
                // Only a restart closes these connections before they answer.
                Sent::Closed => {
                    assert!(restore_won, "round {round}: client {i} ({kind:?}) closed without an answer");
                    continue;
                }
            };
            let body = r.json();
            let expected = match (kind, r.status) {
                (_, 204) => continue,
                (Kind::Create, _) => (400, messages.busy_create),
                (Kind::Restore, _) => (400, messages.busy_delete_restore),
                (Kind::Delete, _) => (404, messages.not_found),
            };
            assert_eq!((r.status, body["message"].as_str().unwrap_or("")), expected, "round {round}: client {i} ({kind:?}): {body}");
        }
        if restore_won {
            wins.1 += 1;
            restarted(&live, data_db_before).await;
        } else {
            wins.0 += 1;
            let winner = winners[0].0;
            assert!(keys(&live).await.contains(&format!("race-{round}-{winner}.zip")), "round {round}");
        }
        if deletes_won == 0 {
            // Every delete was cut off by the restart: remove the key for the next round.
            assert!(restore_won);
            let r = send_ok(&live, Request::new("DELETE", "/api/backups/doomed.zip").auth(su())).await;
            assert_eq!(r.status, 204);
        }
        round += 1;
    }
    eprintln!("{round} rounds: {} won by a create, {} by a restore", wins.0, wins.1);
    assert!(wins.0 > 0 && wins.1 > 0, "in {round} rounds, {} won by a create and {} by a restore: both must win some", wins.0, wins.1);
    live.stop().await;
}

/// A delete and a restore of the same key, released together many times: exactly one of
/// them takes the key (R20, R21). Either the restore wins (204) and the delete is busy, or
/// the delete wins (204) and the restore finds nothing (404); never both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_and_a_restore_of_one_key_never_both_win() {
    const PAIRS: usize = 48;
    // As above: both must win some, within this many pairs.
    const MAX_PAIRS: usize = 4 * PAIRS;
    let messages = Lang::Zh.messages();
    let live = Live::start(None, None);
    let (mut restores, mut deletes) = (0, 0);
    let mut round = 0;
    while round < PAIRS || (round < MAX_PAIRS && (restores == 0 || deletes == 0)) {
        if !keys(&live).await.contains(&"target.zip".to_string()) {
            upload(&live, "target.zip").await;
        }
        let data_db_before = live.data_db_id();
        let barrier = Arc::new(Barrier::new(2));
        let fire = |request: Request, mut conn: Conn| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                conn.send(&request).await
            })
        };
        let restore = fire(Request::new("POST", "/api/backups/target.zip/restore").auth(su()), warm(&live).await);
        let delete = fire(Request::new("DELETE", "/api/backups/target.zip").auth(su()), warm(&live).await);
        let answer = |sent: Sent, what: &str| match sent {
            Sent::Answered(r) => (r.status, r.json()["message"].as_str().unwrap_or("").to_string()),
            Sent::Closed => panic!("round {round}: {what}: closed without an answer"),
        };
        let restore = answer(tokio::time::timeout(DEADLINE, restore).await.expect("restore answers").unwrap(), "restore");
        let delete = answer(tokio::time::timeout(DEADLINE, delete).await.expect("delete answers").unwrap(), "delete");
        match (restore.0, delete.0) {
            (204, _) => {
                assert_eq!(delete, (400, messages.busy_delete_restore.to_string()), "round {round}: restore won");
                restores += 1;
                restarted(&live, data_db_before).await;
            }
            (_, 204) => {
                assert_eq!(restore, (404, messages.not_found.to_string()), "round {round}: delete won");
                deletes += 1;
            }
            _ => panic!("round {round}: neither won: restore {restore:?}, delete {delete:?}"),
        }
        round += 1;
    }
    eprintln!("{round} delete/restore pairs of one key: {restores} won by the restore, {deletes} by the delete");
    assert!(restores > 0 && deletes > 0, "in {round} pairs, {restores} won by the restore and {deletes} by the delete: both must win some");
    live.stop().await;
}

/// A restorable archive big enough (32 MiB, stored) that extracting it takes a while: the
/// window in which creates must be refused.
fn big_seed_zip() -> Vec<u8> {
    use std::io::Write;
    let data_db = {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(template().backup_zip.clone())).unwrap();
        let mut f = z.by_name("data.db").unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut v).unwrap();
        v
    };
    let mut big = vec![0u8; 32 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut buf);
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("data.db", stored).unwrap();
    zip.write_all(&data_db).unwrap();
    zip.start_file("big.bin", stored).unwrap();
    zip.write_all(&big).unwrap();
    zip.finish().unwrap();
    buf.into_inner()
}

/// From the moment a restore has started (its archive appears in the temp folder) until
/// the old instance stops, every create is refused: before the 204 while the archive is
/// extracted (and while the restore gate holds the extracted restore, so that the race is
/// sure to run), and after it while the old instance drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_create_slips_in_while_a_restore_runs() {
    let messages = Lang::Zh.messages();
    let gate = Gate::new();
    let restore_gate = Gate::new();
    restore_gate.hold_next();
    let live = Live::start(Some(gate.hook()), Some(restore_gate.hook()));
    let r = send_ok(&live, Request::new("POST", "/api/backups/upload").auth(su()).file("seed.zip", &big_seed_zip())).await;
    assert_eq!(r.status, 204, "upload seed: {}", r.json());
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        conns.push(warm(&live).await);
    }
    let mut restore_conn = warm(&live).await;
    let data_db_before = live.data_db_id();

    let restore = tokio::spawn(async move {
        match restore_conn.send(&Request::new("POST", "/api/backups/seed.zip/restore").auth(su())).await {
            Sent::Answered(r) => r,
            Sent::Closed => panic!("restore: connection closed"),
        }
    });
    let temp = live.data_dir().join(".pb_temp");
    let started = Instant::now();
    while !std::fs::read_dir(&temp).map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("restore-"))).unwrap_or(false) {
        assert!(started.elapsed() < DEADLINE, "the restore never started");
        tokio::task::yield_now().await;
    }
    // Every client fires creates at the old instance until it closes the connection.
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut refused = 0;
                for n in 0.. {
                    let name = format!("slipped-{i}-{n}.zip");
                    let request = Request::new("POST", "/api/backups").auth(su()).json(&json!({ "name": name }));
                    match conn.send(&request).await {
                        Sent::Answered(r) => {
                            let body = r.json();
                            assert_eq!((r.status, body["message"].as_str()), (400, Some(messages.busy_create)), "{name}: {body}");
                            refused += 1;
                            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Sent::Closed => break,
                    }
                }
                refused
            })
        })
        .collect();
    // The restore is extracted and held: every client gets refused at least once, then it goes on.
    tokio::time::timeout(DEADLINE, restore_gate.held()).await.expect("the restore reaches its gate");
    let until = Instant::now() + DEADLINE;
    while seen.load(std::sync::atomic::Ordering::SeqCst) < CLIENTS {
        assert!(Instant::now() < until, "the clients' creates were not answered while the restore was held");
        tokio::task::yield_now().await;
    }
    restore_gate.release();
    let r = tokio::time::timeout(DEADLINE, restore).await.expect("the restore answers").expect("restore task");
    assert_eq!(r.status, 204, "restore: {}", r.json());
    let mut refused = 0;
    for task in tasks {
        refused += tokio::time::timeout(DEADLINE, task).await.expect("the old instance stops").expect("client");
    }
    assert!(refused >= CLIENTS, "{refused} creates refused while the restore ran");
    assert_eq!(gate.take_passed(), Vec::<String>::new(), "a create started while the restore ran");

    restarted(&live, data_db_before).await;
    let r = send_ok(&live, Request::new("POST", "/api/backups").auth(su()).json(&json!({"name": "after.zip"}))).await;
    assert_eq!(r.status, 204, "the restarted server is free: {}", r.json());
    assert_eq!(keys(&live).await, vec!["after.zip", "seed.zip"]);
    eprintln!("{refused} creates refused by the old instance during the restore");
    live.stop().await;
}

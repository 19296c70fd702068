//! Nothing lost when the server dies, when the disk fills up, or when an upload is huge.
//!
//! - The real binary is killed with SIGKILL at spread-out moments of create, upload and
//!   restore (and, for restore, at given points of the swap and of a rollback at start, seen
//!   through its journal), then started again on the same data dir, which must serve, list
//!   only complete archives, hold nothing in its temp folder and be entirely the old or the
//!   new data; a create or upload that answered 204 before the kill must be listed. Enough
//!   kills must land mid-work, and the restore's in both phases of the swap and at every swap
//!   point, or the run fails.
//! - On a small tmpfs (mounted by the test, which needs root or `unshare -rm`; it fails
//!   otherwise), create and upload answer a clear 400 and leave nothing behind; the server
//!   keeps serving.
//! - A multi-GiB upload, generated on the fly, is stored while the server's memory stays flat.
//!
//! Knobs: `PB_CRASH_KILLS` (timed kills per operation, default 16; restore uses half, plus 11
//! at swap points, each tried up to 4 times), `PB_BIG_UPLOAD_MIB` (default 3072: about 30 s in the debug build).

mod support;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::CString;
use std::fs;
use std::hash::Hasher;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, Stream};
use pb_backups::accounts::{Accounts, Collection};
use pb_backups::i18n::{Lang, Message};
use pb_backups::layout::{BACKUPS_DIR, TEMP_DIR};
use rand::{Rng, SeedableRng};
use serde_json::json;
use support::*;

const ONLY_A: (&str, &str) = ("only-a@example.com", "password-of-a");
const ONLY_B: (&str, &str) = ("only-b@example.com", "password-of-b");
const MIB: u64 = 1 << 20;

/// The tests below each use most of the 2 cores and time their kills against a measured
/// duration: they run one at a time.
async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// The data dir: two states, A and B, told apart by file contents and by accounts.
// ---------------------------------------------------------------------------------------

/// Every file and folder of the data dir except backups, temp and SQLite files: `None` for
/// a folder, else length and hash of the contents.
type Manifest = BTreeMap<String, Option<(u64, u64)>>;

#[derive(Clone, Debug, PartialEq)]
struct Snapshot {
    files: Manifest,
    /// Emails of the `users` collection (`data.db` is compared through its accounts, since
    /// SQLite rewrites the file's bytes as it pleases).
    users: BTreeSet<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    A,
    B,
}

impl State {
    fn other(self) -> State {
        match self {
            State::A => State::B,
            State::B => State::A,
        }
    }

    fn archive(self) -> &'static str {
        match self {
            State::A => "state-a.zip",
            State::B => "state-b.zip",
        }
    }

    /// The user that exists in this state only.
    fn own_user(self) -> (&'static str, &'static str) {
        match self {
            State::A => ONLY_A,
            State::B => ONLY_B,
        }
    }
}

struct Fixture {
    root: tempfile::TempDir,
    dir: PathBuf,
    rng: rand::rngs::StdRng,
    a: Snapshot,
    b: Option<Snapshot>,
}

fn write_file(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}


/// Log-like text: compresses, so the archive mixes Deflated and Stored entries.
fn text(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 100);
    let mut i = 0u64;
    while out.len() < len {
        writeln!(out, "2024-01-01 00:00:{:02} INFO request {seed}-{i} served in {}ms", i % 60, (i * 7919 + seed) % 1000).unwrap();
        i += 1;
    }
    out
}

impl Fixture {
    /// State A: about 45 MiB in big and small random files, text logs and nested folders,
    /// plus the accounts (the test superuser and user, and `ONLY_A`).
    fn new() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pb_data");
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        seed_accounts(&dir);
        let accounts = Accounts::open(&dir).unwrap();
        accounts.upsert(Collection::Users, ONLY_A.0, ONLY_A.1).unwrap();
        drop(accounts);
        for i in 0..4 {
            write_file(&dir.join(format!("storage/blob-{i}.bin")), &random_bytes(&mut rng, 6 * MIB as usize));
        }
        for i in 0..150 {
            let len = rng.random_range(4 << 10..64 << 10);
            write_file(&dir.join(format!("storage/small/{:02}/{i}.bin", i % 10)), &random_bytes(&mut rng, len));
        }
        for i in 0..8 {
            write_file(&dir.join(format!("logs/{i}.log")), &text(i, 2 * MIB as usize));
        }
        // Many top-level entries: a restore moves each one, twice.
        for i in 0..40 {
            write_file(&dir.join(format!("top-{i:02}.txt")), &text(100 + i, 2 << 10));
        }
        write_file(&dir.join("marker.txt"), b"state a");
        let a = snapshot(&dir);
        Fixture { root, dir, rng, a, b: None }
    }

    /// Turns the data dir into state B: files changed, removed and added; `ONLY_A` replaced
    /// by `ONLY_B`.
    fn mutate_to_b(&mut self) {
        let dir = &self.dir;
        write_file(&dir.join("storage/blob-0.bin"), &random_bytes(&mut self.rng, 6 * MIB as usize));
        fs::remove_file(dir.join("logs/0.log")).unwrap();
        fs::remove_dir_all(dir.join("storage/small/03")).unwrap();
        write_file(&dir.join("only-b/new.txt"), b"only in b");
        write_file(&dir.join("marker.txt"), b"state b");
        write_file(&dir.join("top-05.txt"), b"changed in b");
        fs::remove_file(dir.join("top-07.txt")).unwrap();
        let accounts = Accounts::open(dir).unwrap();
        assert!(accounts.delete(Collection::Users, ONLY_A.0).unwrap());
        accounts.upsert(Collection::Users, ONLY_B.0, ONLY_B.1).unwrap();
        drop(accounts);
        let b = snapshot(dir);
        assert_ne!(b.files, self.a.files);
        self.b = Some(b);
    }

    /// A backup of the data dir as it is now, made by the server's own archive code.
    fn archive_bytes(&self) -> Vec<u8> {
        let scratch = self.root.path().join("scratch");
        fs::create_dir_all(&scratch).unwrap();
        let mut out = io::Cursor::new(Vec::new());
        pb_backups::archive::create_backup(&self.dir, &[BACKUPS_DIR, TEMP_DIR], &scratch, &mut out, &Default::default())
            .unwrap();
        out.into_inner()
    }

    fn store_archive(&self, key: &str) {
        write_file(&self.dir.join(BACKUPS_DIR).join(key), &self.archive_bytes());
    }

    fn snapshot_of(&self, state: State) -> &Snapshot {
        match state {
            State::A => &self.a,
            State::B => self.b.as_ref().expect("state B was made"),
        }
    }
}

/// The databases (compared through their accounts, not their bytes: a snapshot rewrites pages).
fn is_sqlite_file(name: &str) -> bool {
    name == "data.db" || name == "auxiliary.db" || ["-wal", "-shm", "-journal"].iter().any(|s| name.ends_with(s))
}

fn manifest(dir: &Path) -> Manifest {
    fn walk(base: &Path, folder: &Path, out: &mut Manifest) {
        for entry in fs::read_dir(folder).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let top = !rel.contains('/');
            // The lock file, like the two folders, is the running server's, not the data's.
            if top && (rel == BACKUPS_DIR || rel == TEMP_DIR || rel == pb_backups::lock::LOCK_FILE || is_sqlite_file(&rel)) {
                continue;
            }
            let md = fs::symlink_metadata(&path).unwrap();
            if md.is_dir() {
                out.insert(rel, None);
                walk(base, &path, out);
            } else {
                let mut hasher = std::hash::DefaultHasher::new();
                let mut file = fs::File::open(&path).unwrap();
                let mut buf = vec![0u8; 256 << 10];
                let mut len = 0u64;
                loop {
                    let n = file.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    hasher.write(&buf[..n]);
                    len += n as u64;
                }
                out.insert(rel, Some((len, hasher.finish())));
            }
        }
    }
    let mut out = Manifest::new();
    walk(dir, dir, &mut out);
    out
}

fn users(dir: &Path) -> BTreeSet<String> {
    let conn = rusqlite::Connection::open_with_flags(dir.join("data.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut stmt = conn.prepare("SELECT email FROM users").unwrap();
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

fn snapshot(dir: &Path) -> Snapshot {
    Snapshot { files: manifest(dir), users: users(dir) }
}

/// Paths whose entry differs between two manifests (for failure messages).
fn differences(x: &Manifest, y: &Manifest) -> Vec<String> {
    let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
    keys.into_iter().filter(|k| x.get(*k) != y.get(*k)).take(10).cloned().collect()
}

/// Which of `allowed` the data dir is in, whole: files and accounts must agree.
fn state_of(fx: &Fixture, allowed: &[State], context: &str) -> State {
    let now = snapshot(&fx.dir);
    for &state in allowed {
        if &now == fx.snapshot_of(state) {
            return state;
        }
    }
    let report: Vec<String> = allowed
        .iter()
        .map(|&s| {
            let want = fx.snapshot_of(s);
            format!("vs {s:?}: files differ at {:?}; users {:?} (want {:?})", differences(&now.files, &want.files), now.users, want.users)
        })
        .collect();
    panic!("{context}: the data dir is a mix, neither of {allowed:?}:\n{}", report.join("\n"));
}

// ---------------------------------------------------------------------------------------
// The real binary, and what must hold each time it comes back.
// ---------------------------------------------------------------------------------------

struct Live {
    server: BinaryServer,
    base: String,
    client: reqwest::Client,
    su: String,
}

impl Live {
    async fn start(dir: &Path) -> Live {
        let server = BinaryServer::start(dir);
        let base = server.base.clone();
        let client = reqwest::Client::new();
        let r = client.get(format!("{base}/api/health")).send().await.unwrap();
        assert_eq!(r.status(), 200, "health after start");
        let su = login(&client, &base, "_superusers", SUPERUSER.0, SUPERUSER.1).await;
        Live { server, base, client, su }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL, then waits for the process to be gone.
    fn kill(self) {
        drop(self.server);
    }

    async fn list(&self) -> Vec<(String, u64)> {
        let r = self.client.get(self.url("/api/backups")).header("Authorization", &self.su).send().await.unwrap();
        let (status, body) = status_json(r).await;
        assert_eq!(status, 200, "{body}");
        body.as_array().unwrap().iter().map(|b| (b["key"].as_str().unwrap().to_string(), b["size"].as_u64().unwrap())).collect()
    }

    async fn delete(&self, key: &str) {
        let r = self.client.delete(self.url(&format!("/api/backups/{key}"))).header("Authorization", &self.su).send().await.unwrap();
        assert_eq!(r.status(), 204, "delete {key}");
    }

    async fn login_status(&self, (email, password): (&str, &str)) -> u16 {
        let r = self
            .client
            .post(self.url("/api/collections/users/auth-with-password"))
            .json(&json!({"identity": email, "password": password}))
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }
}

/// Opens a stored archive and reads every entry to its end, which checks each CRC.
fn check_zip(path: &Path) -> Result<usize, String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).map_err(|e| e.to_string())?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| e.to_string())?;
        let name = entry.name().map_err(|e| e.to_string())?.into_owned();
        let n = io::copy(&mut entry, &mut io::sink()).map_err(|e| format!("{name}: {e}"))?;
        if n != entry.size() {
            return Err(format!("{name}: {n} bytes, {} declared", entry.size()));
        }
    }
    if zip.index_for_name("data.db").is_none() {
        return Err("no data.db".into());
    }
    Ok(zip.len())
}

fn names_in(folder: &Path) -> Vec<String> {
    match fs::read_dir(folder) {
        Ok(entries) => {
            let mut names: Vec<String> = entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            names
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", folder.display()),
    }
}

/// What a kill left behind, seen before the restart cleans up.
#[derive(Debug, Default)]
struct Leftovers {
    temp: Vec<String>,
    /// The phase in the restore journal, if there is one.
    journal: Option<String>,
    /// Entries in the journal's `old/` and `new/` folders.
    old_new: (Option<usize>, Option<usize>),
}

fn journal_phase(dir: &Path) -> Option<String> {
    let bytes = fs::read(dir.join(TEMP_DIR).join("restore/journal.json")).ok()?;
    let journal: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    journal["phase"].as_str().map(String::from)
}

fn leftovers(dir: &Path) -> Leftovers {
    let journal_dir = dir.join(TEMP_DIR).join("restore");
    Leftovers {
        temp: names_in(&dir.join(TEMP_DIR)),
        journal: journal_phase(dir),
        old_new: (count_in(&journal_dir.join("old")), count_in(&journal_dir.join("new"))),
    }
}

/// The checks after every restart: an empty temp folder; every file of the backups folder
/// listed, at its size, and a complete zip; the data dir wholly one of `allowed`, and the
/// accounts of that state working. Returns the state and the listed keys.
async fn check_restarted(live: &Live, fx: &Fixture, allowed: &[State], context: &str) -> (State, Vec<String>) {
    // The server may clear old data in the background after it starts serving: allow it a
    // few seconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let temp = names_in(&fx.dir.join(TEMP_DIR));
        if temp.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{context}: leftovers in {TEMP_DIR} after start: {temp:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let listed = live.list().await;
    let keys: Vec<String> = listed.iter().map(|(k, _)| k.clone()).collect();
    let mut on_disk = names_in(&fx.dir.join(BACKUPS_DIR));
    on_disk.sort();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(on_disk, sorted, "{context}: files in {BACKUPS_DIR}/ that are not listed backups (partial or staging)");
    for (key, size) in &listed {
        let path = fx.dir.join(BACKUPS_DIR).join(key);
        assert_eq!(fs::metadata(&path).unwrap().len(), *size, "{context}: listed size of {key}");
        if let Err(e) = check_zip(&path) {
            panic!("{context}: listed backup {key} is not a complete archive: {e}");
        }
    }

    let state = state_of(fx, allowed, context);
    assert_eq!(live.login_status(state.own_user()).await, 200, "{context}: login of the {state:?} user");
    if allowed.len() > 1 {
        assert_eq!(live.login_status(state.other().own_user()).await, 400, "{context}: login of the {:?} user", state.other());
    }
    (state, keys)
}

/// The shortest of three runs of `run` (each returns how long its operation took): one slow
/// first run (343 ms for an upload that then took far less) spread the kills past the work,
/// and the test failed with 1 of 16 landing mid-upload.
async fn shortest_of_three<F: std::future::Future<Output = Duration>>(mut run: impl FnMut() -> F) -> Duration {
    let mut shortest = Duration::MAX;
    for _ in 0..3 {
        shortest = shortest.min(run().await);
    }
    shortest
}

/// Kill delays from 0 to a little past the measured duration, evenly spread.
fn delays(measured: Duration, kills: u64) -> Vec<Duration> {
    let span = measured.mul_f64(1.3);
    (0..kills).map(|i| span.mul_f64(i as f64 / (kills - 1).max(1) as f64)).collect()
}

fn kills_per_op() -> u64 {
    env_u64("PB_CRASH_KILLS", 16).max(2)
}

/// A run whose kills mostly missed the work proves little: at least this many of `kills`
/// spread over the measured duration must find work in the temp folder (about three in four
/// do on a quiet machine; a quarter leaves room for a loaded one).
fn mid_op_floor(kills: u64) -> usize {
    (kills / 4).max(1) as usize
}

/// "Answers when stored" (R15, R18): a 204 that reached the client before the kill means
/// the key is listed after the restart. Any other answer is wrong; no answer (the kill cut
/// the connection) promises nothing. Returns whether the client got its 204.
fn check_answer(answer: &Result<u16, reqwest::Error>, key: &str, keys: &[String], context: &str) -> bool {
    match answer {
        Ok(204) => {
            assert!(keys.iter().any(|k| k == key), "{context}: answered 204 before the kill, yet {key} is not listed after it");
            true
        }
        Ok(status) => panic!("{context}: answered {status}"),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_create_lists_no_partial_backup() {
    let _heavy = heavy().await;
    let fx = Fixture::new();
    let mut live = Live::start(&fx.dir).await;

    let create = |live: &Live, key: String| {
        let request = live.client.post(live.url("/api/backups")).header("Authorization", &live.su).json(&json!({"name": key}));
        tokio::spawn(async move { request.timeout(Duration::from_secs(120)).send().await.map(|r| r.status().as_u16()) })
    };
    let measured = shortest_of_three(|| async {
        let started = Instant::now();
        assert_eq!(create(&live, "calibrate.zip".into()).await.unwrap().unwrap(), 204);
        let took = started.elapsed();
        live.delete("calibrate.zip").await;
        took
    })
    .await;

    let (mut mid_op, mut published, mut answered) = (0, 0, 0);
    for (i, delay) in delays(measured, kills_per_op()).into_iter().enumerate() {
        let key = format!("kill-{i}.zip");
        let request = create(&live, key.clone());
        tokio::time::sleep(delay).await;
        live.kill();
        let left = leftovers(&fx.dir);
        mid_op += usize::from(!left.temp.is_empty());
        let answer = request.await.unwrap();

        live = Live::start(&fx.dir).await;
        let context = format!("create killed after {delay:?} (left {left:?})");
        let (_, keys) = check_restarted(&live, &fx, &[State::A], &context).await;
        assert!(keys.iter().all(|k| *k == key), "{context}: unexpected backups {keys:?}");
        answered += usize::from(check_answer(&answer, &key, &keys, &context));
        if keys.contains(&key) {
            published += 1;
            live.delete(&key).await;
        }
    }
    let kills = kills_per_op();
    eprintln!("create: {measured:?} per create; {kills} kills: {mid_op} left work in {TEMP_DIR}, {published} found published, {answered} answered 204");
    assert!(mid_op >= mid_op_floor(kills), "only {mid_op} of {kills} kills landed while a create worked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_upload_lists_no_partial_backup() {
    let _heavy = heavy().await;
    let fx = Fixture::new();
    let archive = Bytes::from(fx.archive_bytes());
    let mut live = Live::start(&fx.dir).await;

    let upload = |live: &Live, key: String| {
        let part = reqwest::multipart::Part::stream_with_length(archive.clone(), archive.len() as u64)
            .file_name(key)
            .mime_str("application/zip")
            .unwrap();
        let request = live
            .client
            .post(live.url("/api/backups/upload"))
            .header("Authorization", &live.su)
            .multipart(reqwest::multipart::Form::new().part("file", part));
        tokio::spawn(async move { request.timeout(Duration::from_secs(120)).send().await.map(|r| r.status().as_u16()) })
    };
    let measured = shortest_of_three(|| async {
        let started = Instant::now();
        assert_eq!(upload(&live, "calibrate.zip".into()).await.unwrap().unwrap(), 204);
        let took = started.elapsed();
        live.delete("calibrate.zip").await;
        took
    })
    .await;

    let (mut mid_op, mut published, mut answered) = (0, 0, 0);
    for (i, delay) in delays(measured, kills_per_op()).into_iter().enumerate() {
        let key = format!("kill-{i}.zip");
        let request = upload(&live, key.clone());
        tokio::time::sleep(delay).await;
        live.kill();
        let left = leftovers(&fx.dir);
        mid_op += usize::from(!left.temp.is_empty());
        let answer = request.await.unwrap();

        live = Live::start(&fx.dir).await;
        let context = format!("upload killed after {delay:?} (left {left:?})");
        let (_, keys) = check_restarted(&live, &fx, &[State::A], &context).await;
        assert!(keys.iter().all(|k| *k == key), "{context}: unexpected backups {keys:?}");
        answered += usize::from(check_answer(&answer, &key, &keys, &context));
        if keys.contains(&key) {
            published += 1;
            let stored = fs::read(fx.dir.join(BACKUPS_DIR).join(&key)).unwrap();
            assert!(stored == archive, "{context}: the published upload differs from what was sent");
            live.delete(&key).await;
        }
    }
    let kills = kills_per_op();
    eprintln!(
        "upload: {measured:?} per {} MiB upload; {kills} kills: {mid_op} left work in {TEMP_DIR}, {published} found published, {answered} answered 204",
        archive.len() as u64 / MIB,
    );
    assert!(mid_op >= mid_op_floor(kills), "only {mid_op} of {kills} kills landed while an upload worked");
}

/// The checks are not vacuous: each catches the damage it is there for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checks_catch_partial_archives_leftovers_and_mixed_data() {
    use futures_util::FutureExt;
    use std::panic::AssertUnwindSafe;
    let _heavy = heavy().await;
    let mut fx = Fixture::new();
    let archive = fx.archive_bytes();
    fx.mutate_to_b();
    let live = Live::start(&fx.dir).await;
    let (l, f) = (&live, &fx);
    let fails = |what: &'static str| async move {
        let result = AssertUnwindSafe(check_restarted(l, f, &[State::A, State::B], what)).catch_unwind().await;
        assert!(result.is_err(), "the checks missed: {what}");
    };
    // Sound as it is.
    assert_eq!(check_restarted(&live, &fx, &[State::A, State::B], "sound").await.0, State::B);

    let backups = fx.dir.join(BACKUPS_DIR);
    fs::create_dir_all(&backups).unwrap();
    fs::write(backups.join("cut.zip"), &archive[..archive.len() - 1000]).unwrap();
    fails("a truncated archive").await;
    let mut flipped = archive.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 1;
    fs::write(backups.join("cut.zip"), &flipped).unwrap();
    fails("a flipped bit").await;
    fs::remove_file(backups.join("cut.zip")).unwrap();
    fs::write(backups.join(".staging-x"), b"").unwrap();
    fails("a staging file").await;
    fs::remove_file(backups.join(".staging-x")).unwrap();

    fs::write(fx.dir.join(TEMP_DIR).join("upload-x.zip"), b"").unwrap();
    fails("a temp leftover").await;
    fs::remove_file(fx.dir.join(TEMP_DIR).join("upload-x.zip")).unwrap();

    // B's files with A's marker, then B's files with A's accounts.
    fs::write(fx.dir.join("marker.txt"), b"state a").unwrap();
    fails("one file of the other state").await;
    fs::write(fx.dir.join("marker.txt"), b"state b").unwrap();
    let accounts = Accounts::open(&fx.dir).unwrap();
    accounts.upsert(Collection::Users, ONLY_A.0, ONLY_A.1).unwrap();
    drop(accounts);
    fails("the accounts of both states").await;
    live.kill();
}

/// A point of the restore's swap, seen from outside through the journal folder.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    /// The journal says `swapping` and `old/` holds at least this many entries.
    OldMoved(usize),
    /// The journal says `swapping` and `new/` holds at most this many entries.
    NewLeft(usize),
    /// The journal says `swapped`: the new data is in place, not committed yet.
    Swapped,
    /// The journal was there and is gone: committed.
    Gone,
    /// A rollback has marked the journal `rolling_back` (it moves nothing before that).
    RollingBack,
    /// A rollback has moved at least this many entries of the backup into `discard/`.
    Discarded(usize),
    /// A rollback is under way (`discard/` exists) and `old/` holds at most this many entries.
    OldLeft(usize),
}

fn count_in(folder: &Path) -> Option<usize> {
    fs::read_dir(folder).ok().map(|entries| entries.count())
}

/// Kills `pid` with SIGKILL from a thread of its own as soon as `trigger` holds, polling the
/// journal folder (the swap lasts about a millisecond, too short to hit with a timer).
/// Returns whether it fired; gives up once the journal is gone, or at `deadline`.
fn kill_when(dir: PathBuf, pid: libc::pid_t, trigger: Trigger, deadline: Duration) -> std::thread::JoinHandle<bool> {
    let started = Instant::now();
    std::thread::spawn(move || {
        let journal_dir = dir.join(TEMP_DIR).join("restore");
        let mut journal_seen = false;
        while started.elapsed() < deadline {
            let phase = journal_phase(&dir);
            let swapping = phase.as_deref() == Some("swapping");
            let fire = match trigger {
                Trigger::OldMoved(n) => swapping && count_in(&journal_dir.join("old")).is_some_and(|c| c >= n),
                Trigger::NewLeft(n) => swapping && count_in(&journal_dir.join("new")).is_some_and(|c| c <= n),
                Trigger::Swapped => phase.as_deref() == Some("swapped"),
                Trigger::Gone => journal_seen && phase.is_none(),
                Trigger::RollingBack => phase.as_deref() == Some("rolling_back"),
                Trigger::Discarded(n) => count_in(&journal_dir.join("discard")).is_some_and(|c| c >= n),
                // Read old/ first: a rollback creates discard/ before it empties old/.
                Trigger::OldLeft(n) => {
                    let old = count_in(&journal_dir.join("old"));
                    journal_dir.join("discard").exists() && old.is_some_and(|c| c <= n)
                }
            };
            if fire {
                // SAFETY: kill(2) has no memory effects; the pid is our unreaped child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return true;
            }
            if journal_seen && phase.is_none() {
                return false;
            }
            journal_seen |= phase.is_some();
            if journal_dir.exists() {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        false
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_restore_leaves_old_or_new_data_whole() {
    let _heavy = heavy().await;
    let mut fx = Fixture::new();
    fx.store_archive(State::A.archive());
    fx.mutate_to_b();
    fx.store_archive(State::B.archive());
    let mut live = Live::start(&fx.dir).await;
    let mut state = check_restarted(&live, &fx, &[State::B], "before any restore").await.0;

    let restore = |live: &Live, key: &str| {
        let request = live.client.post(live.url(&format!("/api/backups/{key}/restore"))).header("Authorization", &live.su);
        tokio::spawn(async move { request.timeout(Duration::from_secs(120)).send().await.map(|r| r.status().as_u16()) })
    };
    // Measured until the re-executed server serves the other state's accounts, committed.
    let started = Instant::now();
    assert_eq!(restore(&live, state.other().archive()).await.unwrap().unwrap(), 204);
    let target = state.other();
    eventually(Duration::from_secs(120), "the restored server", || async {
        let fresh = reqwest::Client::new();
        let r = fresh
            .post(live.url("/api/collections/users/auth-with-password"))
            .json(&json!({"identity": target.own_user().0, "password": target.own_user().1}))
            .send()
            .await
            .ok()?;
        (r.status() == 200 && !fx.dir.join(TEMP_DIR).join("restore").exists()).then_some(())
    })
    .await;
    let measured = started.elapsed();
    live.kill();
    live = Live::start(&fx.dir).await;
    state = check_restarted(&live, &fx, &[target], "after the measured restore").await.0;

    // Timed kills spread over the whole restore (mostly during extraction), then kills fired
    // at points of the swap itself: after k old entries moved aside, with k new entries
    // left to move in, swapped but not committed, just committed.
    let top = fx.a.files.keys().filter(|k| !k.contains('/')).count();
    let kills = kills_per_op();
    // (delay, trigger, tries so far)
    let mut plan: VecDeque<(Option<Duration>, Option<Trigger>, usize)> =
        delays(measured, kills / 2).into_iter().map(|d| (Some(d), None, 0)).collect();
    for k in [0, 1, top / 3, 2 * top / 3, top] {
        plan.push_back((None, Some(Trigger::OldMoved(k)), 0));
    }
    for k in [top, top / 2, 1, 0] {
        plan.push_back((None, Some(Trigger::NewLeft(k)), 0));
    }
    plan.extend([(None, Some(Trigger::Swapped), 0), (None, Some(Trigger::Gone), 0)]);
    // The swap lasts about a millisecond: a loaded machine may keep the watcher off the CPU
    // through it. A trigger that missed is tried again later, up to this many times in all.
    const TRIGGER_TRIES: usize = 4;

    let (mut mid_op, mut flipped, mut missed, mut retried) = (0, 0, Vec::new(), 0);
    let mut in_phase: BTreeMap<String, usize> = BTreeMap::new();
    let mut mid_swap = Vec::new();
    let mut kills_done = 0;
    while let Some((delay, trigger, tries)) = plan.pop_front() {
        kills_done += 1;
        let request = restore(&live, state.other().archive());
        match (delay, trigger) {
            (Some(delay), _) => tokio::time::sleep(delay).await,
            (None, Some(trigger)) => {
                let watcher = kill_when(fx.dir.clone(), live.server.pid() as libc::pid_t, trigger, measured * 3 + Duration::from_secs(10));
                if !tokio::task::spawn_blocking(move || watcher.join().unwrap()).await.unwrap() {
                    if tries + 1 < TRIGGER_TRIES {
                        retried += 1;
                        plan.push_back((None, Some(trigger), tries + 1));
                    } else {
                        missed.push(trigger);
                    }
                }
            }
            (None, None) => unreachable!(),
        }
        live.kill();
        let left = leftovers(&fx.dir);
        mid_op += usize::from(!left.temp.is_empty());
        if let Some(phase) = &left.journal {
            *in_phase.entry(phase.clone()).or_default() += 1;
            if phase == "swapping" {
                mid_swap.push(left.old_new);
            }
        }
        // The 204 comes before the swap: whether the client saw it says nothing of the data.
        let _ = request.await.unwrap();

        live = Live::start(&fx.dir).await;
        let context = format!("restore {state:?} -> {:?} killed at {delay:?} {trigger:?} (left {left:?})", state.other());
        let (now, keys) = check_restarted(&live, &fx, &[State::A, State::B], &context).await;
        assert_eq!(keys.len(), 2, "{context}: both archives are still listed: {keys:?}");
        // A kill mid-swap is rolled back; once swapped, the new data is committed.
        match left.journal.as_deref() {
            Some("swapping") => assert_eq!(now, state, "{context}: rolled back"),
            Some("swapped") => assert_eq!(now, state.other(), "{context}: committed"),
            _ => {}
        }
        flipped += usize::from(now != state);
        state = now;
    }
    eprintln!(
        "restore: {measured:?} until the restored server serves; {kills_done} kills: {mid_op} left work in {TEMP_DIR}, \
         journals left by phase {in_phase:?} (old/, new/ entries mid-swap: {mid_swap:?}), {flipped} found \
         restored; triggers tried again {retried}, missed {missed:?}"
    );
    // Every kill was checked to leave A or B whole; these make sure the kills were where the
    // damage could be: in the swap's two phases, at every swap point, and mostly mid-work.
    let hits = |phase: &str| in_phase.get(phase).copied().unwrap_or(0);
    assert!(hits("swapping") > 0 && hits("swapped") > 0, "no kill left a journal mid-swap and once swapped: {in_phase:?}");
    assert!(missed.is_empty(), "swap points never hit in {TRIGGER_TRIES} tries: {missed:?}");
    assert!(mid_op >= mid_op_floor(kills_done as u64), "only {mid_op} of {kills_done} kills landed while a restore worked");
}

/// A start that finds restored data it cannot use (here: no superuser) rolls the restore back.
/// Killed at steps of that rollback (journal marked, backup entries moved to `discard/`, old
/// entries moved back), the next start must finish the rollback: the old data whole, never
/// a commit of a data dir that is half old, half new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_rollback_at_start_resumes_the_rollback() {
    let _heavy = heavy().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let accounts = Accounts::open(&dir).unwrap();
    accounts.upsert(Collection::Users, ONLY_A.0, ONLY_A.1).unwrap();
    drop(accounts);
    // Many top-level entries, each one rename, so that the rollback lasts long enough for the
    // watcher to see its steps.
    const TOP: usize = 600;
    for i in 0..TOP {
        write_file(&dir.join(format!("top-{i:03}.txt")), format!("old {i}").as_bytes());
    }
    write_file(&dir.join("storage/a/1.bin"), b"old file 1");
    write_file(&dir.join("storage/b.bin"), b"old file b");
    let old = snapshot(&dir);

    let plan = [
        Trigger::RollingBack,
        Trigger::Discarded(1),
        Trigger::Discarded(TOP / 2),
        Trigger::OldLeft(TOP),
        Trigger::OldLeft(2 * TOP / 3),
        Trigger::OldLeft(TOP / 3),
        Trigger::OldLeft(1),
        Trigger::OldLeft(0),
    ];
    let (mut missed, mut left_by_phase) = (Vec::new(), BTreeMap::<String, usize>::new());
    for trigger in plan {
        // Restored data without a superuser, swapped in as the server does before it restarts.
        let extracted = dir.join(TEMP_DIR).join("extracted");
        fs::create_dir_all(&extracted).unwrap();
        let accounts = Accounts::open(&extracted).unwrap();
        accounts.upsert(Collection::Users, ONLY_B.0, ONLY_B.1).unwrap();
        drop(accounts);
        for i in 0..TOP {
            write_file(&extracted.join(format!("new-{i:03}.txt")), format!("new {i}").as_bytes());
        }
        write_file(&extracted.join("storage/c.bin"), b"new file c");
        let data = pb_backups::restore::DataDir::new(&dir);
        let _ = pb_backups::restore::swap_in(&data, &extracted).unwrap();
        assert_eq!(journal_phase(&dir).as_deref(), Some("swapped"));

        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pb-backups"))
            .args(["serve", "--http", "127.0.0.1:0", "--dir"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let watcher = kill_when(dir.clone(), child.id() as libc::pid_t, trigger, Duration::from_secs(60));
        if !tokio::task::spawn_blocking(move || watcher.join().unwrap()).await.unwrap() {
            missed.push(trigger);
        }
        let _ = child.kill();
        let _ = child.wait();
        let left = leftovers(&dir);
        if let Some(phase) = &left.journal {
            *left_by_phase.entry(phase.clone()).or_default() += 1;
        }

        let live = Live::start(&dir).await;
        let context = format!("rollback killed at {trigger:?} (left {left:?})");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !names_in(&dir.join(TEMP_DIR)).is_empty() {
            assert!(Instant::now() < deadline, "{context}: leftovers in {TEMP_DIR}: {:?}", names_in(&dir.join(TEMP_DIR)));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let now = snapshot(&dir);
        assert!(
            now == old,
            "{context}: not the old data: files differ at {:?}; users {:?} (want {:?})",
            differences(&now.files, &old.files),
            now.users,
            old.users
        );
        assert_eq!(live.login_status(ONLY_A).await, 200, "{context}: login of the old data's user");
        assert_eq!(live.login_status(ONLY_B).await, 400, "{context}: login of the discarded data's user");
        live.kill();
    }
    eprintln!("rollback: {} kills, journals left by phase {left_by_phase:?}, triggers missed {missed:?}", plan.len());
    // Where the kills landed depends on the machine's load: printed, not asserted. Every
    // kill, wherever it landed, was checked to leave the old data whole.
}

// ---------------------------------------------------------------------------------------
// Disk full.
// ---------------------------------------------------------------------------------------

/// A tmpfs mounted for the test, unmounted (lazily, even if a file is still open) on drop.
struct Tmpfs {
    target: CString,
}

impl Tmpfs {
    fn mount(target: &Path, size: u64) -> io::Result<Tmpfs> {
        let target = CString::new(target.as_os_str().as_bytes()).unwrap();
        let options = CString::new(format!("size={size},mode=0755")).unwrap();
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(c"tmpfs".as_ptr(), target.as_ptr(), c"tmpfs".as_ptr(), 0, options.as_ptr().cast())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Tmpfs { target })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // SAFETY: target is a valid NUL-terminated string.
        unsafe { libc::umount2(self.target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Mounts a tmpfs of `size` at `target`; a test that cannot fill a disk fails, it never
/// passes without having run.
fn tmpfs(target: &Path, size: u64) -> Tmpfs {
    Tmpfs::mount(target, size).unwrap_or_else(|e| {
        panic!("cannot mount a tmpfs ({e}): run as root, or inside `unshare --user --map-root-user --mount`")
    })
}

fn free_space(path: &Path) -> u64 {
    pb_backups::util::free_space(path).unwrap()
}

/// After a failed operation: nothing in the temp folder or the backups folder but `keep`,
/// the list unchanged, the space given back.
async fn assert_nothing_left(live: &Live, dir: &Path, keep: &[&str], free_before: u64, what: &str) {
    assert_eq!(names_in(&dir.join(TEMP_DIR)), Vec::<String>::new(), "{what}: leftovers in {TEMP_DIR}");
    assert_eq!(names_in(&dir.join(BACKUPS_DIR)), keep, "{what}: files in {BACKUPS_DIR}/");
    let listed: Vec<String> = live.list().await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(listed, keep, "{what}: listed backups");
    let free = free_space(dir);
    // SQLite may have grown its WAL by a few pages meanwhile.
    assert!(free + MIB >= free_before, "{what}: {} KiB not given back", (free_before - free) / 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_during_create_and_upload_leaves_nothing_behind() {
    let _heavy = heavy().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    fs::create_dir(&dir).unwrap();
    // The data (20 MiB of random bytes) fits; an archive of it does not.
    let _tmpfs = tmpfs(&dir, 32 * MIB);
    seed_accounts(&dir);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    write_file(&dir.join("storage/big.bin"), &random_bytes(&mut rng, 20 * MIB as usize));
    let live = Live::start(&dir).await;
    let free_before = free_space(&dir);
    assert!(free_before < 16 * MIB, "{free_before} bytes free: the disk is not small enough to fill");

    let r = live.client.post(live.url("/api/backups")).header("Authorization", &live.su).json(&json!({"name": "full.zip"})).send().await.unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!((status, body), (400, error_body(400, Message::CreateFailed.text(Lang::Zh))), "create on a full disk");
    assert_nothing_left(&live, &dir, &[], free_before, "create on a full disk").await;

    // 16 MiB of zip: more than the space left.
    // A client of its own: the server answers before reading the whole body and closes the
    // connection (saying `Connection: close`), which must not leave a pooled connection behind.
    let upload = |name: &str, size: u64| {
        let (len, body) = zip_of_zeros(size, false);
        let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(body), len)
            .file_name(name.to_string())
            .mime_str("application/zip")
            .unwrap();
        reqwest::Client::new()
            .post(live.url("/api/backups/upload"))
            .header("Authorization", &live.su)
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
    };
    let r = upload("full.zip", 16 * MIB).await.expect("an answer, not a reset, for an upload that fills the disk");
    let (status, body) = status_json(r).await;
    assert_eq!((status, body), (400, error_body(400, Message::UploadFailed.text(Lang::Zh))), "upload on a full disk");
    assert_nothing_left(&live, &dir, &[], free_before, "upload on a full disk").await;

    // Still serving: with room made, both work again.
    let r = live.client.get(live.url("/api/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    fs::remove_file(dir.join("storage/big.bin")).unwrap();
    let r = upload("small.zip", MIB).await.unwrap();
    assert_eq!(r.status(), 204, "upload once there is room");
    let r = live.client.post(live.url("/api/backups")).header("Authorization", &live.su).json(&json!({"name": "fits.zip"})).send().await.unwrap();
    assert_eq!(r.status(), 204, "create once there is room");
    assert_eq!(names_in(&dir.join(TEMP_DIR)), Vec::<String>::new());
    let log = fs::read_to_string(&live.server.log).unwrap();
    live.kill();
    // The causes are in the log (never in a body): both failures were the disk filling up.
    let full = |what: &str| log.lines().any(|l| l.contains(what) && l.contains("No space left"));
    assert!(full("backup create failed") && full("upload could not be written"), "both for lack of space:\n{log}");
}

// ---------------------------------------------------------------------------------------
// Huge uploads.
// ---------------------------------------------------------------------------------------

static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// A zip holding one Stored entry `zeros.bin` of `size` zero bytes, as a stream: the CRC is
/// computed on the fly and written after the data (general purpose flag bit 3), so nothing
/// but one static chunk of zeros is ever held. Zip64 records when the size needs them (or
/// when forced). Returns the total length and the stream.
fn zip_of_zeros(size: u64, force_zip64: bool) -> (u64, impl Stream<Item = io::Result<Bytes>> + Send + 'static) {
    const NAME: &[u8] = b"zeros.bin";
    let zip64 = force_zip64 || size >= u64::from(u32::MAX) - (1 << 20);
    let version: u16 = if zip64 { 45 } else { 20 };
    let (time, date) = (0u16, (1 << 5) | 1); // 1980-01-01 00:00
    let descriptor_len: u64 = if zip64 { 24 } else { 16 };
    let local_len = 30 + NAME.len() as u64;
    let cd_offset = local_len + size + descriptor_len;
    let cd_extra: u16 = if zip64 { 4 + 16 } else { 0 };
    let cd_len = 46 + NAME.len() as u64 + u64::from(cd_extra);
    let tail_len = if zip64 { 56 + 20 } else { 0 } + 22;
    let total = cd_offset + cd_len + tail_len;

    let mut local = Vec::new();
    local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    for v in [version, 0x0008, 0, time, date] {
        local.extend_from_slice(&v.to_le_bytes());
    }
    local.extend_from_slice(&[0; 12]); // CRC and sizes: in the descriptor
    local.extend_from_slice(&(NAME.len() as u16).to_le_bytes());
    local.extend_from_slice(&0u16.to_le_bytes());
    local.extend_from_slice(NAME);

    let trailer = move |crc: u32| -> Bytes {
        let mut t = Vec::new();
        t.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        t.extend_from_slice(&crc.to_le_bytes());
        if zip64 {
            t.extend_from_slice(&size.to_le_bytes());
            t.extend_from_slice(&size.to_le_bytes());
        } else {
            t.extend_from_slice(&(size as u32).to_le_bytes());
            t.extend_from_slice(&(size as u32).to_le_bytes());
        }
        let short_size = if zip64 { u32::MAX } else { size as u32 };
        t.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        for v in [(3 << 8) | version, version, 0x0008, 0, time, date] {
            t.extend_from_slice(&v.to_le_bytes());
        }
        t.extend_from_slice(&crc.to_le_bytes());
        t.extend_from_slice(&short_size.to_le_bytes());
        t.extend_from_slice(&short_size.to_le_bytes());
        for v in [NAME.len() as u16, cd_extra, 0, 0, 0] {
            t.extend_from_slice(&v.to_le_bytes());
        }
        t.extend_from_slice(&(0o100_644u32 << 16).to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes()); // local header offset
        t.extend_from_slice(NAME);
        if zip64 {
            t.extend_from_slice(&1u16.to_le_bytes());
            t.extend_from_slice(&16u16.to_le_bytes());
            t.extend_from_slice(&size.to_le_bytes());
            t.extend_from_slice(&size.to_le_bytes());
            let eocd64_offset = cd_offset + cd_len;
            t.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
            t.extend_from_slice(&44u64.to_le_bytes());
            t.extend_from_slice(&((3 << 8) | version).to_le_bytes());
            t.extend_from_slice(&version.to_le_bytes());
            t.extend_from_slice(&[0; 8]); // this disk, disk of the central directory
            t.extend_from_slice(&1u64.to_le_bytes());
            t.extend_from_slice(&1u64.to_le_bytes());
            t.extend_from_slice(&cd_len.to_le_bytes());
            t.extend_from_slice(&cd_offset.to_le_bytes());
            t.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
            t.extend_from_slice(&0u32.to_le_bytes());
            t.extend_from_slice(&eocd64_offset.to_le_bytes());
            t.extend_from_slice(&1u32.to_le_bytes());
        }
        t.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        for v in [0u16, 0, 1, 1] {
            t.extend_from_slice(&v.to_le_bytes());
        }
        t.extend_from_slice(&(cd_len as u32).to_le_bytes());
        t.extend_from_slice(&u32::try_from(cd_offset).unwrap_or(u32::MAX).to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes());
        Bytes::from(t)
    };

    enum Phase {
        Header(Vec<u8>),
        Data(u64, flate2::Crc),
        Done,
    }
    let body = stream::unfold(Phase::Header(local), move |phase| {
        async move {
            match phase {
                Phase::Header(h) => Some((Ok(Bytes::from(h)), Phase::Data(size, flate2::Crc::new()))),
                Phase::Data(0, crc) => Some((Ok(trailer(crc.sum())), Phase::Done)),
                Phase::Data(left, mut crc) => {
                    let n = left.min(ZEROS.len() as u64) as usize;
                    crc.update(&ZEROS[..n]);
                    Some((Ok(Bytes::from_static(&ZEROS[..n])), Phase::Data(left - n as u64, crc)))
                }
                Phase::Done => None,
            }
        }
    });
    (total, body)
}

async fn collect(body: impl Stream<Item = io::Result<Bytes>>) -> Vec<u8> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test]
async fn generated_zips_are_valid_archives() {
    for (size, zip64) in [(0, false), (3 * MIB + 17, false), (MIB + 5, true)] {
        let (len, body) = zip_of_zeros(size, zip64);
        let bytes = collect(body).await;
        assert_eq!(bytes.len() as u64, len, "declared length, zip64 {zip64}");
        let mut zip = zip::ZipArchive::new(io::Cursor::new(&bytes)).unwrap();
        assert_eq!(zip.len(), 1);
        let mut entry = zip.by_index(0).unwrap();
        assert_eq!(entry.size(), size);
        assert_eq!(io::copy(&mut entry, &mut io::sink()).unwrap(), size, "read with its CRC checked");
        drop(entry);
        // And the server's own validation accepts it.
        let file = tempfile::NamedTempFile::new().unwrap();
        fs::write(file.path(), &bytes).unwrap();
        let summary = pb_backups::archive::validate(file.path(), &Default::default()).unwrap();
        assert_eq!(summary.total_size, size);
    }
}

/// A field of /proc/self/status, in bytes.
fn proc_status(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_gib_upload_is_stored_with_flat_memory() {
    let _heavy = heavy().await;
    let size = env_u64("PB_BIG_UPLOAD_MIB", 3072) * MIB;
    let server = TestServer::start().await;
    let su = server.superuser_token().await;
    let (len, body) = zip_of_zeros(size, false);

    let rss_before = proc_status("VmRSS:");
    // Resets the peak (VmHWM) to the current size, so that the peak below is this upload's.
    let peak_reset = fs::write("/proc/self/clear_refs", "5").is_ok();
    let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(body), len)
        .file_name("big.zip")
        .mime_str("application/zip")
        .unwrap();
    let started = Instant::now();
    let r = server
        .client
        .post(server.url("/api/backups/upload"))
        .header("Authorization", &su)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    let took = started.elapsed();
    let (rss_after, peak) = (proc_status("VmRSS:"), proc_status("VmHWM:"));
    assert_eq!(status, 204, "{body}");

    let r = server.client.get(server.url("/api/backups")).header("Authorization", &su).send().await.unwrap();
    let (_, list) = status_json(r).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["key"], "big.zip");
    assert_eq!(list[0]["size"].as_u64(), Some(len), "listed size");
    // The stored central directory (not the GiB of data) says what was sent.
    let stored = server.data_dir().join(BACKUPS_DIR).join("big.zip");
    let mut zip = zip::ZipArchive::new(fs::File::open(&stored).unwrap()).unwrap();
    assert_eq!(zip.by_index(0).unwrap().size(), size);
    drop(zip);
    let r = server.client.delete(server.url("/api/backups/big.zip")).header("Authorization", &su).send().await.unwrap();
    assert_eq!(r.status(), 204);

    let grown = peak.saturating_sub(rss_before);
    eprintln!(
        "big upload: {} MiB in {took:?} ({:.0} MiB/s); RSS {} -> {} MiB, peak {} MiB{}",
        len / MIB,
        len as f64 / MIB as f64 / took.as_secs_f64(),
        rss_before / MIB,
        rss_after / MIB,
        peak / MIB,
        if peak_reset { "" } else { " (peak not resettable: process-wide)" }
    );
    assert!(grown < 200 * MIB, "memory grew by {} MiB during a {} MiB upload", grown / MIB, len / MIB);
    server.stop().await;
}

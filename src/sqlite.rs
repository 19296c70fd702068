//! The one way this server queries a `data.db` (or `auxiliary.db`): as a file someone else may
//! have written. A restored archive, a PocketBase data dir and our own data dir after a
//! restore are all foreign, and SQLite runs code its schema brings along (views, triggers,
//! CHECK constraints, generated columns). So every connection made here:
//!
//! - bounds each operation in time: a progress handler ends any statement once the
//!   operation's [`Deadline`] has passed, or once the process is stopping ([`stop_all`]);
//! - refuses to run views and triggers at all, and functions with side effects from the
//!   schema (`trusted_schema` off), in SQLite's defensive mode;
//! - caps the size of any one string or blob at [`MAX_VALUE_LEN`] (SQLite's own default is
//!   1 GB, which the server would then copy into its own memory);
//! - is read-only (and `query_only`) where we only read.
//!
//! [`object_kind`] tells a plain table from a view or virtual table of the same name, so that
//! callers can insist the system tables they read are tables. (A backup's snapshot copies
//! pages with SQLite's backup API and runs no query: it opens its own connections.)

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::limits::Limit;
use rusqlite::{Connection, ErrorCode, OpenFlags};

/// How long one operation on such a database may run: the whole check of a restored
/// `data.db`, the opening of a data dir, one locked section of the accounts (a login's
/// lookup, an upsert). Ours take milliseconds; a statement that runs for seconds is a view
/// or a trigger built never to end.
pub const QUERY_BUDGET: Duration = Duration::from_secs(5);

/// `PRAGMA integrity_check` reads every page, so its bound grows with the file: the
/// [`QUERY_BUDGET`] plus one second per this many bytes. It ran at 41 MiB/s here on a
/// 2-core machine at load 13 (120 MiB, one index); the bound is loose on purpose, since the
/// check cannot loop, only take long on a large file.
pub const INTEGRITY_CHECK_BYTES_PER_SEC: u64 = 4 << 20;

/// The largest string or blob SQLite may produce or hand over on these connections. Hashes,
/// emails, collection options and the settings row are a few KiB; PocketBase's own field
/// limits keep a record's values far below this.
pub const MAX_VALUE_LEN: i32 = 64 << 20;

/// How long a writer waits for another connection's lock before giving up.
const BUSY_WAIT: Duration = Duration::from_secs(5);

/// Virtual machine steps between two looks at the clock (about a microsecond of work each).
const STEPS_PER_CHECK: i32 = 1000;

/// Set once the process is stopping: every bounded statement still running ends at once.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The start of the clock deadlines are counted on.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// When the current operation on one connection must have ended; armed again for each one.
#[derive(Clone, Debug)]
pub struct Deadline(Arc<AtomicU64>);

impl Deadline {
    /// The operation that starts now may run for `budget`.
    pub fn arm(&self, budget: Duration) {
        let budget = u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX);
        self.0.store(now_nanos().saturating_add(budget), Ordering::Relaxed);
    }

    fn passed(&self) -> bool {
        now_nanos() > self.0.load(Ordering::Relaxed)
    }
}

fn now_nanos() -> u64 {
    u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Opens the database at `path` (created if missing, for [`Access::ReadWrite`]) with the
/// bounds above; the first operation may run for `budget`. Arm the deadline again before
/// each later operation: once it has passed, any statement that runs for more than a few
/// thousand steps fails.
pub fn open(path: &Path, access: Access, budget: Duration) -> rusqlite::Result<(Connection, Deadline)> {
    let flags = match access {
        Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
        Access::ReadWrite => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags)?;
    let deadline = Deadline(Arc::new(AtomicU64::new(0)));
    deadline.arm(budget);
    let watch = deadline.clone();
    conn.progress_handler(STEPS_PER_CHECK, Some(move || watch.passed() || STOPPING.load(Ordering::Relaxed)))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_VIEW, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_LEN)?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    match access {
        Access::ReadOnly => conn.pragma_update(None, "query_only", true)?,
        Access::ReadWrite => conn.busy_timeout(BUSY_WAIT)?,
    }
    Ok((conn, deadline))
}

/// The bound of `PRAGMA integrity_check` on a file of `bytes`.
pub fn integrity_check_budget(bytes: u64) -> Duration {
    QUERY_BUDGET + Duration::from_secs(bytes / INTEGRITY_CHECK_BYTES_PER_SEC)
}

/// Whether a statement failed because its operation ran out of time (or the process is
/// stopping).
pub fn is_interrupted(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted)
}

/// The process is stopping: statements still running on any bounded connection end now,
/// so that no blocking thread holds up the exit.
pub fn stop_all() {
    STOPPING.store(true, Ordering::Relaxed);
}

/// What stands in the main schema under a table's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Table,
    View,
    VirtualTable,
    /// A table a virtual table keeps its data in.
    ShadowTable,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Table => "table",
            ObjectKind::View => "view",
            ObjectKind::VirtualTable => "virtual table",
            ObjectKind::ShadowTable => "shadow table",
        }
    }
}

/// What `name` (matched as SQLite matches names, ignoring ASCII case) is in the main schema,
/// as SQLite itself parsed the schema; `None` when there is nothing of that name.
pub fn object_kind(conn: &Connection, name: &str) -> rusqlite::Result<Option<ObjectKind>> {
    let mut stmt = conn.prepare("SELECT type FROM pragma_table_list WHERE schema = 'main' AND name = ?1 COLLATE NOCASE")?;
    let kinds: Vec<String> = stmt.query_map([name], |r| r.get(0))?.collect::<Result<_, _>>()?;
    // Should a damaged schema list one name twice, anything but a table wins.
    let kind = kinds
        .iter()
        .map(|k| match k.as_str() {
            "table" => ObjectKind::Table,
            "view" => ObjectKind::View,
            "shadow" => ObjectKind::ShadowTable,
            _ => ObjectKind::VirtualTable,
        })
        .max_by_key(|k| *k != ObjectKind::Table);
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(sql: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        Connection::open(&path).unwrap().execute_batch(sql).unwrap();
        (dir, path)
    }

    const ENDLESS: &str = "CREATE TABLE t (x); INSERT INTO t VALUES (1);
        CREATE VIEW endless AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) AS c FROM n;";

    #[test]
    fn a_statement_past_its_deadline_is_interrupted() {
        let (_dir, path) = scratch("CREATE TABLE t (x)");
        let (conn, deadline) = open(&path, Access::ReadOnly, Duration::from_millis(50)).unwrap();
        let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
        let e = conn.query_row(endless, [], |r| r.get::<_, i64>(0)).unwrap_err();
        assert!(is_interrupted(&e), "{e}");
        // Passed: any statement of some length fails until the deadline is armed again.
        let some_work = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 10000) SELECT count(*) FROM n";
        assert!(is_interrupted(&conn.query_row(some_work, [], |r| r.get::<_, i64>(0)).unwrap_err()));
        deadline.arm(QUERY_BUDGET);
        assert_eq!(conn.query_row(some_work, [], |r| r.get::<_, i64>(0)).unwrap(), 10000);
    }

    #[test]
    fn an_integrity_check_past_its_deadline_is_interrupted() {
        let (_dir, path) = scratch(
            "CREATE TABLE t (x TEXT); CREATE INDEX tx ON t (x);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 20000) INSERT INTO t SELECT printf('%d', i) FROM n;",
        );
        let (conn, deadline) = open(&path, Access::ReadOnly, Duration::ZERO).unwrap();
        let check = |conn: &Connection| conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0));
        let got = check(&conn);
        assert!(got.as_ref().is_err_and(is_interrupted), "{got:?}");
        deadline.arm(QUERY_BUDGET);
        assert_eq!(check(&conn).unwrap(), "ok");
    }

    #[test]
    fn views_and_triggers_do_not_run() {
        let (_dir, path) = scratch(&format!(
            "{ENDLESS} CREATE TABLE log (x); CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.x); END;"
        ));
        let (conn, _) = open(&path, Access::ReadWrite, QUERY_BUDGET).unwrap();
        // Refused as it is prepared, not cut off after running for its budget.
        let e = conn.query_row("SELECT c FROM endless", [], |r| r.get::<_, i64>(0)).unwrap_err();
        assert!(!is_interrupted(&e), "{e}");
        conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
        assert_eq!(conn.query_row("SELECT count(*) FROM log", [], |r| r.get::<_, i64>(0)).unwrap(), 0);
    }

    #[test]
    fn pocketbase_s_column_defaults_still_work() {
        // PocketBase's tables make ids and times in DEFAULT clauses, where an untrusted
        // schema may only use innocuous functions: these are.
        let (_dir, path) = scratch(
            "CREATE TABLE t (id TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL,
             created TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL, x)",
        );
        let (conn, _) = open(&path, Access::ReadWrite, QUERY_BUDGET).unwrap();
        conn.execute("INSERT INTO t (x) VALUES (1)", []).unwrap();
        let (id, created): (String, String) = conn.query_row("SELECT id, created FROM t", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((id.len(), created.len()), (15, 24), "{id} {created}");
    }

    #[test]
    fn read_only_connections_write_nothing() {
        let (_dir, path) = scratch("CREATE TABLE t (x)");
        let (conn, _) = open(&path, Access::ReadOnly, QUERY_BUDGET).unwrap();
        assert!(conn.execute("INSERT INTO t VALUES (1)", []).is_err());
        assert!(conn.execute_batch("ATTACH 'other.db' AS other").is_err());
    }

    #[test]
    fn a_value_past_the_cap_is_refused() {
        let (_dir, path) = scratch("CREATE TABLE t (x)");
        let (conn, _) = open(&path, Access::ReadWrite, QUERY_BUDGET).unwrap();
        let e = conn.query_row("SELECT zeroblob(?1)", [MAX_VALUE_LEN + 1], |r| r.get::<_, Vec<u8>>(0)).unwrap_err();
        assert_eq!(e.sqlite_error_code(), Some(ErrorCode::TooBig), "{e}");
    }

    #[test]
    fn kinds_are_told_apart_whatever_the_case_of_the_name() {
        // A view that cannot even be compiled does not stop the others being told apart.
        let (_dir, path) = scratch(&format!(
            "{ENDLESS} CREATE VIRTUAL TABLE v USING fts5(body); CREATE TABLE gone (x); CREATE VIEW broken AS SELECT x FROM gone; DROP TABLE gone;"
        ));
        let (conn, _) = open(&path, Access::ReadOnly, QUERY_BUDGET).unwrap();
        assert_eq!(object_kind(&conn, "t").unwrap(), Some(ObjectKind::Table));
        assert_eq!(object_kind(&conn, "T").unwrap(), Some(ObjectKind::Table));
        assert_eq!(object_kind(&conn, "ENDLESS").unwrap(), Some(ObjectKind::View));
        assert_eq!(object_kind(&conn, "v").unwrap(), Some(ObjectKind::VirtualTable));
        assert_eq!(object_kind(&conn, "v_data").unwrap(), Some(ObjectKind::ShadowTable));
        assert_eq!(object_kind(&conn, "broken").unwrap(), Some(ObjectKind::View));
        assert_eq!(object_kind(&conn, "missing").unwrap(), None);
    }
}

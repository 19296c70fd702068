//! What the auditor may do to the server's data dir when it is given one: break the
//! backups storage and mend it, make backups slow to create, leave a marker a restore must
//! take away, and tell whether a refused request changed anything.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Names the auditor puts into the data dir (all removed at the end).
const ASIDE: &str = "audit_backups_aside";
const FILLER: &str = "audit_filler.bin";
pub const MARKER: &str = "audit_marker.txt";
/// A file the auditor puts beside `backups/` for the traversal probe.
pub const OUTSIDE: &str = "audit_outside.zip";

/// What [`DataDir::mend`] undid, and what it could not, in words.
#[derive(Debug, Default)]
pub struct Mended {
    pub undone: Vec<String>,
    pub failed: Vec<String>,
}

impl std::fmt::Display for Mended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.undone.is_empty(), self.failed.is_empty()) {
            (true, true) => write!(f, "the data dir held nothing of the audit's"),
            (false, true) => write!(f, "the data dir is mended: {}", self.undone.join(", ")),
            (_, false) => {
                write!(f, "the data dir could NOT be mended: {}", self.failed.join(", "))?;
                if !self.undone.is_empty() {
                    write!(f, " (undone: {})", self.undone.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

/// The server's data dir on this machine.
pub struct DataDir {
    pub root: PathBuf,
}

/// Files outside the backups storage, by path: size and a hash of the content. SQLite
/// files are left out: servers write to them on their own (logs, sessions).
pub type Snapshot = BTreeMap<String, (u64, u64)>;

impl DataDir {
    pub fn backups(&self) -> PathBuf {
        self.root.join("backups")
    }

    pub fn has_backup(&self, key: &str) -> bool {
        self.backups().join(key).is_file()
    }

    pub fn backup_bytes(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.backups().join(key)).ok()
    }

    /// Names in `backups/` (files only).
    pub fn backup_names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.backups()) else { return Vec::new() };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    /// Makes the backups storage impossible to open: the folder is moved aside and a regular
    /// file takes its place. [`DataDir::mend_storage`] undoes it.
    pub fn break_storage(&self) -> std::io::Result<()> {
        let backups = self.backups();
        if backups.is_dir() {
            std::fs::rename(&backups, self.root.join(ASIDE))?;
        }
        std::fs::write(&backups, b"the backups storage, broken on purpose by pb-backups audit")
    }

    pub fn mend_storage(&self) -> std::io::Result<()> {
        let backups = self.backups();
        if backups.is_file() {
            std::fs::remove_file(&backups)?;
        }
        let aside = self.root.join(ASIDE);
        if aside.is_dir() {
            std::fs::rename(aside, &backups)?;
        }
        Ok(())
    }

    /// Undoes whatever the auditor did to the data dir: the storage put back, its files
    /// removed. Each step only when needed, so it may run at any moment of an audit.
    pub fn mend(&self) -> Mended {
        let mut mended = Mended::default();
        let broken = self.backups().is_file() || self.root.join(ASIDE).exists();
        if broken {
            match self.mend_storage() {
                Ok(()) => mended.undone.push(format!("backups/ put back in place (it was moved to {ASIDE})")),
                Err(e) => mended.failed.push(format!("backups/ is still moved to {ASIDE} ({e})")),
            }
        }
        for name in [FILLER, MARKER, OUTSIDE] {
            match std::fs::remove_file(self.root.join(name)) {
                Ok(()) => mended.undone.push(format!("{name} removed")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => mended.failed.push(format!("{name} is still there ({e})")),
            }
        }
        mended
    }

    /// Writes `mib` MiB of random letters from a 16-letter alphabet: deflate has to work on
    /// them (they halve), so that a create takes long enough to be seen running.
    pub fn write_filler(&self, mib: usize) -> std::io::Result<()> {
        let mut file = std::fs::File::create(self.root.join(FILLER))?;
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for chunk in block.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                for (byte, random) in chunk.iter_mut().zip(state.to_le_bytes()) {
                    *byte = b'a' + (random & 15);
                }
            }
            file.write_all(&block)?;
        }
        file.sync_all()
    }

    pub fn remove_filler(&self) {
        let _ = std::fs::remove_file(self.root.join(FILLER));
    }

    pub fn write_marker(&self) -> std::io::Result<()> {
        std::fs::write(self.root.join(MARKER), b"written by pb-backups audit after its backup; a restore takes it away")
    }

    /// What signs a superuser's tokens of `kind` (`authToken` or `fileToken`), read from a
    /// data dir in PocketBase's layout: the collection id, the record id and the key (the
    /// record's `tokenKey` followed by the collection's secret). `None` when the data dir
    /// does not keep its accounts that way.
    pub fn superuser_signing(&self, email: &str, kind: &str) -> Option<(String, String, Vec<u8>)> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(self.root.join("data.db"), flags).ok()?;
        let (collection, secret): (String, String) = conn
            .query_row(
                "SELECT id, json_extract(options, ?1) FROM _collections WHERE name = '_superusers'",
                [format!("$.{kind}.secret")],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok()?;
        let (id, token_key): (String, String) = conn
            .query_row("SELECT id, tokenKey FROM _superusers WHERE email = ?1 COLLATE NOCASE", [email], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .ok()?;
        Some((collection, id, [token_key.into_bytes(), secret.into_bytes()].concat()))
    }

    pub fn has_marker(&self) -> bool {
        self.root.join(MARKER).exists()
    }

    pub fn remove_marker(&self) {
        let _ = std::fs::remove_file(self.root.join(MARKER));
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut out = Snapshot::new();
        walk(&self.root, &self.root, &mut out);
        out
    }
}

fn is_database(name: &str) -> bool {
    [".db", ".db-wal", ".db-shm", ".db-journal"].iter().any(|s| name.ends_with(s))
}

fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
        let name = entry.file_name().to_string_lossy().into_owned();
        // The storage and the servers' own temp and notification folders change by design.
        if dir == root && (name == "backups" || name.starts_with('.')) {
            continue;
        }
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            walk(root, &path, out);
        } else if kind.is_file() && !is_database(&name) {
            let bytes = std::fs::read(&path).unwrap_or_default();
            out.insert(rel, (bytes.len() as u64, fnv(&bytes)));
        }
    }
}

/// FNV-1a: enough to see that a file changed.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// What differs between two snapshots, in words.
pub fn changes(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (path, value) in before {
        match after.get(path) {
            None => out.push(format!("{path} removed")),
            Some(v) if v != value => out.push(format!("{path} changed")),
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push(format!("{path} appeared"));
    }
    out
}

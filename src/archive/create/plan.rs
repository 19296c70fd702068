//! What goes into a backup: the data dir's entries in a stable order, with the backups
//! storage, the temp folder, SQLite side files, links and special files left out.

use std::fs::{self, File, Metadata};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::io::{self, Read};
use std::time::SystemTime;

use crate::archive::{check_entry_name, ArchiveError, SQLITE_HEADER};

/// Suffixes of SQLite side files: their content is in the snapshots (or meaningless alone).
const SQLITE_SIDE_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Where an entry's content comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Dir,
    File,
    /// A top-level SQLite database, archived through a snapshot.
    Sqlite,
}

/// The entries of a backup, in archive order, and the data dir they are in.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) root: PathBuf,
    pub(super) entries: Vec<PlannedEntry>,
}

impl Plan {
    /// Where `entry` is on disk. Built when needed rather than kept: with many small files
    /// the full paths would be most of the plan's memory.
    pub(super) fn path(&self, entry: &PlannedEntry) -> PathBuf {
        self.root.join(&*entry.name)
    }
}

#[derive(Debug)]
pub(super) struct PlannedEntry {
    /// Name in the archive, also the path under the data dir: relative, '/'-separated, no
    /// trailing '/'.
    pub(super) name: Box<str>,
    pub(super) source: Source,
    pub(super) mode: u32,
    pub(super) modified: Option<SystemTime>,
    /// Size when planned (0 for a directory): the total that progress counts towards.
    pub(super) size: u64,
}

/// Lists the archive's entries in a stable order (sorted names, each directory before its
/// content). Memory grows with the number of files, not with their size.
pub(super) fn plan_entries(data_dir: &Path, exclude_top_level: &[&str]) -> Result<Plan, ArchiveError> {
    let mut entries = Vec::new();
    walk(data_dir, None, exclude_top_level, &mut entries)?;
    entries.shrink_to_fit();
    Ok(Plan { root: data_dir.to_path_buf(), entries })
}

fn walk(
    dir: &Path,
    prefix: Option<&str>,
    exclude_top_level: &[&str],
    entries: &mut Vec<PlannedEntry>,
) -> Result<(), ArchiveError> {
    let mut children = fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    children.sort_by_key(|child| child.file_name());
    for child in children {
        let path = child.path();
        let Some(file_name) = child.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(path = %path.display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        if prefix.is_none() && exclude_top_level.contains(&file_name.as_str()) {
            continue;
        }
        let name = match prefix {
            Some(prefix) => format!("{prefix}/{file_name}"),
            None => file_name.clone(),
        };
        // Restore refuses such names (not portable, too long or too deep), so archiving them
        // would make the backup unusable.
        if let Err(e) = check_entry_name(&name) {
            tracing::warn!(path = %path.display(), reason = %e, "skipping a file whose name a restore would refuse");
            continue;
        }
        // DirEntry::metadata does not follow symlinks.
        let metadata = match child.metadata() {
            Ok(metadata) => metadata,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err.into()),
        };
        let file_type = metadata.file_type();
        if file_type.is_symlink() {
            tracing::warn!(path = %path.display(), "skipping a symlink in the data dir");
            continue;
        }
        let source = if file_type.is_dir() {
            Source::Dir
        } else if file_type.is_file() {
            if SQLITE_SIDE_SUFFIXES.iter().any(|s| file_name.ends_with(s)) {
                continue;
            }
            if prefix.is_none() && file_name.ends_with(".db") && is_sqlite(&path)? {
                Source::Sqlite
            } else {
                Source::File
            }
        } else {
            tracing::warn!(path = %path.display(), "skipping a special file in the data dir");
            continue;
        };
        entries.push(planned(name.as_str().into(), source, &metadata));
        if source == Source::Dir {
            walk(&path, Some(&name), exclude_top_level, entries)?;
        }
    }
    Ok(())
}

fn planned(name: Box<str>, source: Source, metadata: &Metadata) -> PlannedEntry {
    PlannedEntry {
        name,
        source,
        mode: metadata.permissions().mode() & 0o777,
        modified: metadata.modified().ok(),
        size: if metadata.is_file() { metadata.len() } else { 0 },
    }
}

fn is_sqlite(path: &Path) -> Result<bool, ArchiveError> {
    let Some(file) = open_if_present(path)? else {
        return Ok(false);
    };
    let mut header = [0u8; 16];
    match file.take(16).read_exact(&mut header) {
        Ok(()) => Ok(&header == SQLITE_HEADER),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Opens a file for reading; `None` when it has been deleted meanwhile (the data dir is live).
pub(super) fn open_if_present(path: &Path) -> Result<Option<File>, ArchiveError> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

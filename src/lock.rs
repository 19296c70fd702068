//! One server per data dir: an exclusive `flock` on `<data dir>/.pb_backups.lock`, held
//! while a server runs or a command writes. The kernel drops it when the process dies, so a
//! SIGKILLed server never blocks the next start; the file itself stays and is harmless. It
//! holds the holder's pid, to name it in the refusal. Restores never move it and backups
//! leave it out.
//!
//! std's `File::try_lock` is `flock(2)` on Linux: what `flock(1)` and other tools see.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

pub use crate::layout::LOCK_FILE;

/// Held for as long as it lives.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("data dir {dir} is in use by another pb-backups process (pid {pid}): stop it first, or use another --dir")]
    Held { dir: PathBuf, pid: String },
    #[error("cannot lock data dir {dir}: {source}")]
    Io { dir: PathBuf, source: std::io::Error },
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (which must exist), or says who holds it. Never waits.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let io = |source| LockError::Io { dir: data_dir.to_path_buf(), source };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(data_dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = match pid.trim() {
                    "" => "unknown".to_string(),
                    p => p.to_string(),
                };
                return Err(LockError::Held { dir: data_dir.to_path_buf(), pid });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_pid_and_dropping_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}

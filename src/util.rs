//! Small filesystem helpers shared by the adapters.

use std::io;
use std::path::Path;

/// fsync a directory, so that renames and links inside it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// 16 random lowercase alphanumerics, for temp and staging names.
pub fn random_suffix() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 16).to_ascii_lowercase()
}

/// A path in the temp folder that is removed (file or whole folder) when dropped, unless
/// `keep` is called: failed or cancelled work never leaves files behind.
#[derive(Debug)]
pub struct TempPath {
    path: Option<std::path::PathBuf>,
}

impl TempPath {
    /// A fresh name `<dir>/<prefix>-<random><ext>`; nothing is created.
    pub fn new_in(dir: &Path, prefix: &str, ext: &str) -> TempPath {
        TempPath { path: Some(dir.join(format!("{prefix}-{}{ext}", random_suffix()))) }
    }

    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("TempPath used after keep()")
    }

    /// Disarms the guard: the path now belongs to someone else (published, handed over).
    pub fn keep(mut self) -> std::path::PathBuf {
        self.path.take().expect("TempPath kept twice")
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let result = match path.symlink_metadata() {
                Ok(md) if md.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(_) => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(path = %path.display(), error = %e, "could not remove temp path");
            }
        }
    }
}

/// Bytes available to this process on the filesystem holding `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

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

/// A file being written that is to be synced at the end: the kernel is asked to start
/// writing each few MiB to disk as soon as it is written, so the final `sync_all` waits for
/// the last few MiB rather than for the whole file (the disk works while the CPU compresses).
pub struct WritebackFile {
    file: std::fs::File,
    written: u64,
    /// Everything before this offset has been handed to writeback.
    started: u64,
}

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to disk, without
/// waiting. A failure is harmless (a later fsync still writes everything), so it is ignored.
pub fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // Our own call: neither rustix nor std offers sync_file_range.
    // SAFETY: a plain syscall on an open descriptor; it only schedules I/O.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// How much is written between two writeback requests.
const WRITEBACK_EVERY: u64 = 8 << 20;

impl WritebackFile {
    pub fn new(file: std::fs::File) -> Self {
        Self { file, written: 0, started: 0 }
    }

    /// Writes what is left to disk and returns the file.
    pub fn sync_all(self) -> io::Result<std::fs::File> {
        self.file.sync_all()?;
        Ok(self.file)
    }

    fn start_writeback(&mut self) {
        start_writeback(&self.file, self.started, self.written - self.started);
        self.started = self.written;
    }
}

impl io::Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_EVERY {
            self.start_writeback();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Writes of every size arrive whole and in order across many writeback requests.
    #[test]
    fn writeback_file_keeps_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut out = WritebackFile::new(std::fs::File::create(&path).unwrap());
        let data: Vec<u8> = (0..(3 * WRITEBACK_EVERY as usize + 12_345)).map(|i| (i * 7 % 251) as u8).collect();
        for piece in data.chunks(1_000_003) {
            out.write_all(piece).unwrap();
        }
        assert!(out.started + WRITEBACK_EVERY > data.len() as u64, "writeback was requested as it went");
        out.sync_all().unwrap();
        assert!(std::fs::read(&path).unwrap() == data);
    }
}

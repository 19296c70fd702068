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

/// A file being written that is synced at the end. Where the file system allows it, the
/// bytes go to disk straight from an aligned buffer (`O_DIRECT`): the kernel neither copies
/// them into the page cache nor writes them back later, which on a 2-core machine took a
/// third of a 16 GiB create's CPU, and a large output does not push its own input out of the
/// page cache. Elsewhere (tmpfs, some network file systems) the writes are buffered and the
/// kernel is asked to start writing each few MiB at once, so that the final `sync_all`
/// waits for the last few MiB rather than for the whole file.
pub struct OutputFile {
    file: std::fs::File,
    /// Aligned to DIRECT_ALIGN at `start`; `DIRECT_BUFFER` bytes from there are used.
    buffer: Vec<u8>,
    start: usize,
    filled: usize,
    direct: bool,
    written: u64,
    /// Buffered writes: everything before this offset has been handed to writeback.
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

/// How much is written between two writeback requests (buffered writes).
const WRITEBACK_EVERY: u64 = 8 << 20;
/// Direct writes need buffer, offset and length aligned to the device's logical block
/// (512 or 4096 bytes); 4096 serves both.
const DIRECT_ALIGN: usize = 4096;
const DIRECT_BUFFER: usize = 4 << 20;

impl OutputFile {
    /// Writes to `file` from its current offset, which must be 0 (a new file).
    pub fn new(file: std::fs::File) -> Self {
        let direct = rustix::fs::fcntl_getfl(&file)
            .and_then(|flags| rustix::fs::fcntl_setfl(&file, flags | rustix::fs::OFlags::DIRECT))
            .is_ok();
        let buffer = if direct { vec![0u8; DIRECT_BUFFER + DIRECT_ALIGN] } else { Vec::new() };
        let start = if direct { buffer.as_ptr().align_offset(DIRECT_ALIGN) } else { 0 };
        Self { file, buffer, start, filled: 0, direct, written: 0, started: 0 }
    }

    /// Writes what is left to disk and returns the file.
    pub fn sync_all(self) -> io::Result<std::fs::File> {
        let file = self.finish()?;
        file.sync_all()?;
        Ok(file)
    }

    /// Writes out what is buffered, without syncing (a `syncfs` to come covers it), and
    /// returns the file.
    pub fn finish(mut self) -> io::Result<std::fs::File> {
        if self.direct {
            // The aligned part directly, the tail through the page cache.
            let aligned = self.filled / DIRECT_ALIGN * DIRECT_ALIGN;
            let tail = self.filled - aligned;
            self.filled = aligned;
            self.write_buffer()?;
            if tail > 0 {
                self.leave_direct()?;
                let (from, to) = (self.start + aligned, self.start + aligned + tail);
                io::Write::write_all(&mut self.file, &self.buffer[from..to])?;
            }
        } else if self.filled > 0 {
            self.write_buffer()?;
        }
        Ok(self.file)
    }

    /// Files at least this large are worth an `OutputFile` (its buffer and two `fcntl`s).
    pub const WORTH_IT: u64 = DIRECT_BUFFER as u64;

    /// Writes the buffer's `filled` bytes (a multiple of DIRECT_ALIGN) and empties it.
    fn write_buffer(&mut self) -> io::Result<()> {
        let mut done = 0;
        while done < self.filled {
            let chunk = &self.buffer[self.start + done..self.start + self.filled];
            match io::Write::write(&mut self.file, chunk) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    done += n;
                    // A short direct write leaves the offset unaligned: go on buffered.
                    if self.direct && done % DIRECT_ALIGN != 0 {
                        self.leave_direct()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Accepted by fcntl but refused on write (alignment, file system): nothing
                // was written; buffered from here on.
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => self.leave_direct()?,
                Err(e) => return Err(e),
            }
        }
        self.filled = 0;
        Ok(())
    }

    fn leave_direct(&mut self) -> io::Result<()> {
        let flags = rustix::fs::fcntl_getfl(&self.file)?;
        rustix::fs::fcntl_setfl(&self.file, flags - rustix::fs::OFlags::DIRECT)?;
        self.direct = false;
        Ok(())
    }
}

impl io::Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.direct {
            if self.filled > 0 {
                // Left direct mode with bytes still buffered: they go first.
                self.write_buffer()?;
            }
            let n = self.file.write(buf)?;
            self.written += n as u64;
            if self.written - self.started >= WRITEBACK_EVERY {
                start_writeback(&self.file, self.started, self.written - self.started);
                self.started = self.written;
            }
            return Ok(n);
        }
        let n = buf.len().min(DIRECT_BUFFER - self.filled);
        let at = self.start + self.filled;
        self.buffer[at..at + n].copy_from_slice(&buf[..n]);
        self.filled += n;
        self.written += n as u64;
        if self.filled == DIRECT_BUFFER {
            self.write_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Direct writes go out by whole aligned blocks: the rest waits for sync_all.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Writes of every size arrive whole and in order, through direct writes where the
    /// file system allows them and an unaligned tail.
    #[test]
    fn output_file_keeps_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, DIRECT_ALIGN, DIRECT_BUFFER, 2 * DIRECT_BUFFER + 12_345, 3 * WRITEBACK_EVERY as usize + 7] {
            let path = dir.path().join(format!("f{len}"));
            let mut out = OutputFile::new(std::fs::File::create(&path).unwrap());
            let data = pattern(len);
            for piece in data.chunks(1_000_003) {
                out.write_all(piece).unwrap();
            }
            out.sync_all().unwrap();
            assert!(std::fs::read(&path).unwrap() == data, "{len} bytes");
        }
    }

    /// Without direct writes (tmpfs on older kernels, a refused write), the same bytes,
    /// with writeback requested as it goes; and leaving direct mode with bytes buffered
    /// writes them first.
    #[test]
    fn output_file_falls_back_to_buffered_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut out = OutputFile::new(std::fs::File::create(&path).unwrap());
        let data = pattern(3 * WRITEBACK_EVERY as usize + 12_345);
        out.write_all(&data[..1000]).unwrap();
        if out.direct {
            out.leave_direct().unwrap();
        }
        for piece in data[1000..].chunks(1_000_003) {
            out.write_all(piece).unwrap();
        }
        assert!(out.started + WRITEBACK_EVERY > data.len() as u64, "writeback was requested as it went");
        out.sync_all().unwrap();
        assert!(std::fs::read(&path).unwrap() == data);
    }
}

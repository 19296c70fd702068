//! Reads of the archive at an offset, shared by the extraction threads without a shared
//! file position.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::check::Named;
use crate::archive::format::{LOCAL_LEN, LOCAL_SIG};
use crate::archive::ArchiveError;

/// A read buffer over the archive at some offset, filled with `pread` so that threads share
/// one file without sharing a position; consecutive small entries come from one read.
pub(super) struct Window {
    buf: Vec<u8>,
    start: u64,
    len: usize,
}

impl Window {
    pub(super) fn new(size: usize) -> Self {
        Self {
            buf: vec![0u8; size],
            start: 0,
            len: 0,
        }
    }

    /// The archive's bytes from `offset` on, at least `min` of them unless the file ends
    /// first (at most what the buffer holds).
    fn at(&mut self, archive: &File, offset: u64, min: usize) -> io::Result<&[u8]> {
        let buffered = offset >= self.start && offset.saturating_add(min as u64) <= self.start + self.len as u64;
        if !buffered {
            self.start = offset;
            self.len = 0;
            while self.len < min.max(1) {
                match archive.read_at(&mut self.buf[self.len..], offset + self.len as u64) {
                    Ok(0) => break,
                    Ok(n) => self.len += n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(&self.buf[(offset - self.start) as usize..self.len])
    }

    /// Up to a buffer of the archive's bytes in `pos..end`; empty at the end of either.
    pub(super) fn read(&mut self, archive: &File, pos: u64, end: u64) -> io::Result<&[u8]> {
        if pos >= end {
            return Ok(&[]);
        }
        let bytes = self.at(archive, pos, 1)?;
        Ok(&bytes[..bytes.len().min((end - pos) as usize)])
    }

    /// Where `entry`'s data lies, from its local header (whose name and extra field lengths
    /// may differ from the central directory's).
    pub(super) fn data_range(&mut self, archive: &File, named: Named) -> Result<(u64, u64), ArchiveError> {
        let (entry, name) = named;
        let header = self.at(archive, entry.header_start, LOCAL_LEN)?;
        if header.len() < LOCAL_LEN || &header[..4] != LOCAL_SIG {
            return Err(ArchiveError::NotZip(format!("no local header for {name:?}")));
        }
        let name_len = u16::from_le_bytes([header[26], header[27]]);
        let extra_len = u16::from_le_bytes([header[28], header[29]]);
        let start = entry.header_start
            + LOCAL_LEN as u64
            + u64::from(name_len)
            + u64::from(extra_len);
        let end = start.checked_add(entry.compressed_size).ok_or_else(|| {
            ArchiveError::NotZip(format!("data of {name:?} ends past 2^64"))
        })?;
        Ok((start, end))
    }
}

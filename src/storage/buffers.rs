//! Large buffers reused across the chunks of one transfer (a download's reads, an S3
//! upload's parts) and lent to the HTTP stack as `Bytes` without a copy.
//!
//! A fresh multi-MiB `Vec` costs a page fault and a zeroed page per 4 KiB on first touch; a
//! transfer that reuses a handful of them pays that once.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Free buffers of one transfer. Clones share the pool.
#[derive(Clone, Default)]
pub(crate) struct BufferPool(Arc<Mutex<Vec<Vec<u8>>>>);

impl BufferPool {
    /// A free buffer as it was last used (length and contents), or an empty one of
    /// `capacity`: callers size it as they need (`clear`, `resize`), which touches no page
    /// twice for a buffer of the same size.
    pub(crate) fn take(&self, capacity: usize) -> Vec<u8> {
        self.0.lock().unwrap().pop().unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    /// `buf[..len]` as `Bytes`; the buffer comes back here once the last clone is dropped.
    pub(crate) fn lend(&self, buf: Vec<u8>, len: usize) -> Bytes {
        assert!(len <= buf.len(), "lending {len} bytes of a {}-byte buffer", buf.len());
        Bytes::from_owner(Lent { buf, len, pool: self.clone() })
    }

    /// Buffers waiting to be reused.
    #[cfg(test)]
    pub(crate) fn free(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// A filled buffer lent out, back in its pool when dropped.
struct Lent {
    buf: Vec<u8>,
    len: usize,
    pool: BufferPool,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Ok(mut pool) = self.pool.0.lock() {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lent_buffer_comes_back_when_its_last_clone_goes() {
        let pool = BufferPool::default();
        let mut buf = pool.take(1 << 20);
        buf.extend_from_slice(b"hello world");
        let at = buf.as_ptr();
        let bytes = pool.lend(buf, 5);
        assert_eq!(&bytes[..], b"hello");
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(pool.free(), 0, "a clone still holds it");
        drop(clone);
        assert_eq!(pool.free(), 1);
        let again = pool.take(1 << 20);
        assert_eq!(again.as_ptr(), at, "the same allocation, pages already touched");
        assert_eq!(&again[..], b"hello world", "as it was last used");
        assert!(pool.take(1 << 20).is_empty(), "a new buffer when none is free");
    }
}

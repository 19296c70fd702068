//! `Range` header parsing for downloads: any header, any file size.
//!
//! Input: 8 bytes of file size (little endian; short inputs are padded with zeros), then
//! the header value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pb_backups::http::download::parse_range;

fuzz_target!(|data: &[u8]| {
    let (size_bytes, header) = data.split_at(data.len().min(8));
    let mut size = [0u8; 8];
    size[..size_bytes.len()].copy_from_slice(size_bytes);
    // Small sizes are where the edge cases are; keep most of them small.
    let size = match size[7] {
        0 => u64::from_le_bytes(size) % 4096,
        _ => u64::from_le_bytes(size),
    };
    let Ok(header) = std::str::from_utf8(header) else { return };
    if let Some(range) = parse_range(header, size) {
        assert!(range.start < range.end && range.end <= size, "{header:?} on {size}: {range:?}");
    }
});

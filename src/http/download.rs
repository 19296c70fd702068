//! Pieces of the download response: `Range` parsing and `Content-Disposition`.
//!
//! Only single byte ranges are honoured; anything else (several ranges, a range past the
//! end, a malformed header) is ignored and the whole file is sent with 200, which RFC 9110
//! allows and every client handles.

use std::ops::Range;

/// The byte range a `Range` header asks for within a file of `size` bytes, if it is one
/// we serve. The end is clamped to the file, as RFC 9110 wants.
pub fn parse_range(header: &str, size: u64) -> Option<Range<u64>> {
    let spec = header.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        let suffix: u64 = last.parse().ok()?;
        if suffix == 0 {
            return None;
        }
        size.saturating_sub(suffix)..size
    } else {
        let start: u64 = first.parse().ok()?;
        let end = if last.is_empty() { size - 1 } else { last.parse::<u64>().ok()?.min(size - 1) };
        if start > end || start >= size {
            return None;
        }
        start..end + 1
    };
    Some(range)
}

/// `attachment; filename="KEY"`, with an RFC 6266 `filename*` for keys that are not plain
/// ASCII (upload keys may hold any printable character).
pub fn content_disposition(key: &str) -> String {
    let plain = key.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ');
    if plain {
        return format!("attachment; filename=\"{key}\"");
    }
    let fallback: String = key
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' { c } else { '_' })
        .collect();
    let mut encoded = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100), Some(90..100));
        assert_eq!(parse_range("bytes=-10", 100), Some(90..100));
        assert_eq!(parse_range("bytes=-1000", 100), Some(0..100));
        assert_eq!(parse_range("bytes=50-1000", 100), Some(50..100), "end clamped");
        assert_eq!(parse_range("bytes=100-", 100), None, "past the end: whole file");
        assert_eq!(parse_range("bytes=5-2", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=x-1", 100), None);
        assert_eq!(parse_range("bytes=0-0", 0), None);
    }

    #[test]
    fn disposition() {
        assert_eq!(content_disposition("a_b.zip"), "attachment; filename=\"a_b.zip\"");
        assert_eq!(
            content_disposition("备份 \"x\".zip"),
            "attachment; filename=\"____x_.zip\"; filename*=UTF-8''%E5%A4%87%E4%BB%BD%20%22x%22.zip"
        );
    }
}

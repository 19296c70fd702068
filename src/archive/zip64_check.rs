//! For tests: an archive's records read straight from its bytes (own offsets and numbers
//! from PKWARE's APPNOTE, no code shared with the writer or the reader), and the check that
//! every zip64 form is there exactly where the thresholds the archive was written with say
//! it must be: the zip64 end record and its locator, the 0xFFFFFFFF sentinels, the 0x0001
//! extra field with the true values, 64-bit data descriptors. A writer that ignored lowered
//! thresholds would still read back; it fails here.

use super::zip_writer::Zip64Limits;

const SENTINEL32: u32 = 0xFFFF_FFFF;
const SENTINEL16: u16 = 0xFFFF;
const ZIP64_EXTRA: u16 = 0x0001;

/// How many of each zip64 form the archive holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Zip64Seen {
    /// Local headers with sentinels and the 0x0001 extra field.
    pub local_headers: usize,
    /// Data descriptors with 64-bit sizes.
    pub descriptors: usize,
    /// Central records whose sizes are in the 0x0001 extra field.
    pub central_sizes: usize,
    /// Central records whose local header offset is in the 0x0001 extra field.
    pub central_offsets: usize,
    /// The zip64 end of central directory record and its locator.
    pub end_record: bool,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The extra fields of a header: (id, data).
fn extra_fields(extra: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < extra.len() {
        assert!(at + 4 <= extra.len(), "an extra field's header runs past the extra area");
        let (id, len) = (u16_at(extra, at), usize::from(u16_at(extra, at + 2)));
        assert!(at + 4 + len <= extra.len(), "extra field {id:#06x} runs past the extra area");
        out.push((id, &extra[at + 4..at + 4 + len]));
        at += 4 + len;
    }
    out
}

fn zip64_extra<'a>(extra: &'a [u8], what: &str) -> Option<&'a [u8]> {
    let found: Vec<&[u8]> = extra_fields(extra).into_iter().filter(|(id, _)| *id == ZIP64_EXTRA).map(|(_, d)| d).collect();
    assert!(found.len() <= 1, "{what}: more than one zip64 extra field");
    found.first().copied()
}

/// Checks every record of `bytes` against `limits`; panics with what is wrong.
pub(super) fn check_zip64_forms(bytes: &[u8], limits: Zip64Limits) -> Zip64Seen {
    let mut seen = Zip64Seen::default();
    let field = limits.field;

    // The classic end record: last, no comment.
    assert!(bytes.len() >= 22, "too short for an end record");
    let end = bytes.len() - 22;
    assert_eq!(u32_at(bytes, end), 0x0605_4b50, "end of central directory signature");
    assert_eq!(u16_at(bytes, end + 20), 0, "no comment");
    let (count16, size32, offset32) = (u16_at(bytes, end + 10), u32_at(bytes, end + 12), u32_at(bytes, end + 16));
    assert_eq!(u16_at(bytes, end + 8), count16, "entries on this disk = entries");

    // The zip64 end record, if any, and its locator just before the end record.
    let locator = end.checked_sub(20).filter(|&at| u32_at(bytes, at) == 0x0706_4b50);
    let (count, cd_size, cd_offset) = match locator {
        Some(at) => {
            seen.end_record = true;
            let record = usize::try_from(u64_at(bytes, at + 8)).unwrap();
            assert_eq!(u32_at(bytes, at + 16), 1, "locator: total disks");
            assert_eq!(record + 56, at, "the zip64 end record ends where its locator starts");
            assert_eq!(u32_at(bytes, record), 0x0606_4b50, "zip64 end of central directory signature");
            assert_eq!(u64_at(bytes, record + 4), 44, "zip64 end record: size of the rest");
            assert!(u16_at(bytes, record + 14) >= 45, "zip64 end record: version needed");
            let count = u64_at(bytes, record + 32);
            assert_eq!(u64_at(bytes, record + 24), count, "zip64 end record: entries on this disk = entries");
            (count, u64_at(bytes, record + 40), u64_at(bytes, record + 48))
        }
        None => (u64::from(count16), u64::from(size32), u64::from(offset32)),
    };
    let needs_end64 = count >= limits.entries || cd_size >= field || cd_offset >= field;
    assert_eq!(seen.end_record, needs_end64, "zip64 end record: {count} entries, directory of {cd_size} bytes at {cd_offset}, thresholds {limits:?}");
    if seen.end_record {
        assert_eq!(count16, if count >= limits.entries { SENTINEL16 } else { count as u16 }, "end record: entry count");
        assert_eq!(size32, if cd_size >= field { SENTINEL32 } else { cd_size as u32 }, "end record: directory size");
        assert_eq!(offset32, if cd_offset >= field { SENTINEL32 } else { cd_offset as u32 }, "end record: directory offset");
    }
    let directory_end = locator.map_or(end, |at| at - 56);
    assert_eq!(cd_offset + cd_size, directory_end as u64, "the central directory ends where the end records start");

    // Each central record, and the local header, data and descriptor it points to.
    let mut at = usize::try_from(cd_offset).unwrap();
    let mut spans = Vec::new();
    for i in 0..count {
        assert_eq!(u32_at(bytes, at), 0x0201_4b50, "central record {i}: signature");
        let (needed, flags, crc) = (u16_at(bytes, at + 6), u16_at(bytes, at + 8), u32_at(bytes, at + 16));
        let (csize32, usize32, offset32) = (u32_at(bytes, at + 20), u32_at(bytes, at + 24), u32_at(bytes, at + 42));
        let (name_len, extra_len, comment_len) =
            (usize::from(u16_at(bytes, at + 28)), usize::from(u16_at(bytes, at + 30)), usize::from(u16_at(bytes, at + 32)));
        let name = String::from_utf8(bytes[at + 46..at + 46 + name_len].to_vec()).unwrap();
        let extra = &bytes[at + 46 + name_len..at + 46 + name_len + extra_len];
        let what = format!("central record of {name:?}");
        // The true values: the 0x0001 field holds, in this order, those whose classic field is the sentinel.
        let sentinels = [usize32, csize32, offset32].iter().filter(|&&v| v == SENTINEL32).count();
        let z = zip64_extra(extra, &what);
        assert_eq!(z.map_or(0, <[u8]>::len), 8 * sentinels, "{what}: the zip64 extra field holds one value per sentinel");
        let mut values = z.unwrap_or_default().chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap()));
        let mut value = |v32: u32| if v32 == SENTINEL32 { values.next().unwrap() } else { u64::from(v32) };
        let (usize, csize, offset) = (value(usize32), value(csize32), value(offset32));

        let is_dir = name.ends_with('/');
        let large = !is_dir && (usize >= limits.large_file || csize >= field || usize >= field);
        assert_eq!((usize32 == SENTINEL32, csize32 == SENTINEL32), (large, large), "{what}: sizes {usize}/{csize} in the zip64 field, thresholds {limits:?}");
        assert_eq!(offset32 == SENTINEL32, offset >= field, "{what}: offset {offset}, thresholds {limits:?}");
        if z.is_some() {
            assert!(needed >= 45, "{what}: version needed {needed} with zip64 fields");
        }
        seen.central_sizes += usize::from(large);
        seen.central_offsets += usize::from(offset >= field);

        // The local header.
        let local = usize::try_from(offset).unwrap();
        let what = format!("local header of {name:?}");
        assert_eq!(u32_at(bytes, local), 0x0403_4b50, "{what}: signature");
        assert_eq!(u16_at(bytes, local + 6), flags, "{what}: flags as in the central record");
        let (l_name_len, l_extra_len) = (usize::from(u16_at(bytes, local + 26)), usize::from(u16_at(bytes, local + 28)));
        assert_eq!(&bytes[local + 30..local + 30 + l_name_len], name.as_bytes(), "{what}: name");
        let l_extra = &bytes[local + 30 + l_name_len..local + 30 + l_name_len + l_extra_len];
        let descriptor = flags & (1 << 3) != 0;
        let (l_crc, l_csize32, l_usize32) = (u32_at(bytes, local + 14), u32_at(bytes, local + 18), u32_at(bytes, local + 22));
        // With a data descriptor, the header was written before the sizes were known: zeros.
        let known = |v: u64| if descriptor { 0 } else { v };
        assert_eq!(l_crc, if descriptor { 0 } else { crc }, "{what}: CRC");
        match zip64_extra(l_extra, &what) {
            Some(z) => {
                assert!(large, "{what}: a zip64 extra field on an entry below every threshold ({usize}/{csize}, {limits:?})");
                assert_eq!((l_usize32, l_csize32), (SENTINEL32, SENTINEL32), "{what}: sentinels");
                assert_eq!(z.len(), 16, "{what}: the zip64 extra field holds both sizes");
                assert_eq!((u64_at(z, 0), u64_at(z, 8)), (known(usize), known(csize)), "{what}: sizes in the zip64 field");
                assert!(u16_at(bytes, local + 4) >= 45, "{what}: version needed");
                seen.local_headers += 1;
            }
            None => {
                assert!(!large, "{what}: no zip64 extra field for sizes {usize}/{csize} (thresholds {limits:?})");
                assert_eq!((u64::from(l_usize32), u64::from(l_csize32)), (known(usize), known(csize)), "{what}: sizes");
            }
        }
        let data = local + 30 + l_name_len + l_extra_len;
        let mut span_end = data + usize::try_from(csize).unwrap();
        if descriptor {
            let d = span_end;
            let what = format!("data descriptor of {name:?}");
            assert_eq!(u32_at(bytes, d), 0x0807_4b50, "{what}: signature");
            assert_eq!(u32_at(bytes, d + 4), crc, "{what}: CRC");
            if large {
                assert_eq!((u64_at(bytes, d + 8), u64_at(bytes, d + 16)), (csize, usize), "{what}: 64-bit sizes");
                span_end = d + 24;
                seen.descriptors += 1;
            } else {
                assert_eq!((u64::from(u32_at(bytes, d + 8)), u64::from(u32_at(bytes, d + 12))), (csize, usize), "{what}: 32-bit sizes");
                span_end = d + 16;
            }
        }
        spans.push((local, span_end));
        at += 46 + name_len + extra_len + comment_len;
    }
    assert_eq!(at as u64, cd_offset + cd_size, "the central records fill the directory");
    // The entries tile the archive up to the central directory, so every size read above is right.
    spans.sort_unstable();
    let mut next = 0;
    for (start, end) in spans {
        assert_eq!(start, next, "an entry starts where the previous one ends");
        next = end;
    }
    assert_eq!(next as u64, cd_offset, "the entries end where the central directory starts");
    seen
}

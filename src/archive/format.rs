//! The zip format's numbers (PKWARE's APPNOTE), shared by the writer and the reader so
//! that both speak of the same records.

pub(super) const LOCAL_SIG: &[u8; 4] = b"PK\x03\x04";
pub(super) const DATA_DESCRIPTOR_SIG: &[u8; 4] = b"PK\x07\x08";
pub(super) const CENTRAL_SIG: &[u8; 4] = b"PK\x01\x02";
pub(super) const ZIP64_END_SIG: &[u8; 4] = b"PK\x06\x06";
pub(super) const ZIP64_LOCATOR_SIG: &[u8; 4] = b"PK\x06\x07";
pub(super) const END_SIG: &[u8; 4] = b"PK\x05\x06";
/// A local header without its name and extra field.
pub(super) const LOCAL_LEN: usize = 30;
/// A central record without its name, extra field and comment.
pub(super) const CENTRAL_LEN: usize = 46;
pub(super) const END_LEN: usize = 22;
pub(super) const ZIP64_LOCATOR_LEN: usize = 20;
pub(super) const ZIP64_END_LEN: usize = 56;
/// A 32-bit size or offset with this value is in the zip64 extra field instead.
pub(super) const IN_ZIP64: u32 = 0xFFFF_FFFF;
/// The extra field holding the 64-bit sizes and offset.
pub(super) const ZIP64_EXTRA_ID: u16 = 0x0001;
/// General purpose flags.
pub(super) const FLAG_ENCRYPTED: u16 = 1;
pub(super) const FLAG_DATA_DESCRIPTOR: u16 = 1 << 3;
pub(super) const FLAG_UTF8: u16 = 1 << 11;
pub(super) const METHOD_STORED: u16 = 0;
pub(super) const METHOD_DEFLATED: u16 = 8;
/// Upper byte of "version made by": the external attributes' upper half is a Unix mode.
pub(super) const SYSTEM_UNIX: u8 = 3;
/// File types in a Unix mode.
pub(super) const S_IFMT: u32 = 0o170_000;
pub(super) const S_IFREG: u32 = 0o100_000;
pub(super) const S_IFDIR: u32 = 0o040_000;

//! The pure core of the server: backup names and keys, the exclusivity coordinator and the
//! `fields` projection of JSON responses. Nothing here does I/O.

pub mod coordinator;
pub mod fields;
pub mod names;

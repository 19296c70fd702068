//! The pure core of the server: backup names and keys and the exclusivity coordinator.
//! Nothing here does I/O.

pub mod coordinator;
pub mod names;

//! pb-backups: the PocketBase Backups API, implemented as its specification documents it.
//!
//! A map of the crate, from the bottom up (arrows point down only):
//!
//! - [`layout`]: the data dir's names (`data.db`, `backups/`, `.pb_temp/`, the journal).
//! - [`model`]: the pure core: backup names and keys, the exclusivity coordinator. No I/O.
//! - [`i18n`]: every client-facing text, in Chinese (the spec's) and English.
//! - [`storage`]: where finished backups live, behind one trait (local folder by default).
//! - [`archive`]: zip creation from the data dir and safe validation/extraction.
//! - [`accounts`] and [`auth`]: accounts in `data.db`, password hashes, JWT tokens.
//! - [`settings`]: the settings row PocketBase keeps in `data.db`; [`schedule`]: scheduled
//!   backups and their pruning.
//! - [`verify`]: the checks a restore makes before its 204, shared with `backups verify`.
//! - [`restore`]: the journaled swap of restored data, and crash recovery at start.
//! - [`listener`]: the listening socket that survives a restart; [`lock`]: one server per data dir.
//! - [`service`]: the only owner of state; one method per API operation.
//! - [`http`]: poem-openapi operations, error shape, languages, Swagger UI, CORS as
//!   PocketBase answers it, and response shaping (`fields`); [`metrics`]: Prometheus counts
//!   of operations, sizes and scheduled backups.
//! - [`server`]: serve, restart after a restore; [`cli`]: the command line; [`offline`]: its
//!   backup tools that work on the storage directly, with [`progress`] shown on the way.
//!
//! Not here: the spec's documented responses and the reference model of exclusivity live
//! in the separate `pb-backups-spec` crate (`spec/`), so tests hold this crate to an oracle
//! that shares none of its code.

pub mod accounts;
pub mod archive;
pub mod auth;
pub mod cli;
pub mod http;
pub mod i18n;
pub mod layout;
pub mod listener;
pub mod lock;
pub mod metrics;
pub mod model;
pub mod offline;
pub mod progress;
pub mod restore;
pub mod schedule;
pub mod server;
pub mod service;
pub mod settings;
pub mod storage;
pub mod util;
pub mod verify;

//! pb-backups: the PocketBase Backups API, implemented as its specification documents it.
//!
//! A map of the crate, from the bottom up: a module uses only those on its own line or
//! below it, never in a circle (`tests/house.rs` checks both).
//!
//! - [`layout`]: the data dir's names (`data.db`, `backups/`, `.pb_temp/`, the journal);
//!   [`util`]: small filesystem helpers (temp paths, directory syncs, free space).
//! - [`sqlite`]: the one way a `data.db` is queried: every query bounded in time, views and
//!   triggers off, read-only where we only read (below `accounts` and `settings` alike).
//! - [`model`]: the pure core: backup names and keys, the exclusivity coordinator. No I/O.
//! - [`i18n`]: every client-facing text, in Chinese (the spec's) and English.
//! - [`progress`]: progress of long creates and restores: bytes done, rate, time left.
//! - [`listener`]: the listening socket that survives a restart; [`stop`]: stop signals that
//!   survive it too; [`lock`]: one server per data dir.
//! - [`metrics`]: Prometheus counts of operations, sizes and scheduled backups; it is told,
//!   it never asks.
//! - [`storage`]: where finished backups live, behind one trait (local folder by default).
//! - [`archive`]: zip creation from the data dir and safe validation/extraction.
//! - [`mail`]: the one way out for e-mail (SMTP or the local sendmail) and its templates.
//! - [`accounts`] and [`auth`]: accounts in `data.db`, password hashes, JWT tokens; the
//!   access rules PocketBase keeps there (`authRule` in PocketBase's filter syntax,
//!   [`accounts::rule`]), second factors and login origins in its tables ([`accounts::mfa`]).
//! - [`settings`]: the settings row PocketBase keeps in `data.db` (the backups schedule and
//!   its cron, `backups.s3` and `s3`, `superuserIPs`, `trustedProxy`, mail).
//! - [`backends`]: which storage an operation uses (the flags' bucket, or as `backups.s3`
//!   says), its S3 clients, and the settings' S3 test.
//! - [`verify`]: the checks a restore makes before its 204, shared with `backups verify`, and
//!   the fetch before them (a backup that cannot fit is refused before its download).
//! - [`restore`]: the journaled swap of restored data, and crash recovery at start;
//!   [`datadir`]: opening a data dir (that recovery, then the accounts) for the server and
//!   the offline commands alike.
//! - [`service`]: the only owner of state; one method per API operation; [`logins`]: its
//!   login steps (password, one-time password, the rules, MFA, alerts on new origins).
//! - [`schedule`]: scheduled backups and their pruning, run through the service.
//! - [`offline`]: the command line's backup tools that work on a stopped server's data dir.
//! - [`http`]: poem-openapi operations, error shape, languages, Swagger UI, CORS as
//!   PocketBase answers it, the console at `/_/`, response shaping (`fields`), the client's
//!   address behind proxies (`client`), and `/metrics`.
//! - [`server`]: serve, restart after a restore.
//! - [`cli`]: the command line.
//!
//! Not here: the spec's documented responses and the reference model of exclusivity live
//! in the separate `pb-backups-spec` crate (`spec/`), so tests hold this crate to an oracle
//! that shares none of its code.

pub mod accounts;
pub mod archive;
pub mod auth;
pub mod backends;
pub mod cli;
pub mod datadir;
pub mod http;
pub mod i18n;
pub mod layout;
pub mod listener;
pub mod lock;
pub mod logins;
pub mod mail;
pub mod metrics;
pub mod model;
pub mod offline;
pub mod progress;
pub mod restore;
pub mod schedule;
pub mod server;
pub mod service;
pub mod settings;
pub mod sqlite;
pub mod stop;
pub mod storage;
pub mod util;
pub mod verify;

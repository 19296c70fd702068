//! What the service's operations may answer: typed errors, mapped to documented responses
//! once, at the HTTP edge.

use crate::accounts::AccountsError;
use crate::archive::ArchiveError;
use crate::auth::AuthError;
use crate::model::coordinator::Busy;
use crate::model::names::NameError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("another backup or restore is running")]
    Busy,
    #[error("no such backup")]
    NotFound,
    #[error("invalid name: {0:?}")]
    InvalidName(NameError),
    #[error("a backup with that name exists")]
    NameExists,
    #[error("no file was sent")]
    FileRequired,
    #[error("not a zip archive: {0}")]
    NotZip(#[source] ArchiveError),
    /// An uploaded archive that is a zip, but one we refuse.
    #[error("unsafe or oversized archive: {source}")]
    BadArchive {
        problem: ArchiveProblem,
        #[source]
        source: ArchiveError,
    },
    #[error("archive cannot be restored: {source}")]
    Unrestorable {
        problem: ArchiveProblem,
        #[source]
        source: ArchiveError,
    },
    /// A create refused because its archive would be past what a restore accepts.
    #[error("backup not made, a restore would refuse it: {source}")]
    WouldNotRestore {
        problem: ArchiveProblem,
        #[source]
        source: ArchiveError,
    },
    /// The archive is sound but its `data.db` could not serve as accounts: nobody could log in.
    #[error("archive cannot be restored: {0}")]
    NoUsableAccounts(#[source] AccountsError),
    #[error("backups storage: {0}")]
    Storage(#[source] StorageError),
    #[error("{0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why an archive was refused, in the terms a client is told (the detail goes to the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveProblem {
    NoDataDb,
    DataDbNotSqlite,
    /// Too big, or a suspicious compression ratio.
    TooLarge,
    /// More entries than the cap (`--max-archive-entries`).
    TooManyEntries { entries: u64, max: u64 },
    /// Unsafe paths, links or special files, duplicate or overlapping entries, names too
    /// long or too deep.
    Unsafe,
    /// Anything else: not decodable, sizes or checksums that do not match.
    Corrupt,
}

impl ArchiveProblem {
    pub(super) fn of(e: &ArchiveError) -> ArchiveProblem {
        use ArchiveError as A;
        match e {
            A::MissingDataDb => ArchiveProblem::NoDataDb,
            A::DataDbNotSqlite => ArchiveProblem::DataDbNotSqlite,
            A::TooLarge | A::SuspiciousRatio { .. } => ArchiveProblem::TooLarge,
            A::TooManyEntries { entries, max } => ArchiveProblem::TooManyEntries { entries: *entries, max: *max },
            A::UnsafePath { .. }
            | A::SpecialEntry { .. }
            | A::DuplicateEntry { .. }
            | A::NameTooLong { .. }
            | A::Overlapping { .. } => ArchiveProblem::Unsafe,
            _ => ArchiveProblem::Corrupt,
        }
    }
}

impl From<Busy> for BackupError {
    fn from(_: Busy) -> Self {
        BackupError::Busy
    }
}

impl From<StorageError> for BackupError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => BackupError::NotFound,
            StorageError::AlreadyExists => BackupError::NameExists,
            StorageError::Busy => BackupError::Busy,
            e => BackupError::Storage(e),
        }
    }
}

impl From<std::io::Error> for BackupError {
    fn from(e: std::io::Error) -> Self {
        BackupError::Failed(Box::new(e))
    }
}

impl From<tokio::task::JoinError> for BackupError {
    fn from(e: tokio::task::JoinError) -> Self {
        BackupError::Failed(Box::new(e))
    }
}

/// Why a token could not be checked or issued (logins have their own, `logins::LoginError`).
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    #[error("worker thread: {0}")]
    Join(#[from] tokio::task::JoinError),
}

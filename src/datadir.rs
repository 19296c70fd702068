//! Opening a data dir, for the server and the offline commands alike: create it when
//! missing, finish or undo a restore an earlier run left, then open its accounts.
//!
//! It sits beneath both `server` and `offline`, so neither reaches into the other; the
//! lock (one server per data dir) is taken by each before this, with [`crate::lock`].

use std::path::{Path, PathBuf};

use crate::accounts::{Accounts, AccountsError, Collection};
use crate::restore::{self, Recovery, RestoreError};

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data dir {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("unfinished restore could not be recovered: {0}")]
    Recovery(#[from] RestoreError),
    #[error("accounts database: {0}")]
    Accounts(#[from] AccountsError),
    #[error("restored data has no superuser")]
    NoSuperuser,
}

/// Finishes or undoes a restore left by a previous run, then opens the accounts. A restore
/// is committed only if its data opens and holds a superuser; otherwise the old data
/// comes back.
pub fn open(data_dir: &Path) -> Result<Accounts, DataDirError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|source| DataDirError::Create { path: data_dir.to_path_buf(), source })?;
    let dir = restore::DataDir::new(data_dir);
    match restore::recover_at_start(&dir)? {
        Recovery::None => {}
        Recovery::RolledBack => tracing::warn!("an interrupted restore was rolled back; data unchanged"),
        Recovery::PendingCommit => {
            let opened = Accounts::open(data_dir).map_err(DataDirError::from).and_then(|a| {
                match a.count(Collection::Superusers)? {
                    0 => Err(DataDirError::NoSuperuser),
                    _ => Ok(a),
                }
            });
            match opened {
                Ok(accounts) => {
                    restore::commit(&dir)?;
                    tracing::info!("restore complete: serving the restored data");
                    return Ok(accounts);
                }
                Err(e) => {
                    tracing::error!(error = %e, "restored data unusable; putting the old data back");
                    restore::rollback(&dir)?;
                }
            }
        }
    }
    Ok(Accounts::open(data_dir)?)
}

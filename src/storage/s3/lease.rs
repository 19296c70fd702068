//! Leases: one object per piece of work on a key, so that a delete on one server does not
//! remove a backup another server is reading for a restore (see
//! [`super`] for how they are written, renewed and expired).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{unavailable, S3Storage};
use crate::model::names::BackupKey;
use crate::storage::{StorageError, StorageResult};

pub(super) const LEASES: &str = ".leases";

/// Listings give `last_modified` in whole seconds (AWS): a lease may look up to that much older.
const LISTING_PRECISION: Duration = Duration::from_secs(1);

/// What a lease is for. A delete conflicts with any other live lease on its key; any other
/// activity conflicts with a live delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    Create,
    Restore,
    Delete,
}

impl Activity {
    fn as_str(self) -> &'static str {
        match self {
            Activity::Create => "create",
            Activity::Restore => "restore",
            Activity::Delete => "delete",
        }
    }

    fn parse(s: &str) -> Option<Activity> {
        [Activity::Create, Activity::Restore, Activity::Delete].into_iter().find(|a| a.as_str() == s)
    }

    fn conflicts_with(self, other: Activity) -> bool {
        (self == Activity::Delete) != (other == Activity::Delete)
    }
}

impl S3Storage {
    /// Takes a lease on `key` for `activity`, or `Busy` when a conflicting one is live.
    /// The lease is renewed until released (or dropped).
    pub async fn hold(&self, key: &BackupKey, activity: Activity) -> StorageResult<Lease> {
        let id = format!("{}.{}{}", activity.as_str(), self.holder, crate::util::random_suffix());
        let path = Path::parse(format!("{}/{id}", self.leases_of(key))).expect("valid lease path");
        let put = self
            .store
            .put_opts(&path, PutPayload::from_static(b"lease"), PutOptions::from(PutMode::Create))
            .await
            .map_err(unavailable)?;
        let lease = Lease::start(self.store.clone(), path.clone(), put.into(), self.ttl);
        match self.conflicting(key, activity, &path).await {
            Ok(false) => Ok(lease),
            Ok(true) => {
                lease.release().await;
                Err(StorageError::Busy)
            }
            Err(e) => {
                lease.release().await;
                Err(e)
            }
        }
    }

    /// Whether another live lease on `key` conflicts with `activity`; removes expired ones.
    async fn conflicting(&self, key: &BackupKey, activity: Activity, own: &Path) -> StorageResult<bool> {
        let leases: Vec<ObjectMeta> =
            self.store.list(Some(&self.leases_of(key))).try_collect().await.map_err(unavailable)?;
        let now = SystemTime::now();
        let mut conflict = false;
        for lease in leases {
            if &lease.location == own {
                continue;
            }
            if SystemTime::from(lease.last_modified) + self.ttl + LISTING_PRECISION <= now {
                tracing::info!(lease = %lease.location, "removing an expired lease");
                let _ = self.store.delete(&lease.location).await;
                continue;
            }
            let other = lease.location.filename().and_then(|n| n.split('.').next()).and_then(Activity::parse);
            // An unknown lease name is from a newer version: respect it.
            conflict |= other.is_none_or(|other| activity.conflicts_with(other));
        }
        Ok(conflict)
    }
}

/// A lease object, renewed in the background until released.
pub struct Lease {
    store: Arc<AmazonS3>,
    path: Path,
    renewal: tokio::task::JoinHandle<()>,
    released: bool,
}

impl Lease {
    fn start(store: Arc<AmazonS3>, path: Path, mut version: UpdateVersion, ttl: Duration) -> Lease {
        let (s, p) = (store.clone(), path.clone());
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let mode = PutMode::Update(version.clone());
                match s.put_opts(&p, PutPayload::from_static(b"lease"), PutOptions::from(mode)).await {
                    Ok(put) => version = put.into(),
                    Err(e) => {
                        // Taken as expired by another server (or the store is gone): the work
                        // goes on, but no longer protected.
                        tracing::warn!(lease = %p, error = %e, "lease lost");
                        return;
                    }
                }
            }
        });
        Lease { store, path, renewal, released: false }
    }

    pub async fn release(mut self) {
        self.released = true;
        self.renewal.abort();
        if let Err(e) = self.store.delete(&self.path).await {
            tracing::warn!(lease = %self.path, error = %e, "could not remove a lease; it will expire");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
        if !self.released {
            let (store, path) = (self.store.clone(), self.path.clone());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = store.delete(&path).await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_conflict_only_across_delete() {
        use Activity::*;
        assert!(Delete.conflicts_with(Restore) && Restore.conflicts_with(Delete) && Create.conflicts_with(Delete));
        assert!(!Restore.conflicts_with(Restore) && !Delete.conflicts_with(Delete));
    }
}

//! Backup/restore exclusivity: at most one create or restore runs at a time, server-wide (R13).
//!
//! Pure state and transitions, no locking and no I/O: the service keeps one `Coordinator`
//! behind a mutex and asks it before starting work. The tests' reference model (in `spec/`)
//! is written separately on purpose, so that the state-machine test can catch this file.

use super::names::BackupKey;

/// What the server is doing right now, as far as exclusivity is concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Activity {
    #[default]
    Idle,
    Creating(BackupKey),
    Restoring(BackupKey),
}

/// Refusal: another create or restore holds the server.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("another backup/restore process is running ({0:?})")]
pub struct Busy(pub Activity);

#[derive(Debug, Default)]
pub struct Coordinator {
    activity: Activity,
    /// Keys whose delete is under way (a key may be deleted by several requests at once).
    deleting: Vec<BackupKey>,
}

/// Refusal of a delete: the key is the one a create or restore works on (R20).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the key is being created or restored")]
pub struct KeyInUse;

impl Coordinator {
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    pub fn is_busy(&self) -> bool {
        self.activity != Activity::Idle
    }

    /// The key a running create or restore works on: it may not be deleted meanwhile, and a
    /// key being created counts as taken.
    pub fn key_in_use(&self) -> Option<&BackupKey> {
        match &self.activity {
            Activity::Idle => None,
            Activity::Creating(k) | Activity::Restoring(k) => Some(k),
        }
    }

    pub fn start_create(&mut self, key: BackupKey) -> Result<(), Busy> {
        self.start(Activity::Creating(key))
    }

    /// Refused while another create or restore runs, or while a delete of `key` is under way
    /// ([`Coordinator::is_deleting`]: the caller waits for it to end, then asks again).
    pub fn start_restore(&mut self, key: BackupKey) -> Result<(), Busy> {
        self.start(Activity::Restoring(key))
    }

    /// Decides a delete of `key` under the same lock as a restore's start, so the two cannot
    /// both be accepted (R20): refused while `key` is created or restored, otherwise the key is
    /// marked as being deleted until [`Coordinator::end_delete`].
    pub fn start_delete(&mut self, key: &BackupKey) -> Result<(), KeyInUse> {
        if self.key_in_use() == Some(key) {
            return Err(KeyInUse);
        }
        self.deleting.push(key.clone());
        Ok(())
    }

    pub fn end_delete(&mut self, key: &BackupKey) {
        if let Some(i) = self.deleting.iter().position(|k| k == key) {
            self.deleting.swap_remove(i);
        }
    }

    /// Whether a delete of `key` is under way: a restore of it must wait for the outcome,
    /// since it either finds the archive gone (404) or the delete failed and it is still there.
    pub fn is_deleting(&self, key: &BackupKey) -> bool {
        self.deleting.contains(key)
    }

    /// Ends whatever runs. Ending nothing is harmless, so a failed start can always call it.
    pub fn finish(&mut self) {
        self.activity = Activity::Idle;
    }

    /// Whether a create may start now. The service asks before it checks the name, so that
    /// "busy" wins over validation errors; `start_create` asks again.
    pub fn admits_create(&self) -> bool {
        self.admits(true)
    }

    fn start(&mut self, next: Activity) -> Result<(), Busy> {
        if !self.admits(matches!(next, Activity::Creating(_))) {
            return Err(Busy(self.activity.clone()));
        }
        self.activity = next;
        Ok(())
    }

    #[cfg(not(pb_broken_coordinator))]
    fn admits(&self, _create: bool) -> bool {
        !self.is_busy()
    }

    /// The deliberate bug the state-machine test must catch: a create is let through while a
    /// restore runs. Only built by `scripts/check-broken-coordinator` (see `build.rs`).
    #[cfg(pb_broken_coordinator)]
    fn admits(&self, create: bool) -> bool {
        match self.activity {
            Activity::Idle => true,
            Activity::Restoring(_) => create,
            Activity::Creating(_) => false,
        }
    }
}

#[cfg(all(test, not(pb_broken_coordinator)))]
mod tests {
    use super::*;

    fn key(s: &str) -> BackupKey {
        BackupKey::parse(s).unwrap()
    }

    #[test]
    fn one_operation_at_a_time() {
        let mut c = Coordinator::default();
        assert!(!c.is_busy());
        c.start_create(key("a.zip")).unwrap();
        assert_eq!(c.key_in_use(), Some(&key("a.zip")));
        assert_eq!(
            c.start_restore(key("b.zip")),
            Err(Busy(Activity::Creating(key("a.zip"))))
        );
        assert!(c.start_create(key("c.zip")).is_err());
        c.finish();
        assert_eq!(c.key_in_use(), None);
        c.start_restore(key("b.zip")).unwrap();
        assert!(c.start_create(key("a.zip")).is_err());
        assert!(c.start_restore(key("b.zip")).is_err());
        assert_eq!(c.activity(), &Activity::Restoring(key("b.zip")));
    }

    #[test]
    fn delete_of_the_active_key_is_refused_and_a_deleting_key_is_marked() {
        let mut c = Coordinator::default();
        c.start_restore(key("a.zip")).unwrap();
        assert_eq!(c.start_delete(&key("a.zip")), Err(KeyInUse));
        assert!(!c.is_deleting(&key("a.zip")));
        c.start_delete(&key("b.zip")).unwrap();
        c.start_delete(&key("b.zip")).unwrap();
        assert!(c.is_deleting(&key("b.zip")));
        c.end_delete(&key("b.zip"));
        assert!(c.is_deleting(&key("b.zip")), "the second delete of b.zip is still under way");
        c.end_delete(&key("b.zip"));
        assert!(!c.is_deleting(&key("b.zip")));
        c.finish();
        c.start_create(key("c.zip")).unwrap();
        assert_eq!(c.start_delete(&key("c.zip")), Err(KeyInUse));
    }

    #[test]
    fn finishing_when_idle_is_harmless() {
        let mut c = Coordinator::default();
        c.finish();
        assert!(!c.is_busy());
        c.start_create(key("a.zip")).unwrap();
    }
}

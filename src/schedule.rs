//! Scheduled backups, as PocketBase runs them: once a minute (UTC) the stored `backups.cron`
//! is checked; when it is due, a backup named `@auto_pb_backup_<app>_<time>.zip` is created
//! with the same exclusivity as an API create, and then the scheduled backups beyond the
//! newest `cronMaxKeep` are deleted. Manual and uploaded backups are never pruned. A run that
//! fails is mailed to every superuser, as PocketBase 0.39+ does.
//!
//! The minutes come from a [`Clock`]: the system clock in the server, a [`ManualClock`] in
//! tests, which hands the scheduler chosen instants and gets each tick's outcome back.

use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::backends::Backend;
use crate::model::names::{self, BackupKey, AUTO_PREFIX};
use crate::service::{BackupError, Service};
use crate::settings::{self, cron::parse_cron};

/// Whether `cron` is due in the minute that holds `at` (UTC).
fn due(cron: &croner::Cron, at: OffsetDateTime) -> bool {
    let minute = at.unix_timestamp().div_euclid(60) * 60;
    let Some(utc) = chrono::DateTime::<chrono::Utc>::from_timestamp(minute, 0) else { return false };
    cron.is_time_matching(&utc).unwrap_or(false)
}

/// What one tick of the scheduler did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TickOutcome {
    /// No cron is set (or the stored one does not parse: logged).
    Off,
    /// The cron is not due this minute.
    NotDue,
    /// Due, but a create or restore was running: skipped, not queued.
    Skipped { pruned: Vec<BackupKey> },
    /// The backup was created.
    Created { key: BackupKey, pruned: Vec<BackupKey> },
    /// The create failed (logged).
    Failed { key: BackupKey, pruned: Vec<BackupKey> },
}

/// One minute handed to the scheduler; `done` gets what it did.
pub struct Tick {
    at: OffsetDateTime,
    done: Option<oneshot::Sender<TickOutcome>>,
}

/// Where the scheduler's minutes come from.
#[derive(Clone, Default)]
pub enum Clock {
    /// The start of every UTC minute, from the system clock.
    #[default]
    System,
    /// Only the instants a [`ManualClock`] sends (shared across in-process restarts).
    Manual(Arc<Mutex<mpsc::UnboundedReceiver<Tick>>>),
}

/// The test side of [`Clock::Manual`].
#[derive(Clone)]
pub struct ManualClock {
    tx: mpsc::UnboundedSender<Tick>,
}

impl ManualClock {
    pub fn new() -> (ManualClock, Clock) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ManualClock { tx }, Clock::Manual(Arc::new(Mutex::new(rx))))
    }

    /// Runs the scheduler's check for the minute of `at`, waiting for its outcome; `None`
    /// if no scheduler is running (the server is stopped or between restarts).
    pub async fn tick(&self, at: OffsetDateTime) -> Option<TickOutcome> {
        let (done, outcome) = oneshot::channel();
        self.tx.send(Tick { at, done: Some(done) }).ok()?;
        outcome.await.ok()
    }
}

impl Clock {
    async fn next(&self) -> Option<Tick> {
        match self {
            Clock::System => {
                let now = OffsetDateTime::now_utc();
                let into_minute = now.unix_timestamp().rem_euclid(60) as u64 * 1000 + now.millisecond() as u64;
                let wait = std::time::Duration::from_millis(60_000 - into_minute);
                tokio::time::sleep(wait).await;
                Some(Tick { at: OffsetDateTime::now_utc(), done: None })
            }
            Clock::Manual(rx) => rx.lock().await.recv().await,
        }
    }
}

/// Runs the schedule of `service`'s data dir until the task is dropped. The settings are
/// read at every tick, so a change (ours or PocketBase's) applies from the next minute.
pub async fn run(service: Arc<Service>, clock: Clock) {
    while let Some(tick) = clock.next().await {
        let outcome = run_tick(&service, tick.at).await;
        if let Some(done) = tick.done {
            let _ = done.send(outcome);
        }
    }
}

/// One minute of the schedule: create if due, then prune.
pub async fn run_tick(service: &Arc<Service>, at: OffsetDateTime) -> TickOutcome {
    let dir = service.data_dir().to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || settings::load(&dir)).await;
    let settings = match loaded {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "scheduled backups: settings unreadable");
            return TickOutcome::Off;
        }
        Err(e) => {
            tracing::warn!(error = %e, "scheduled backups: settings unreadable");
            return TickOutcome::Off;
        }
    };
    if settings.backups.cron.is_empty() {
        return TickOutcome::Off;
    }
    let cron = match parse_cron(&settings.backups.cron) {
        Ok(cron) => cron,
        Err(e) => {
            tracing::warn!(cron = %settings.backups.cron, error = %e, "scheduled backups: stored cron does not parse");
            return TickOutcome::Off;
        }
    };
    if !due(&cron, at) {
        return TickOutcome::NotDue;
    }
    let key = names::auto_backup_key(&settings.app_name, at);
    let started = std::time::Instant::now();
    // The run creates and prunes in the storage chosen as it starts.
    let (result, pruned) = match service.backups_storage().await {
        Ok(storage) => {
            let result = service.create_in(&storage, key.clone()).await;
            // As upstream: pruned after every run, a failed or skipped one too.
            (result, prune(service, &storage, settings.backups.cron_max_keep).await)
        }
        Err(e) => (Err(e), Vec::new()),
    };
    let took = started.elapsed();
    match result {
        Ok(_) => {
            crate::metrics::operation("scheduled_create", "success", took);
            crate::metrics::scheduled_success(at.unix_timestamp());
            tracing::info!(key = %key, pruned = pruned.len(), "scheduled backup created");
            TickOutcome::Created { key, pruned }
        }
        Err(BackupError::Busy) => {
            crate::metrics::operation("scheduled_create", "busy", took);
            tracing::warn!(key = %key, "scheduled backup skipped: another backup or restore is running");
            TickOutcome::Skipped { pruned }
        }
        Err(e) => {
            crate::metrics::operation("scheduled_create", "error", took);
            tracing::error!(key = %key, error = %e, "scheduled backup failed");
            // In the background: mail servers must not hold up the schedule.
            let (service, failed) = (service.clone(), key.clone());
            tokio::spawn(async move { service.mail_backup_failure(&failed, &e).await });
            TickOutcome::Failed { key, pruned }
        }
    }
}

/// Deletes the scheduled backups beyond the newest `keep` (by modification time, then key,
/// as listed); returns the keys deleted.
async fn prune(service: &Service, storage: &Backend, keep: i64) -> Vec<BackupKey> {
    let keep = usize::try_from(keep).unwrap_or(0);
    if keep == 0 {
        return Vec::new();
    }
    let listing = match service.listing_in(storage).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "scheduled backups: cannot list for pruning");
            return Vec::new();
        }
    };
    let autos = listing.items.iter().filter(|m| m.key.as_str().starts_with(AUTO_PREFIX));
    let mut pruned = Vec::new();
    for meta in autos.skip(keep) {
        match service.delete_in(storage, &meta.key).await {
            Ok(()) => pruned.push(meta.key.clone()),
            Err(e) => tracing::warn!(key = %meta.key, error = %e, "scheduled backups: prune failed"),
        }
    }
    pruned
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn due_within_the_minute_in_utc() {
        let c = parse_cron("30 2 * * *").unwrap();
        assert!(due(&c, datetime!(2026-03-01 02:30:00 UTC)));
        assert!(due(&c, datetime!(2026-03-01 02:30:59 UTC)));
        assert!(!due(&c, datetime!(2026-03-01 02:31:00 UTC)));
        // The same instant seen from another offset is still 02:30 UTC.
        assert!(due(&c, datetime!(2026-03-01 04:30:00 +2)));
        let daily = parse_cron("@daily").unwrap();
        assert!(due(&daily, datetime!(2026-03-01 00:00:10 UTC)));
        assert!(!due(&daily, datetime!(2026-03-01 01:00:00 UTC)));
        // Both day fields must match: the 13th only when it is a Friday.
        let friday13 = parse_cron("0 0 13 * 5").unwrap();
        assert!(due(&friday13, datetime!(2026-02-13 00:00:00 UTC)));
        assert!(!due(&friday13, datetime!(2026-01-13 00:00:00 UTC)));
        assert!(!due(&friday13, datetime!(2026-02-20 00:00:00 UTC)));
    }
}

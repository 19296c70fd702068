//! Prometheus metrics, served at `GET /metrics` when the server runs with `--metrics`.
//!
//! One process-wide registry: the server, the schedule and a restore's restart all count
//! into it, and in-process restarts keep the counts. Every counter and label combination
//! exists at 0 from the start, so alerts work before the first event. The numbers of stored
//! backups are read from the storage at each scrape.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The operations counted, as the `kind` label says them.
pub const KINDS: [&str; 7] = ["list", "create", "upload", "download", "delete", "restore", "scheduled_create"];
/// `result` label values: done; refused or skipped because another create or restore ran
/// (the API's busy answers, skipped scheduled runs); failed or refused for any other reason
/// (for API requests, any other answer than 2xx).
pub const RESULTS: [&str; 3] = ["success", "busy", "error"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

struct Metrics {
    registry: Registry,
    operations: Family<OpLabels, Counter>,
    durations: Family<KindLabel, Histogram>,
    archive_sizes: Histogram,
    stored_count: Gauge,
    stored_bytes: Gauge,
    last_scheduled_success: Gauge,
    restores_completed: Counter,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Switches metrics on for this process (idempotent); off, every record is a no-op.
pub fn enable() {
    METRICS.get_or_init(|| {
        let operations = Family::<OpLabels, Counter>::default();
        let durations = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 4.0, 10))
        });
        for kind in KINDS {
            let _ = durations.get_or_create(&KindLabel { kind: kind.into() });
            for result in RESULTS {
                let _ = operations.get_or_create(&OpLabels { kind: kind.into(), result: result.into() });
            }
        }
        // 64 KiB to 64 GiB.
        let archive_sizes = Histogram::new(exponential_buckets(65536.0, 4.0, 11));
        let mut registry = Registry::with_prefix("pb_backups");
        registry.register("operations", "Backup API operations and scheduled backups, by kind and result", operations.clone());
        registry.register_with_unit("operation_duration", "How long operations took", Unit::Seconds, durations.clone());
        registry.register_with_unit("archive_size", "Sizes of the archives created", Unit::Bytes, archive_sizes.clone());
        let (stored_count, stored_bytes) = (Gauge::default(), Gauge::default());
        registry.register("stored_backups", "Backups in the storage", stored_count.clone());
        registry.register_with_unit("stored_backups_size", "Total size of the backups in the storage", Unit::Bytes, stored_bytes.clone());
        let last_scheduled_success = Gauge::default();
        registry.register(
            "last_scheduled_success_timestamp_seconds",
            "Unix time of the last scheduled backup that succeeded (0: none yet)",
            last_scheduled_success.clone(),
        );
        let restores_completed = Counter::default();
        registry.register("restores_completed", "Restores swapped in and serving", restores_completed.clone());
        Metrics {
            registry,
            operations,
            durations,
            archive_sizes,
            stored_count,
            stored_bytes,
            last_scheduled_success,
            restores_completed,
        }
    });
}

pub fn enabled() -> bool {
    METRICS.get().is_some()
}

/// Counts one operation of `kind` (one of [`KINDS`]) that took `took`.
pub fn operation(kind: &str, result: &str, took: Duration) {
    if let Some(m) = METRICS.get() {
        m.operations.get_or_create(&OpLabels { kind: kind.into(), result: result.into() }).inc();
        m.durations.get_or_create(&KindLabel { kind: kind.into() }).observe(took.as_secs_f64());
    }
}

/// An API request, counted under its operation when it is one of the backups API's; `busy`:
/// it was refused because a create or restore runs.
pub fn request(method: &str, path: &str, status: u16, busy: bool, took: Duration) {
    let Some(rest) = path.strip_prefix("/api/backups") else { return };
    let kind = match (method, rest) {
        ("GET", "" | "/") => "list",
        ("POST", "" | "/") => "create",
        ("POST", "/upload") => "upload",
        ("POST", r) if r.ends_with("/restore") => "restore",
        ("GET", _) => "download",
        ("DELETE", _) => "delete",
        _ => return,
    };
    operation(kind, result_of(status, busy), took);
}

fn result_of(status: u16, busy: bool) -> &'static str {
    match status {
        200..=299 => "success",
        _ if busy => "busy",
        _ => "error",
    }
}

pub fn archive_created(size: u64) {
    if let Some(m) = METRICS.get() {
        m.archive_sizes.observe(size as f64);
    }
}

pub fn scheduled_success(unix_secs: i64) {
    if let Some(m) = METRICS.get() {
        m.last_scheduled_success.set(unix_secs);
    }
}

pub fn restore_completed() {
    if let Some(m) = METRICS.get() {
        m.restores_completed.inc();
    }
}

/// The metrics in the text exposition format. `stored`: the sizes of the stored backups as
/// a listing just found them; when it failed, the gauges keep their last values. The caller
/// lists, so that metrics never call into the service that counts into them.
pub fn render(stored: Result<impl Iterator<Item = u64>, impl std::fmt::Display>) -> Option<String> {
    let m = METRICS.get()?;
    match stored {
        Ok(sizes) => {
            let (count, bytes) = sizes.fold((0i64, 0i64), |(n, sum), size| (n + 1, sum + size as i64));
            m.stored_count.set(count);
            m.stored_bytes.set(bytes);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: backups storage not listed"),
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &m.registry).ok()?;
    Some(out)
}

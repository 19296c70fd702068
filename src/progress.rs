//! Progress of long creates and restores: bytes done of a total, the rate and the time left.
//!
//! The work counts itself: the archive code sets a [`ProgressCounter`]'s total once it knows
//! it (the planned files' sizes for a create, the entries' uncompressed sizes for an
//! extraction) and adds the bytes it has written. A [`Progress`] shows that counter: as a bar
//! (`indicatif`) when stderr is a terminal, else (and always in the server) as a log line
//! every few seconds. A server also keeps the running work's counter in a [`Running`] slot,
//! which superusers read through `/api/health`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

/// How often the bar is redrawn.
const TICK: Duration = Duration::from_millis(250);
/// How often a log line is written.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Bytes done and the total expected, shared by the work (which adds) and whoever shows it.
/// Plain atomics: adding costs next to nothing, from any thread.
#[derive(Debug, Default)]
pub struct ProgressCounter {
    done: AtomicU64,
    total: AtomicU64,
    /// When the total was set: the rate is measured from there, not from the start of a
    /// restore's fetch, which is not counted.
    counting_since: OnceLock<Instant>,
}

impl ProgressCounter {
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        let _ = self.counting_since.set(Instant::now());
    }

    pub fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes done and the total. The total is never below what is done: a live database can
    /// grow between the plan and its snapshot.
    pub fn get(&self) -> (u64, u64) {
        let done = self.done.load(Ordering::Relaxed);
        (done, self.total.load(Ordering::Relaxed).max(done))
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// A bar on stderr (a terminal).
    Bar,
    /// A log line this often.
    Log { every: Duration },
}

impl Display {
    /// Log lines at the usual interval: the server's way.
    pub fn log() -> Display {
        Display::Log { every: LOG_EVERY }
    }

    /// A bar when stderr is a terminal, else log lines: the offline commands' way.
    pub fn for_stderr() -> Display {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            Display::Bar
        } else {
            Display::log()
        }
    }
}

/// The create or restore running now, if any, for whoever asks how far it is.
#[derive(Clone, Debug, Default)]
pub struct Running(Arc<Mutex<Option<RunningWork>>>);

#[derive(Clone, Debug)]
struct RunningWork {
    what: &'static str,
    backup: String,
    counter: Arc<ProgressCounter>,
}

/// How far the running work is, as read at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `create` or `restore`.
    pub what: &'static str,
    pub backup: String,
    pub done: u64,
    /// 0 until the work knows it (a restore fetches the archive first).
    pub total: u64,
}

impl Running {
    pub fn report(&self) -> Option<Report> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().map(|w| {
            let (done, total) = w.counter.get();
            Report { what: w.what, backup: w.backup.clone(), done, total }
        })
    }
}

/// Shows the progress of one piece of work until dropped.
pub struct Progress {
    counter: Arc<ProgressCounter>,
    task: JoinHandle<()>,
    what: &'static str,
    backup: String,
    /// The slot this work is shown in, emptied on drop.
    running: Option<Running>,
}

impl Progress {
    /// Starts showing a fresh counter for `what` ("create", "restore") of the backup `backup`.
    pub fn start(what: &'static str, backup: &str, display: Display) -> Progress {
        let counter = Arc::new(ProgressCounter::default());
        let task = match display {
            Display::Bar => tokio::spawn(show_bar(counter.clone(), format!("{what} {backup}"))),
            Display::Log { every } => tokio::spawn(log_lines(counter.clone(), what, backup.to_string(), every)),
        };
        Progress { counter, task, what, backup: backup.to_string(), running: None }
    }

    /// Also shows this work in `running` until dropped (one work at a time: the coordinator
    /// admits one create or restore).
    pub fn shown_in(mut self, running: &Running) -> Progress {
        let work = RunningWork { what: self.what, backup: self.backup.clone(), counter: self.counter.clone() };
        *running.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(work);
        self.running = Some(running.clone());
        self
    }

    /// The counter the work adds to.
    pub fn counter(&self) -> Arc<ProgressCounter> {
        self.counter.clone()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(running) = self.running.take() {
            let mut slot = running.0.lock().unwrap_or_else(|p| p.into_inner());
            // Only its own entry: never one a later work has put there meanwhile.
            if slot.as_ref().is_some_and(|w| Arc::ptr_eq(&w.counter, &self.counter)) {
                *slot = None;
            }
        }
    }
}

async fn show_bar(counter: Arc<ProgressCounter>, message: String) {
    let bar = ProgressBar::new(0);
    let template = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left";
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar.set_message(message);
    // Cleared when the work ends (the task is aborted with `bar` in it): the work's own log
    // lines say how it went, and would otherwise run on after the bar's last line.
    let _clear = ClearOnDrop(bar.clone());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (done, total) = counter.get();
        bar.set_length(total);
        bar.set_position(done);
    }
}

struct ClearOnDrop(ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

async fn log_lines(counter: Arc<ProgressCounter>, what: &'static str, backup: String, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    // A busy runtime delays lines rather than bunching them.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (done, total) = counter.get();
        // Nothing to tell until the work knows its total (a restore fetches first).
        let Some(since) = counter.counting_since.get().filter(|_| total > 0) else { continue };
        let line = Line::of(done, total, since.elapsed());
        tracing::info!(
            what,
            backup = %backup,
            done,
            total,
            percent = line.percent,
            bytes_per_second = line.bytes_per_second,
            eta_seconds = line.eta_seconds,
            "progress"
        );
    }
}

/// The numbers of a log line.
#[derive(Debug, PartialEq)]
struct Line {
    percent: u64,
    bytes_per_second: u64,
    /// Unknown until some bytes are done.
    eta_seconds: Option<u64>,
}

impl Line {
    fn of(done: u64, total: u64, elapsed: Duration) -> Line {
        let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
        Line {
            percent: (done as u128 * 100 / total.max(1) as u128) as u64,
            bytes_per_second: rate as u64,
            eta_seconds: (done > 0).then(|| (total.saturating_sub(done) as f64 / rate).ceil() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_adds_and_keeps_total_at_least_done() {
        let c = ProgressCounter::default();
        c.set_total(100);
        c.add(30);
        c.add(20);
        assert_eq!(c.get(), (50, 100));
        c.add(60);
        assert_eq!(c.get(), (110, 110));
    }

    #[tokio::test]
    async fn running_shows_the_work_until_it_ends() {
        let running = Running::default();
        assert_eq!(running.report(), None);
        let progress = Progress::start("create", "a.zip", Display::log()).shown_in(&running);
        progress.counter().set_total(10);
        progress.counter().add(4);
        assert_eq!(running.report(), Some(Report { what: "create", backup: "a.zip".into(), done: 4, total: 10 }));
        drop(progress);
        assert_eq!(running.report(), None);
    }

    #[test]
    fn line_rate_percent_and_time_left() {
        let line = Line::of(25, 100, Duration::from_secs(5));
        assert_eq!(line, Line { percent: 25, bytes_per_second: 5, eta_seconds: Some(15) });
        assert_eq!(Line::of(0, 100, Duration::from_secs(1)).eta_seconds, None);
        assert_eq!(Line::of(100, 100, Duration::from_secs(1)).eta_seconds, Some(0));
    }
}

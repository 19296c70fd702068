//! Progress of long creates and restores: for the offline commands a bar with bytes and rate
//! (`indicatif`) when stderr is a terminal, else (and always in the server) a log line every
//! few seconds.
//!
//! The work itself reports nothing: progress is measured from the outside, as the bytes
//! written so far under the temp folder's entries of that work (`create-…` for the archive
//! being written, `restore-…` for the backup being fetched and extracted), so the archive
//! code needs no hooks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

/// How often the bar is redrawn, and how often a log line is written without a terminal.
const TICK: Duration = Duration::from_millis(250);
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Shows progress until dropped.
pub struct Progress {
    task: JoinHandle<()>,
    bar: bool,
}

/// A bar is on the terminal: log lines would break it.
static BAR_SHOWN: AtomicBool = AtomicBool::new(false);

impl Progress {
    /// A bar of the bytes under `folder`'s entries named `prefix…` growing towards `total`
    /// (when known), if stderr is a terminal; the work's own log lines pause meanwhile.
    pub fn bar(what: &'static str, folder: PathBuf, prefix: &'static str, total: Option<u64>) -> Option<Progress> {
        std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            BAR_SHOWN.store(true, Ordering::SeqCst);
            Self::start(what, folder, prefix, total, true)
        })
    }

    /// Log lines only: for the server, whose stderr is a log.
    pub fn log(what: &'static str, folder: PathBuf, prefix: &'static str) -> Progress {
        Self::start(what, folder, prefix, None, false)
    }

    fn start(what: &'static str, folder: PathBuf, prefix: &'static str, total: Option<u64>, terminal: bool) -> Progress {
        let task = tokio::spawn(async move {
            let bar = terminal.then(|| bar(what, total));
            let started = Instant::now();
            let mut logged = Instant::now();
            loop {
                tokio::time::sleep(TICK).await;
                let measured = folder.clone();
                let done = tokio::task::spawn_blocking(move || bytes_of(&measured, prefix)).await.unwrap_or(0);
                match &bar {
                    Some(bar) => bar.set_position(done),
                    None if logged.elapsed() >= LOG_EVERY && !BAR_SHOWN.load(Ordering::SeqCst) => {
                        logged = Instant::now();
                        let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
                        match total {
                            Some(total) => tracing::info!(what, done, total, bytes_per_second = rate as u64, "progress"),
                            None => tracing::info!(what, done, bytes_per_second = rate as u64, "progress"),
                        }
                    }
                    None => {}
                }
            }
        });
        Progress { task, bar: terminal }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        if self.bar {
            BAR_SHOWN.store(false, Ordering::SeqCst);
        }
    }
}

fn bar(what: &str, total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left",
        ),
        None => (ProgressBar::no_length(), "{msg} {spinner} {bytes} written, {bytes_per_sec}"),
    };
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar.set_message(what.to_string());
    bar.enable_steady_tick(TICK);
    bar
}

/// Total size of the entries of `folder` whose names start with `prefix`.
fn bytes_of(folder: &Path, prefix: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(folder) else { return 0 };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Total size of the regular files under `path` (missing or vanishing files count 0).
fn bytes_under(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_under_counts_files_in_nested_folders() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 10]).unwrap();
        std::fs::create_dir_all(dir.path().join("x/y")).unwrap();
        std::fs::write(dir.path().join("x/y/b"), [0u8; 32]).unwrap();
        assert_eq!(bytes_under(dir.path()), 42);
        assert_eq!(bytes_under(&dir.path().join("missing")), 0);
        std::fs::write(dir.path().join("create-1.zip"), [0u8; 5]).unwrap();
        std::fs::create_dir(dir.path().join("create-2")).unwrap();
        std::fs::write(dir.path().join("create-2/c"), [0u8; 7]).unwrap();
        assert_eq!(bytes_of(dir.path(), "create-"), 12);
        assert_eq!(bytes_of(dir.path(), "restore-"), 0);
    }
}

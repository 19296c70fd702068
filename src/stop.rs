//! Stop signals (SIGTERM, SIGINT) that a restart cannot lose. Once [`watch`] is called a
//! signal only sets a flag: the server reads it where it would otherwise miss one (after the
//! swap of a restore, before re-executing itself, and when the re-executed process starts),
//! and [`stopped`] resolves on it while the server serves.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::Poll;

use signal_hook::consts::{SIGINT, SIGTERM};

const SIGNALS: [libc::c_int; 2] = [SIGTERM, SIGINT];

/// The number of the last stop signal taken; 0 for none.
static TAKEN: AtomicUsize = AtomicUsize::new(0);

/// From now on SIGTERM and SIGINT no longer end the process but set the flag that [`taken`]
/// reads. Only for a process that watches the flag: the server. Idempotent.
pub fn watch() -> io::Result<()> {
    static WATCHING: Mutex<bool> = Mutex::new(false);
    let mut watching = WATCHING.lock().unwrap_or_else(|e| e.into_inner());
    if !*watching {
        for signal in SIGNALS {
            signal_hook::flag::register_usize(signal, &TAKEN, signal as usize)?;
        }
        *watching = true;
    }
    Ok(())
}

/// The stop signal taken since [`watch`], if any.
pub fn taken() -> Option<&'static str> {
    match TAKEN.load(Ordering::SeqCst) as libc::c_int {
        0 => None,
        SIGTERM => Some("SIGTERM"),
        SIGINT => Some("SIGINT"),
        _ => Some("a stop signal"),
    }
}

/// The server's shutdown future: resolves once a stop signal is taken, including one taken
/// before it was first polled. Ready whenever polled after a signal, so a poll at any moment
/// (`now_or_never`) sees it.
pub async fn stopped() {
    if let Err(e) = watch() {
        tracing::warn!(error = %e, "cannot watch for stop signals; they end the process at once");
    }
    use tokio::signal::unix::{signal, SignalKind};
    // The streams only wake this task; the flag says whether a signal came.
    let mut streams: Vec<_> = [SignalKind::terminate(), SignalKind::interrupt()]
        .into_iter()
        .filter_map(|kind| signal(kind).ok())
        .collect();
    std::future::poll_fn(|cx| {
        let mut woken = false;
        for stream in &mut streams {
            woken |= stream.poll_recv(cx).is_ready();
        }
        if woken || taken().is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// SIGTERM and SIGINT back to their default action (ending the process) until dropped, which
/// puts the watching back. Taken just before a re-exec: a stop signal that arrives after the
/// last look at the flag then ends the process instead of being lost with the exec.
pub struct DefaultUntilExec {
    saved: Vec<(libc::c_int, libc::sigaction)>,
}

/// See [`DefaultUntilExec`]. Through libc: signal-hook registers handlers but does not hand
/// a disposition back to the kernel's default and restore it later.
pub fn default_until_exec() -> io::Result<DefaultUntilExec> {
    let mut guard = DefaultUntilExec { saved: Vec::new() };
    for signal in SIGNALS {
        // SAFETY: a zeroed sigaction is valid (empty mask, no flags); SIG_DFL installs no
        // handler, and `old` receives the current action.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, &action, &mut old) != 0 {
                return Err(io::Error::last_os_error());
            }
            guard.saved.push((signal, old));
        }
    }
    Ok(guard)
}

impl Drop for DefaultUntilExec {
    fn drop(&mut self) {
        for (signal, old) in &self.saved {
            // SAFETY: `old` is the action the kernel handed back for this signal.
            unsafe { libc::sigaction(*signal, old, std::ptr::null_mut()) };
        }
    }
}

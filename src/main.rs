//! The `pb-backups` binary: parse the command line, set up logging, run.
//!
//! `audit` is dispatched here, not in the library's `cli`: the auditor holds servers to the
//! spec from the outside and the server's library must not depend on it.

use clap::{Args, CommandFactory, FromArgMatches};

fn main() -> std::process::ExitCode {
    // First, while this is the only thread: it edits the environment.
    let inherited = pb_backups::listener::take_inherited();
    // A server re-executed after a restore: a stop signal from now on must not end it
    // half-way through opening the data dir, but stop it once open. (Errors are seen again,
    // and logged, when `serve` asks for the same.)
    if inherited.listener.is_some() {
        let _ = pb_backups::stop::watch();
    }
    // glibc raises its mmap threshold after the first large free; from then on each large
    // buffer (a legacy argon2 check takes 19 MiB) is carved from, and kept in, a per-thread
    // arena. A fixed threshold returns large buffers to the system when they are freed.
    // (Through libc: no crate wraps mallopt.)
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes a global tuning parameter of the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pb-backups: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // The audit's help text is its `Args` doc comment.
    let audit = clap::Command::new("audit");
    let matches = pb_backups::cli::Cli::command().subcommand(pb_backups_audit::Args::augment_args(audit)).get_matches();
    if let Some(("audit", sub)) = matches.subcommand() {
        let args = pb_backups_audit::Args::from_arg_matches(sub).unwrap_or_else(|e| e.exit());
        return std::process::ExitCode::from(runtime.block_on(pb_backups_audit::main(args)));
    }
    let cli = pb_backups::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
    match runtime.block_on(pb_backups::cli::run(cli, inherited)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pb-backups: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

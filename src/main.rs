//! The `pb-backups` binary: parse the command line, set up logging, run.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // glibc raises its mmap threshold after the first large free; from then on each 19 MiB
    // password-hash buffer (argon2) is carved from, and kept in, a per-thread arena. A fixed
    // threshold returns large buffers to the system when they are freed.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes a global tuning parameter of the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
    let cli = pb_backups::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
    match pb_backups::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pb-backups: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

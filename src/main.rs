//! The `pb-backups` binary: parse the command line, set up logging, run.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // First, while this is the only thread: it edits the environment.
    let inherited = pb_backups::listener::take_inherited();
    // glibc raises its mmap threshold after the first large free; from then on each 19 MiB
    // password-hash buffer (argon2) is carved from, and kept in, a per-thread arena. A fixed
    // threshold returns large buffers to the system when they are freed. (Through libc: no
    // crate wraps mallopt.)
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes a global tuning parameter of the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    let cli = pb_backups::cli::Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pb-backups: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(pb_backups::cli::run(cli, inherited)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pb-backups: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

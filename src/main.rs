//! `hush`: the command line that wires the hush crates together.

mod audit;
mod budget;
mod cli;
mod commands;
mod learn;
mod progress;
mod sweep;

use clap::Parser;

/// mimalloc: per-thread free lists suit the server's many mid-sized, short-lived
/// allocations far better than glibc's malloc (see benches/serve_load.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.global.verbose);
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the level chosen with `-v`.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A line when each stage's span closes, with its busy and idle time.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .init();
}

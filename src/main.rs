//! `hush`: the command line that wires the hush crates together.

mod cli;
mod commands;
mod parquet_io;
mod progress;

use clap::Parser;

/// `println!` that returns the write error instead of panicking: a reader
/// that goes away (`hush budget runs | head`) ends the command quietly.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if !$crate::STDOUT_MUTED.load(std::sync::atomic::Ordering::Relaxed) {
            writeln!(std::io::stdout(), $($arg)*)?;
        }
    }};
}
pub(crate) use out;

/// `print!` as [`out!`].
macro_rules! out_partial {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if !$crate::STDOUT_MUTED.load(std::sync::atomic::Ordering::Relaxed) {
            write!(std::io::stdout(), $($arg)*)?;
        }
    }};
}
pub(crate) use out_partial;

/// Set while a command that answers with one JSON document (`quickstart
/// --json`) runs the steps that would otherwise print their own lines.
pub(crate) static STDOUT_MUTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs `f` with [`out!`] muted (restored however `f` ends).
pub(crate) fn with_stdout_muted<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    use std::sync::atomic::Ordering;
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            STDOUT_MUTED.store(self.0, Ordering::Relaxed);
        }
    }
    let _restore = Restore(STDOUT_MUTED.swap(true, Ordering::Relaxed));
    f()
}

/// mimalloc: per-thread free lists suit the server's many mid-sized, short-lived
/// allocations far better than glibc's malloc (see benches/serve_load.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.global.verbose);
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) if reader_went_away(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", message(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: library errors
/// name their cause in their own message (`reading x.csv: No such file`),
/// so a cause whose text already ends the line is not repeated.
fn message(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Whether the command failed only because stdout's reader closed the pipe.
fn reader_went_away(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
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

//! Progress bars for long CLI work (hidden when stderr is not a terminal or with `--quiet`).

use indicatif::{ProgressBar, ProgressStyle};

/// A spinner counting rows (or subjects) as work proceeds.
pub fn counter(label: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}: {human_pos} {prefix} [{elapsed_precise}, {per_sec}]")
            .expect("a valid progress template"),
    );
    bar.set_message(label.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// A bar over a known number of steps (subjects, cells).
pub fn bar(label: &str, len: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg}: {wide_bar} {human_pos}/{human_len} [{elapsed_precise}, eta {eta}]")
            .expect("a valid progress template"),
    );
    bar.set_message(label.to_string());
    bar
}

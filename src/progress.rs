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

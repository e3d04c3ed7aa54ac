//! Readable reports of hush: model cards and the privacy-budget sweep
//! report, as Markdown and as self-contained HTML pages with inline SVG plots.

pub mod card;
pub mod html;
pub mod plot;
pub mod render;
pub mod store;
pub mod sweep;
pub mod words;

/// Everything that can go wrong while writing a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A chart could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
    /// Sweep results that do not fit together, or could not be written.
    #[error("sweep results: {0}")]
    Results(String),
    /// A report file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! Consent-filtered feature extraction for hush.
//!
//! Raw storefront events (from files or the event store) and the consent
//! ledger go in; out comes a [`FeatureSet`]: a minimized, pseudonymous
//! training set holding only subjects who granted *training* consent as of a
//! stated snapshot time, each contributing a bounded number of interactions,
//! plus an [`ExtractionReport`] that counts every dropped row by reason.
//!
//! - [`ExtractParams`] → [`ExtractConfig`]: the validated settings.
//! - [`ConsentView`]: who may be trained on, decided once per subject.
//! - [`Extractor`]: the streaming pipeline.
//! - [`FeatureSet`]: CSR by subject and by item, saved in a checksummed [`envelope`].
//! - [`split`]: the seeded evaluation splits the trainer and evaluator share.

mod catalogue;
mod config;
mod consent_view;
mod error;
mod extract;
mod featureset;
mod keyed;
mod report;
pub mod split;

/// The checksummed file envelope feature sets (and models) are saved in; it
/// lives in `hush-vocab` since `hush-mf` writes its models in it too.
pub use hush_vocab::envelope;

pub use catalogue::Catalogue;
pub use config::{ConsentPolicy, EventWeighting, ExtractConfig, ExtractParams, Feedback};
pub use consent_view::{ConsentView, Inclusion};
pub use error::{Error, Result};
pub use extract::Extractor;
pub use featureset::{Csr, FeatureMeta, FeatureSet, Interaction};
pub use keyed::{SubjectKey, SubjectSecret};
pub use report::{DropReason, ExtractionReport, InputSummary};
pub use split::{Split, SplitSpec};

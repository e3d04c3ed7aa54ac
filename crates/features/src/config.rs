//! Extraction settings: a plain, serde-friendly [`ExtractParams`] that is
//! checked once into an [`ExtractConfig`] the pipeline trusts.

use std::collections::BTreeMap;

use hush_vocab::{EventKind, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{DropReason, Error, Result};

/// Which events of a consenting subject may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentPolicy {
    /// Every event up to the snapshot of a subject whose training consent is
    /// granted at the snapshot (and not withdrawn since). The usual reading of
    /// consent: it covers the data the subject gave us, old and new.
    AsOfSnapshot,
    /// Stricter: only events at or after the start of the subject's current
    /// grant. Events from before they opted in are dropped (`before_grant`).
    SinceGrant,
}

/// Whether interactions are ratings or implicit signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Feedback {
    /// Ratings: only `rating` events are used; a re-rating supersedes the earlier one.
    Explicit,
    /// Views, carts, purchases...: each kind contributes its weight; weights of
    /// one subject and item add up.
    Implicit,
}

/// How raw events become interaction values: travels with the feature set
/// and the model, so that serving folds a subject's events in exactly as
/// training weighed them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventWeighting {
    /// Implicit: the weight of each event kind, by name; other kinds are not used.
    pub kind_weights: BTreeMap<String, f32>,
    /// Implicit: a rating is a positive signal only at or above this value.
    pub rating_positive_threshold: f32,
}

impl Default for EventWeighting {
    fn default() -> Self {
        EventWeighting {
            // Purchase intent is stronger evidence than a glance; the ratios
            // follow common storefront practice (Hu et al.'s confidence idea).
            kind_weights: [("view", 1.0), ("cart", 3.0), ("purchase", 5.0), ("rating", 4.0)]
                .into_iter()
                .map(|(k, w)| (k.to_string(), w))
                .collect(),
            rating_positive_threshold: 4.0,
        }
    }
}

impl EventWeighting {
    /// The value an event contributes, or why it contributes nothing:
    /// explicit models use ratings as they are; implicit ones weigh each kind,
    /// and a rating below the threshold is no signal at all.
    ///
    /// # Errors
    /// [`DropReason::ExcludedKind`] for a kind the weighting does not use,
    /// [`DropReason::BelowRatingThreshold`] for a low rating in implicit mode.
    pub fn weigh(&self, feedback: Feedback, kind: &EventKind, value: f32) -> std::result::Result<f32, DropReason> {
        match (feedback, kind) {
            (Feedback::Explicit, EventKind::Rating) => Ok(value),
            (Feedback::Explicit, _) => Err(DropReason::ExcludedKind),
            (Feedback::Implicit, EventKind::Rating) if value < self.rating_positive_threshold => {
                Err(DropReason::BelowRatingThreshold)
            }
            (Feedback::Implicit, kind) => self.kind_weights.get(kind.as_str()).copied().ok_or(DropReason::ExcludedKind),
        }
    }
}

/// Extraction settings as written in a config file or on the command line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractParams {
    /// The consent snapshot time T (RFC 3339 or unix seconds); `None` means now.
    pub snapshot_at: Option<String>,
    /// Which events of a consenting subject may be used.
    pub policy: ConsentPolicy,
    /// Ratings or implicit signals.
    pub feedback: Feedback,
    /// Drop events older than this many days before the snapshot.
    pub retention_days: Option<u32>,
    /// At most this many interactions (distinct items) per subject, sampled
    /// uniformly with each subject's own key.
    pub max_events_per_subject: Option<u32>,
    /// A seed for per-subject sampling, for reproducible research runs only:
    /// it makes the output not releasable. Unset (the default): a secret from
    /// the operating system, never written down.
    pub sampling_seed: Option<u64>,
    /// The catalogue (CSV item file with a header) that is the public item
    /// universe (in a config file, relative to that file). Without one, items come
    /// from the private rows and the output is not releasable.
    pub catalogue: Option<std::path::PathBuf>,
    /// Weight of each event kind in implicit mode; kinds not listed are dropped.
    pub kind_weights: BTreeMap<String, f32>,
    /// In implicit mode, a rating counts as a positive signal only at or above this value.
    pub rating_positive_threshold: f32,
    /// Stop at the first malformed row.
    pub strict: bool,
    /// Fail when more than this fraction of input rows is malformed.
    pub max_malformed_fraction: f64,
    /// Research data without a consent ledger: every subject is included and
    /// the output is marked research-only (no model from it may be served).
    pub research_data: bool,
}

impl Default for ExtractParams {
    fn default() -> Self {
        ExtractParams {
            snapshot_at: None,
            policy: ConsentPolicy::AsOfSnapshot,
            feedback: Feedback::Implicit,
            retention_days: None,
            // 500 distinct items covers all but the heaviest few percent of
            // storefront subjects while keeping the DP sensitivity bounded.
            max_events_per_subject: Some(500),
            sampling_seed: None,
            catalogue: None,
            kind_weights: EventWeighting::default().kind_weights,
            rating_positive_threshold: EventWeighting::default().rating_positive_threshold,
            strict: false,
            // More than 1% bad rows usually means the wrong file or format.
            max_malformed_fraction: 0.01,
            research_data: false,
        }
    }
}

/// Validated extraction settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ExtractConfig {
    /// The consent snapshot time T.
    pub snapshot_at: Timestamp,
    /// When consent is decided on top of the snapshot: a withdrawal between
    /// T and this time also excludes the subject.
    pub decided_at: Timestamp,
    /// Which events of a consenting subject may be used.
    pub policy: ConsentPolicy,
    /// Retention window in days.
    pub retention_days: Option<u32>,
    /// Contribution bound on distinct items per subject.
    pub max_events_per_subject: Option<u32>,
    /// The per-run secret that per-subject randomness is keyed by.
    pub secret: crate::SubjectSecret,
    /// The seed the secret came from, if any (recorded in the report).
    pub sampling_seed: Option<u64>,
    /// The public item universe, if one was given.
    pub catalogue: Option<crate::Catalogue>,
    /// Ratings or implicit signals.
    pub feedback: Feedback,
    /// How events become interaction values.
    pub weighting: EventWeighting,
    /// Stop at the first malformed row.
    pub strict: bool,
    /// Allowed malformed fraction.
    pub max_malformed_fraction: f64,
    /// Research data without a consent ledger.
    pub research_data: bool,
}

impl ExtractParams {
    /// Checks every field, fixes the snapshot time (`now` when unset), reads
    /// the catalogue and draws the per-run sampling secret.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] naming the field and its allowed range.
    pub fn validate(&self, now: Timestamp) -> Result<ExtractConfig> {
        let invalid = |field: &'static str, message: String| Error::InvalidParam { field, message };
        let snapshot_at = match &self.snapshot_at {
            Some(text) => Timestamp::parse(text).map_err(|e| invalid("snapshot_at", e.to_string()))?,
            None => now,
        };
        if snapshot_at > now {
            return Err(invalid("snapshot_at", format!("{snapshot_at} is in the future; consent cannot be known yet")));
        }
        if self.max_events_per_subject == Some(0) {
            return Err(invalid("max_events_per_subject", "must be at least 1 (or unset for no bound)".into()));
        }
        if self.retention_days == Some(0) {
            return Err(invalid("retention_days", "must be at least 1 (or unset to keep all history)".into()));
        }
        if !(0.0..=1.0).contains(&self.max_malformed_fraction) {
            return Err(invalid(
                "max_malformed_fraction",
                format!("must be within 0..=1, found {}", self.max_malformed_fraction),
            ));
        }
        if !self.rating_positive_threshold.is_finite() {
            return Err(invalid("rating_positive_threshold", "must be a finite number".into()));
        }
        let mut kind_weights = BTreeMap::new();
        for (name, &weight) in &self.kind_weights {
            let kind: EventKind =
                name.parse().map_err(|e: hush_vocab::Error| invalid("kind_weights", e.to_string()))?;
            if !(weight.is_finite() && weight > 0.0 && weight <= 1000.0) {
                return Err(invalid(
                    "kind_weights",
                    format!("weight of `{name}` must be within (0, 1000], found {weight}"),
                ));
            }
            kind_weights.insert(kind.as_str().to_string(), weight);
        }
        if self.feedback == Feedback::Implicit && kind_weights.is_empty() {
            return Err(invalid("kind_weights", "implicit feedback needs at least one weighted kind".into()));
        }
        Ok(ExtractConfig {
            snapshot_at,
            decided_at: now.max(snapshot_at),
            policy: self.policy,
            feedback: self.feedback,
            retention_days: self.retention_days,
            max_events_per_subject: self.max_events_per_subject,
            secret: self.sampling_seed.map_or_else(crate::SubjectSecret::from_os, crate::SubjectSecret::seeded),
            sampling_seed: self.sampling_seed,
            catalogue: self.catalogue.as_deref().map(crate::Catalogue::load).transpose()?,
            weighting: EventWeighting { kind_weights, rating_positive_threshold: self.rating_positive_threshold },
            strict: self.strict,
            max_malformed_fraction: self.max_malformed_fraction,
            research_data: self.research_data,
        })
    }
}

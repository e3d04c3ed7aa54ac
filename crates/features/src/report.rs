//! The extraction report: every input row accounted for.

use std::collections::BTreeMap;

use hush_consent::{PseudonymKey, RowError, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{ConsentPolicy, Feedback};

/// Why an input row did not become part of the training set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The row could not be parsed.
    Malformed,
    /// The subject had no training consent at the snapshot.
    NoConsent,
    /// The subject's training consent was withdrawn at the snapshot or since.
    Withdrawn,
    /// The subject was erased (on the suppression list).
    Erased,
    /// The event happened after the snapshot.
    AfterSnapshot,
    /// Under the since-grant policy: the event predates the subject's grant.
    BeforeGrant,
    /// The event is older than the retention window.
    Retention,
    /// The event's kind is not used (not a rating in explicit mode, unweighted in implicit mode).
    ExcludedKind,
    /// In implicit mode, a rating below the positive threshold.
    BelowRatingThreshold,
    /// The item is not in the catalogue (the public item universe).
    UnknownItem,
    /// An exact duplicate (same subject, item, kind and time) of an earlier row.
    Duplicate,
    /// In explicit mode, an older rating of an item the subject rated again.
    Superseded,
    /// Over the per-subject contribution bound.
    OverContributionBound,
}

impl DropReason {
    /// The reason's snake_case name, as in reports (and in its JSON form).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoConsent => "no_consent",
            DropReason::Withdrawn => "withdrawn",
            DropReason::Erased => "erased",
            DropReason::AfterSnapshot => "after_snapshot",
            DropReason::BeforeGrant => "before_grant",
            DropReason::Retention => "retention",
            DropReason::ExcludedKind => "excluded_kind",
            DropReason::BelowRatingThreshold => "below_rating_threshold",
            DropReason::UnknownItem => "unknown_item",
            DropReason::Duplicate => "duplicate",
            DropReason::Superseded => "superseded",
            DropReason::OverContributionBound => "over_contribution_bound",
        }
    }

    /// Every reason, in report order.
    pub const ALL: [DropReason; 13] = [
        DropReason::Malformed,
        DropReason::NoConsent,
        DropReason::Withdrawn,
        DropReason::Erased,
        DropReason::AfterSnapshot,
        DropReason::BeforeGrant,
        DropReason::Retention,
        DropReason::ExcludedKind,
        DropReason::BelowRatingThreshold,
        DropReason::UnknownItem,
        DropReason::Duplicate,
        DropReason::Superseded,
        DropReason::OverContributionBound,
    ];
}

/// One input of an extraction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputSummary {
    /// File path, or `event-store:<db path>`.
    pub source: String,
    /// The format read.
    pub format: String,
    /// Rows read from it.
    pub rows: u64,
}

/// What an extraction read, kept and dropped. `rows_in` always equals
/// `events_kept` plus the sum of `dropped_events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExtractionReport {
    /// The hush version that made it.
    pub hush_version: String,
    /// When the extraction ran.
    pub created_at: Timestamp,
    /// The consent snapshot time T.
    pub snapshot_at: Timestamp,
    /// Consent policy used.
    pub policy: ConsentPolicy,
    /// Feedback mode.
    pub feedback: Feedback,
    /// Whether this was research data without a consent ledger.
    pub research_data: bool,
    /// The seed of per-subject sampling, for research runs; `None`: a
    /// secret from the operating system that was never written down.
    pub sampling_seed: Option<u64>,
    /// The catalogue the item universe came from (`None`: items seen in the rows).
    pub catalogue: Option<String>,
    /// Contribution bound (distinct items per subject).
    pub max_events_per_subject: Option<u32>,
    /// Retention window in days.
    pub retention_days: Option<u32>,
    /// The inputs read.
    pub inputs: Vec<InputSummary>,
    /// Rows read from all inputs.
    pub rows_in: u64,
    /// Events that made it into the training set.
    pub events_kept: u64,
    /// Distinct (subject, item) interactions in the training set.
    pub interactions: u64,
    /// Subjects in the training set.
    pub subjects: u64,
    /// Items in the training set.
    pub items: u64,
    /// Dropped rows by reason (every reason listed, zeros included).
    pub dropped_events: BTreeMap<DropReason, u64>,
    /// Subjects left out entirely by consent reason (no_consent, withdrawn, erased).
    pub dropped_subjects: BTreeMap<DropReason, u64>,
    /// The first malformed rows, with file, line and field.
    pub malformed_examples: Vec<RowError>,
}

impl ExtractionReport {
    /// Total rows dropped.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_events.values().sum()
    }

    /// HMAC-SHA-256 of the report's JSON under the store's pseudonym key,
    /// recorded in feature sets and models so the operator can trace a model
    /// to the exact extraction behind it.
    ///
    /// # Privacy
    /// The report holds exact counts (subjects, withdrawals, erasures). An
    /// unkeyed digest would let anyone holding a model confirm a guessed
    /// report, and with it those counts; keyed, only the key holder can.
    pub fn digest(&self, key: &PseudonymKey) -> String {
        let json = serde_json::to_string(self).expect("a report always serializes");
        key.pseudonymize(&format!("hush extraction report v1\n{json}")).to_hex()
    }
}

#[cfg(test)]
mod tests {
    use super::DropReason;

    #[test]
    fn names_are_the_json_names() {
        for reason in DropReason::ALL {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.name());
        }
    }
}

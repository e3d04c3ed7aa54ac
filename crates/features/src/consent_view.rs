//! Who may be trained on: the training-consent decision for every subject,
//! computed once from the ledger.

use std::collections::{HashMap, HashSet};

use rayon::slice::ParallelSliceMut;

use hush_consent::{Ledger, Pseudonym, Purpose, SuppressionTag, Timestamp};

use crate::{DropReason, ExtractConfig, Result};

/// The decision for one subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inclusion {
    /// The subject's events may be used from `window_start` up to the snapshot.
    Included {
        /// Earliest usable event time (`Timestamp::MIN` under the as-of-snapshot policy).
        window_start: Timestamp,
    },
    /// The subject is left out, for this reason.
    Excluded(DropReason),
}

#[derive(Clone, Copy, Debug)]
struct TrainingConsent {
    /// Start of the unbroken grant in force at the snapshot, if granted then.
    granted_since: Option<Timestamp>,
    /// Whether any decision exists at or before the snapshot.
    decided_by_snapshot: bool,
    /// Whether the latest decision up to `decided_at` is a withdrawal.
    withdrawn_since: bool,
}

/// Training consent of every subject in the ledger, as of a snapshot.
///
/// A subject is included only if their training consent is granted at the
/// snapshot T, they have not withdrawn it between T and the time of
/// extraction (a withdrawal stops all further processing, including this
/// one), and they are not erased.
#[derive(Debug)]
pub struct ConsentView {
    snapshot_at: Timestamp,
    research_data: bool,
    since_grant: bool,
    subjects: HashMap<Pseudonym, TrainingConsent, foldhash::fast::RandomState>,
    suppressed: HashSet<SuppressionTag>,
}

impl ConsentView {
    /// Reads the training history of every subject from the ledger.
    ///
    /// # Errors
    /// [`crate::Error::Consent`] if the ledger cannot be read.
    pub fn from_ledger(ledger: &Ledger, config: &ExtractConfig) -> Result<Self> {
        let _span = tracing::info_span!("consent_view").entered();
        let mut records: Vec<(Pseudonym, Timestamp, i64, bool)> = Vec::new();
        ledger.for_each_consent_decision(Purpose::Training, |subject, at, seq, granted| -> Result<()> {
            records.push((subject, at, seq, granted));
            Ok(())
        })?;
        // Per subject, by effective time, ties broken by ledger order: the same order `Ledger::status` uses.
        records.par_sort_unstable_by_key(|&(subject, at, seq, _)| (subject, at, seq));
        let mut subjects: HashMap<Pseudonym, TrainingConsent, foldhash::fast::RandomState> = HashMap::default();
        for (subject, effective_at, _, granted) in records {
            let entry = subjects.entry(subject).or_insert(TrainingConsent {
                granted_since: None,
                decided_by_snapshot: false,
                withdrawn_since: false,
            });
            if effective_at <= config.snapshot_at {
                entry.decided_by_snapshot = true;
                entry.granted_since = match (granted, entry.granted_since) {
                    (true, Some(start)) => Some(start),
                    (true, None) => Some(effective_at),
                    (false, _) => None,
                };
            }
            if effective_at <= config.decided_at {
                entry.withdrawn_since = !granted;
            }
        }
        Ok(ConsentView {
            snapshot_at: config.snapshot_at,
            research_data: config.research_data,
            since_grant: config.policy == crate::ConsentPolicy::SinceGrant,
            subjects,
            suppressed: ledger.suppression_tags()?,
        })
    }

    /// A view for research data that comes without a consent ledger: every
    /// subject is included. Only valid with `research_data` set.
    pub fn research(config: &ExtractConfig) -> Self {
        ConsentView {
            snapshot_at: config.snapshot_at,
            research_data: true,
            since_grant: false,
            subjects: HashMap::default(),
            suppressed: HashSet::new(),
        }
    }

    /// The snapshot time this view decides at.
    pub fn snapshot_at(&self) -> Timestamp {
        self.snapshot_at
    }

    /// Whether a subject may be trained on.
    pub fn decide(&self, subject: &Pseudonym) -> Inclusion {
        if self.research_data {
            return Inclusion::Included { window_start: Timestamp::MIN };
        }
        if !self.suppressed.is_empty() && self.suppressed.contains(&subject.suppression_tag()) {
            return Inclusion::Excluded(DropReason::Erased);
        }
        match self.subjects.get(subject) {
            None => Inclusion::Excluded(DropReason::NoConsent),
            Some(c) if !c.decided_by_snapshot => Inclusion::Excluded(DropReason::NoConsent),
            Some(c) => match c.granted_since {
                None => Inclusion::Excluded(DropReason::Withdrawn),
                Some(_) if c.withdrawn_since => Inclusion::Excluded(DropReason::Withdrawn),
                Some(start) => {
                    Inclusion::Included { window_start: if self.since_grant { start } else { Timestamp::MIN } }
                }
            },
        }
    }
}

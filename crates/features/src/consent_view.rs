//! Who may be trained on: the training-consent decision for every subject,
//! computed once from the ledger.

use std::collections::{HashMap, HashSet};

use rayon::slice::ParallelSliceMut;

use hush_consent::{rule, ConsentState, Decision, Ledger, Pseudonym, Purpose, SuppressionTag, Timestamp};

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
    /// Whether consent is withdrawn at `decided_at` (the moment of extraction).
    withdrawn_since: bool,
}

/// Training consent of every subject in the ledger, as of a snapshot.
///
/// A subject is included only if their training consent is granted at the
/// snapshot T, they have not withdrawn it between T and the time of
/// extraction (a withdrawal stops all further processing, including this
/// one), and they are not erased. "Granted at T" follows the consent rule of
/// [`hush_consent::rule`]: the latest recorded decision wins, a withdrawal
/// counts from when it was recorded (or its earlier effective time), and a
/// backdated grant never undoes a withdrawal that was in force at T.
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
        let mut records: Vec<(Pseudonym, Decision)> = Vec::new();
        ledger.for_each_consent_decision(Purpose::Training, |subject, decision| -> Result<()> {
            records.push((subject, decision));
            Ok(())
        })?;
        // Grouped per subject; the consent rule itself orders each subject's
        // decisions by ledger sequence, as `Ledger::status` does.
        records.par_sort_unstable_by_key(|&(subject, decision)| (subject, decision.seq));
        let mut subjects: HashMap<Pseudonym, TrainingConsent, foldhash::fast::RandomState> = HashMap::default();
        let now = hush_consent::Timestamp::now();
        let mut decisions: Vec<Decision> = Vec::new();
        for group in records.chunk_by(|a, b| a.0 == b.0) {
            decisions.clear();
            decisions.extend(group.iter().map(|&(_, d)| d));
            // As `Ledger::status` answers: a snapshot or decision time in the
            // present counts every recorded decision, whatever the clocks.
            let snapshot = rule::query_time(&decisions, config.snapshot_at, now);
            let decided = rule::query_time(&decisions, config.decided_at, now);
            let at_snapshot = rule::state_at(&decisions, snapshot);
            subjects.insert(
                group[0].0,
                TrainingConsent {
                    granted_since: rule::granted_since(&decisions, snapshot),
                    decided_by_snapshot: at_snapshot != ConsentState::NoRecord,
                    withdrawn_since: rule::state_at(&decisions, decided) == ConsentState::Withdrawn,
                },
            );
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

//! The streaming extraction pipeline.
//!
//! Rows are read one at a time; a subject's raw id is pseudonymized the
//! first time it is seen (and remembered in memory only, so each id is hashed
//! once), consent is decided once per subject, and each surviving event is
//! kept as a 32-byte record. [`Extractor::finish`] then sorts, removes
//! duplicates, merges events into (subject, item) interactions, applies the
//! contribution bound, and assigns dense indices.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use hush_consent::formats::{EventFormat, EventReader};
use hush_consent::{Event, EventKind, Ledger, Pseudonym, PseudonymKey, RowError, Timestamp};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::report::InputSummary;
use crate::{
    ConsentView, DropReason, Error, ExtractConfig, ExtractionReport, FeatureMeta, FeatureSet,
    Feedback, Inclusion, Interaction, Result,
};

/// How many malformed rows the report quotes in full.
const QUOTED_ERRORS: usize = 20;
/// Progress is reported every this many rows.
const PROGRESS_EVERY: u64 = 100_000;

/// A kept event, compact: 32 bytes, so ten million fit in 320 MB.
#[derive(Clone, Copy)]
struct Compact {
    subject: u32,
    item: u32,
    /// Input order, to keep each subject's interactions in the order they were read.
    seq: u32,
    kind: u16,
    value: f32,
    time: i64,
}

struct SubjectSlot {
    inclusion: Inclusion,
}

/// Turns inputs into a [`FeatureSet`]; see the module docs.
pub struct Extractor<'a> {
    config: &'a ExtractConfig,
    view: &'a ConsentView,
    key: &'a PseudonymKey,
    /// Raw id → slot; lives only in this process, never written anywhere.
    raw_slots: HashMap<String, u32>,
    pseudonym_slots: HashMap<Pseudonym, u32>,
    slots: Vec<SubjectSlot>,
    item_slots: HashMap<String, u32>,
    item_names: Vec<String>,
    kinds: HashMap<EventKind, u16>,
    events: Vec<Compact>,
    rows_in: u64,
    dropped: BTreeMap<DropReason, u64>,
    dropped_subjects: BTreeMap<DropReason, u64>,
    malformed_examples: Vec<RowError>,
    inputs: Vec<InputSummary>,
}

impl<'a> Extractor<'a> {
    /// A new extraction under `config`, deciding consent with `view` and
    /// pseudonymizing raw ids with `key`.
    pub fn new(config: &'a ExtractConfig, view: &'a ConsentView, key: &'a PseudonymKey) -> Self {
        Extractor {
            config,
            view,
            key,
            raw_slots: HashMap::new(),
            pseudonym_slots: HashMap::new(),
            slots: Vec::new(),
            item_slots: HashMap::new(),
            item_names: Vec::new(),
            kinds: HashMap::new(),
            events: Vec::new(),
            rows_in: 0,
            dropped: DropReason::ALL.iter().map(|&r| (r, 0)).collect(),
            dropped_subjects: [
                DropReason::NoConsent,
                DropReason::Withdrawn,
                DropReason::Erased,
            ]
            .into_iter()
            .map(|r| (r, 0))
            .collect(),
            malformed_examples: Vec::new(),
            inputs: Vec::new(),
        }
    }

    /// Reads every row of an event file.
    ///
    /// `progress` receives the total rows read so far, every 100,000 rows.
    ///
    /// # Errors
    /// [`Error::Consent`] for I/O, a bad header, or (in strict mode) the first malformed row.
    pub fn add_file(
        &mut self,
        path: &Path,
        format: &EventFormat,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let _span = tracing::info_span!("extract_file", format = format.name()).entered();
        let mut reader = EventReader::open(path, format)?;
        while let Some(row) = reader.next_row()? {
            self.count_row(progress)?;
            match row {
                Ok(raw) => {
                    let slot = self.slot_for_raw(&raw.subject_id);
                    self.consider(slot, raw.event)?;
                }
                Err(error) => self.malformed(error)?,
            }
        }
        self.inputs.push(InputSummary {
            source: path.display().to_string(),
            format: format.name().into(),
            rows: reader.rows_read(),
        });
        Ok(())
    }

    /// Reads every event of the event store.
    ///
    /// # Errors
    /// [`Error::Consent`] if the store cannot be read.
    pub fn add_store(&mut self, ledger: &Ledger, progress: &mut dyn FnMut(u64)) -> Result<()> {
        let _span = tracing::info_span!("extract_store").entered();
        let before = self.rows_in;
        ledger.for_each_event(|e| -> Result<()> {
            self.count_row(progress)?;
            let slot = self.slot_for_pseudonym(e.subject);
            self.consider(slot, e.event)
        })?;
        self.inputs.push(InputSummary {
            source: format!("event-store:{}", ledger.path().display()),
            format: "event-store".into(),
            rows: self.rows_in - before,
        });
        Ok(())
    }

    fn count_row(&mut self, progress: &mut dyn FnMut(u64)) -> Result<()> {
        self.rows_in += 1;
        if self.rows_in > u64::from(u32::MAX) {
            return Err(Error::TooManyEvents {
                max: u64::from(u32::MAX),
            });
        }
        if self.rows_in % PROGRESS_EVERY == 0 {
            progress(self.rows_in);
        }
        Ok(())
    }

    fn malformed(&mut self, error: RowError) -> Result<()> {
        if self.config.strict {
            return Err(hush_consent::Error::Row(error).into());
        }
        self.drop_row(DropReason::Malformed);
        if self.malformed_examples.len() < QUOTED_ERRORS {
            self.malformed_examples.push(error);
        }
        Ok(())
    }

    fn drop_row(&mut self, reason: DropReason) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    fn slot_for_raw(&mut self, raw_id: &str) -> u32 {
        if let Some(&slot) = self.raw_slots.get(raw_id) {
            return slot;
        }
        let slot = self.slot_for_pseudonym(self.key.pseudonymize(raw_id));
        self.raw_slots.insert(raw_id.to_string(), slot);
        slot
    }

    fn slot_for_pseudonym(&mut self, subject: Pseudonym) -> u32 {
        if let Some(&slot) = self.pseudonym_slots.get(&subject) {
            return slot;
        }
        let inclusion = self.view.decide(&subject);
        if let Inclusion::Excluded(reason) = inclusion {
            *self.dropped_subjects.entry(reason).or_default() += 1;
        }
        let slot = self.slots.len() as u32;
        self.slots.push(SubjectSlot { inclusion });
        self.pseudonym_slots.insert(subject, slot);
        slot
    }

    /// Applies the per-event rules in a fixed order; the first that fails names the drop reason.
    fn consider(&mut self, slot: u32, event: Event) -> Result<()> {
        let config = self.config;
        let window_start = match self.slots[slot as usize].inclusion {
            Inclusion::Excluded(reason) => {
                self.drop_row(reason);
                return Ok(());
            }
            Inclusion::Included { window_start } => window_start,
        };
        if event.at > config.snapshot_at {
            self.drop_row(DropReason::AfterSnapshot);
            return Ok(());
        }
        if event.at < window_start {
            self.drop_row(DropReason::BeforeGrant);
            return Ok(());
        }
        if let Some(days) = config.retention_days {
            if event.at < config.snapshot_at.plus_days(-i64::from(days)) {
                self.drop_row(DropReason::Retention);
                return Ok(());
            }
        }
        let value = match (config.feedback, &event.kind) {
            (Feedback::Explicit, EventKind::Rating) => Ok(event.value),
            (Feedback::Explicit, _) => Err(DropReason::ExcludedKind),
            (Feedback::Implicit, EventKind::Rating)
                if event.value < config.rating_positive_threshold =>
            {
                Err(DropReason::BelowRatingThreshold)
            }
            (Feedback::Implicit, kind) => config
                .kind_weights
                .get(kind)
                .copied()
                .ok_or(DropReason::ExcludedKind),
        };
        let value = match value {
            Ok(v) => v,
            Err(reason) => {
                self.drop_row(reason);
                return Ok(());
            }
        };
        let item = match self.item_slots.get(&event.item) {
            Some(&i) => i,
            None => {
                let i = self.item_names.len() as u32;
                self.item_slots.insert(event.item.clone(), i);
                self.item_names.push(event.item);
                i
            }
        };
        let next_kind = self.kinds.len() as u16;
        let kind = *self.kinds.entry(event.kind).or_insert(next_kind);
        self.events.push(Compact {
            subject: slot,
            item,
            seq: (self.rows_in - 1) as u32,
            kind,
            value,
            time: event.at.as_unix_seconds(),
        });
        Ok(())
    }

    /// Sorts, deduplicates, merges, bounds and indexes what was read.
    ///
    /// # Errors
    /// [`Error::TooManyMalformed`] if the inputs had too many malformed rows.
    pub fn finish(mut self, now: Timestamp) -> Result<(FeatureSet, ExtractionReport)> {
        let _span = tracing::info_span!("extract_finish", events = self.events.len()).entered();
        let malformed = self.dropped[&DropReason::Malformed];
        if self.rows_in > 0
            && malformed as f64 > self.config.max_malformed_fraction * self.rows_in as f64
        {
            return Err(Error::TooManyMalformed {
                bad: malformed,
                total: self.rows_in,
                allowed: self.config.max_malformed_fraction,
                first: Box::new(self.malformed_examples[0].clone()),
            });
        }
        let mut events = std::mem::take(&mut self.events);
        events.sort_unstable_by_key(|e| (e.subject, e.item, e.time, e.kind, e.seq));

        let mut rows: Vec<Vec<Interaction>> = Vec::new();
        let mut events_kept = 0u64;
        let mut item_dense: Vec<u32> = vec![u32::MAX; self.item_names.len()];
        let mut items: Vec<String> = Vec::new();
        let mut start = 0;
        while start < events.len() {
            let subject = events[start].subject;
            let end = start + events[start..].partition_point(|e| e.subject == subject);
            let mut merged = self.merge_subject(&events[start..end]);
            self.bound_contribution(subject, &mut merged);
            merged.sort_unstable_by_key(|m| m.first_seq);
            if !merged.is_empty() {
                let row = merged
                    .iter()
                    .map(|m| {
                        events_kept += u64::from(m.events);
                        let slot = m.interaction.item as usize;
                        if item_dense[slot] == u32::MAX {
                            item_dense[slot] = items.len() as u32;
                            items.push(std::mem::take(&mut self.item_names[slot]));
                        }
                        Interaction {
                            item: item_dense[slot],
                            ..m.interaction
                        }
                    })
                    .collect();
                rows.push(row);
            }
            start = end;
        }
        drop(events);

        let report = ExtractionReport {
            hush_version: env!("CARGO_PKG_VERSION").into(),
            created_at: now,
            snapshot_at: self.config.snapshot_at,
            policy: self.config.policy,
            feedback: self.config.feedback,
            research_data: self.config.research_data,
            seed: self.config.seed,
            max_events_per_subject: self.config.max_events_per_subject,
            retention_days: self.config.retention_days,
            inputs: self.inputs,
            rows_in: self.rows_in,
            events_kept,
            interactions: rows.iter().map(|r| r.len() as u64).sum(),
            subjects: rows.len() as u64,
            items: items.len() as u64,
            dropped_events: self.dropped,
            dropped_subjects: self.dropped_subjects,
            malformed_examples: self.malformed_examples,
        };
        debug_assert_eq!(report.rows_in, report.events_kept + report.dropped_total());
        let meta = FeatureMeta {
            feedback: self.config.feedback,
            snapshot_at_ms: self.config.snapshot_at.as_unix_millis(),
            policy: self.config.policy,
            research_only: self.config.research_data,
            max_events_per_subject: self.config.max_events_per_subject,
            seed: self.config.seed,
            report_digest: report.digest(),
            created_at_ms: now.as_unix_millis(),
            hush_version: env!("CARGO_PKG_VERSION").into(),
            split: None,
        };
        tracing::info!(
            subjects = report.subjects,
            items = report.items,
            interactions = report.interactions,
            dropped = report.dropped_total(),
            "extraction finished"
        );
        Ok((FeatureSet::from_subject_rows(meta, items, &rows), report))
    }

    /// Merges one subject's sorted events into interactions, counting duplicates and superseded ratings.
    fn merge_subject(&mut self, events: &[Compact]) -> Vec<Merged> {
        let mut merged: Vec<Merged> = Vec::new();
        let mut previous: Option<&Compact> = None;
        for e in events {
            let same_item = previous.is_some_and(|p| p.item == e.item);
            if previous.is_some_and(|p| same_item && p.time == e.time && p.kind == e.kind) {
                self.drop_row(DropReason::Duplicate);
                continue;
            }
            previous = Some(e);
            match merged.last_mut() {
                Some(m) if same_item => match self.config.feedback {
                    // Sorted by time: the later rating replaces the earlier one.
                    Feedback::Explicit => {
                        self.drop_row(DropReason::Superseded);
                        m.interaction.value = e.value;
                        m.interaction.time = e.time;
                        m.first_seq = m.first_seq.min(e.seq);
                    }
                    Feedback::Implicit => {
                        m.interaction.value += e.value;
                        m.interaction.time = m.interaction.time.max(e.time);
                        m.first_seq = m.first_seq.min(e.seq);
                        m.events += 1;
                    }
                },
                _ => merged.push(Merged {
                    interaction: Interaction {
                        item: e.item,
                        value: e.value,
                        time: e.time,
                    },
                    first_seq: e.seq,
                    events: 1,
                }),
            }
        }
        merged
    }

    /// Keeps at most `max_events_per_subject` interactions, chosen uniformly at
    /// random with an RNG seeded by (seed, subject slot).
    ///
    /// # Privacy
    /// This is what bounds one subject's influence on the model: with at most
    /// k interactions each, the sensitivities of the per-item statistics in
    /// DP-ALS are finite and stated in terms of k. Sampling uniformly (rather
    /// than keeping the most recent) avoids a bias towards recent tastes.
    fn bound_contribution(&mut self, subject: u32, merged: &mut Vec<Merged>) {
        let Some(bound) = self.config.max_events_per_subject.map(|b| b as usize) else {
            return;
        };
        if merged.len() <= bound {
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.config.seed, u64::from(subject)));
        let mut keep = vec![false; merged.len()];
        for i in rand::seq::index::sample(&mut rng, merged.len(), bound) {
            keep[i] = true;
        }
        let mut index = 0;
        merged.retain(|m| {
            let kept = keep[index];
            index += 1;
            if !kept {
                *self
                    .dropped
                    .entry(DropReason::OverContributionBound)
                    .or_default() += u64::from(m.events);
            }
            kept
        });
    }
}

struct Merged {
    interaction: Interaction,
    first_seq: u32,
    events: u32,
}

/// SplitMix64 finalizer over (seed, subject): independent streams per subject.
fn mix(seed: u64, subject: u64) -> u64 {
    let mut z = seed ^ subject.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

//! The streaming extraction pipeline.
//!
//! Rows are read one at a time; a subject's raw id is pseudonymized the
//! first time it is seen (and remembered in memory only, so each id is hashed
//! once), consent is decided once per subject, and each surviving event is
//! kept as a 32-byte record. [`Extractor::finish`] then sorts, removes
//! duplicates, merges events into (subject, item) interactions, applies the
//! contribution bound, and assigns dense indices.

use std::collections::{BTreeMap, HashMap};

use rayon::iter::{IntoParallelIterator, ParallelIterator};
use std::path::Path;

use hush_consent::{EventKind, Ledger, Pseudonym, PseudonymKey, RowError, Timestamp};
use hush_formats::{EventFormat, EventReader, FieldContext, RawFields};

use crate::report::InputSummary;
use crate::{
    ConsentView, DropReason, Error, ExtractConfig, ExtractionReport, FeatureMeta, FeatureSet, Feedback, Inclusion,
    Interaction, Result, SubjectKey,
};

/// How many malformed rows the report quotes in full.
const QUOTED_ERRORS: usize = 20;
/// Progress is reported every this many rows.
const PROGRESS_EVERY: u64 = 100_000;

/// Hash maps keyed by input strings: foldhash is several times faster than
/// SipHash on short keys, and these maps are on the per-row hot path.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

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

/// Rows handed from the parser thread to the extractor, with their strings in one buffer.
struct RowBatch {
    strings: String,
    rows: Vec<BatchRow>,
    /// Whether this is the last batch of the file.
    last: bool,
    /// Rows read from the file so far.
    rows_read: u64,
}

/// A row as the parser thread hands it over: split into fields, not yet checked.
enum BatchRow {
    Fields {
        /// `None` when the subject is the same as the previous row's: exports
        /// are often grouped by customer, and this skips a hash lookup per row.
        subject: Option<std::ops::Range<usize>>,
        /// Item, kind, value, timestamp and event id (its form checked as on
        /// import; extraction reads a file as it is and does not deduplicate
        /// by it, as import does against the store).
        rest: [std::ops::Range<usize>; 5],
        line: u64,
    },
    Malformed(RowError),
}

impl RowBatch {
    const ROWS: usize = 8192;

    fn text(&self, range: &std::ops::Range<usize>) -> &str {
        &self.strings[range.clone()]
    }

    fn push_str(&mut self, text: &str) -> std::ops::Range<usize> {
        let start = self.strings.len();
        self.strings.push_str(text);
        start..self.strings.len()
    }
}

/// The parser thread: reads rows into batches until the end of the file, a
/// fatal error, or the extractor hanging up.
///
/// Consumed batches come back through `recycled`, so the same few buffers
/// circulate instead of fresh memory being faulted in for every batch.
fn parse_batches(
    mut reader: EventReader,
    sender: std::sync::mpsc::SyncSender<hush_formats::Result<RowBatch>>,
    recycled: std::sync::mpsc::Receiver<RowBatch>,
) {
    let mut previous_subject = String::new();
    let mut first = true;
    loop {
        let mut batch = match recycled.try_recv() {
            Ok(mut batch) => {
                batch.strings.clear();
                batch.rows.clear();
                batch
            }
            Err(_) => RowBatch {
                strings: String::with_capacity(RowBatch::ROWS * 24),
                rows: Vec::with_capacity(RowBatch::ROWS),
                last: false,
                rows_read: 0,
            },
        };
        while batch.rows.len() < RowBatch::ROWS {
            match reader.next_fields() {
                Ok(None) => {
                    batch.last = true;
                    break;
                }
                Ok(Some(Ok(fields))) => {
                    let [subject_id, item, kind, value, timestamp] = fields.texts;
                    let subject = if subject_id == previous_subject && !first {
                        None
                    } else {
                        previous_subject.clear();
                        previous_subject.push_str(subject_id);
                        first = false;
                        Some(batch.push_str(subject_id))
                    };
                    let rest = [
                        batch.push_str(item),
                        batch.push_str(kind),
                        batch.push_str(value),
                        batch.push_str(timestamp),
                        batch.push_str(fields.event_id),
                    ];
                    batch.rows.push(BatchRow::Fields { subject, rest, line: fields.line });
                }
                Ok(Some(Err(error))) => batch.rows.push(BatchRow::Malformed(error)),
                Err(fatal) => {
                    let _ = sender.send(Err(fatal));
                    return;
                }
            }
        }
        batch.rows_read = reader.rows_read();
        let last = batch.last;
        if sender.send(Ok(batch)).is_err() || last {
            return;
        }
    }
}

struct SubjectSlot {
    inclusion: Inclusion,
    /// The subject's key, for included subjects only.
    key: Option<SubjectKey>,
}

/// Turns inputs into a [`FeatureSet`]; see the module docs.
pub struct Extractor<'a> {
    config: &'a ExtractConfig,
    view: &'a ConsentView,
    key: &'a PseudonymKey,
    /// Raw id → slot; lives only in this process, never written anywhere.
    raw_slots: FastMap<String, u32>,
    pseudonym_slots: FastMap<Pseudonym, u32>,
    slots: Vec<SubjectSlot>,
    /// Item id → slot: the catalogue index when there is a catalogue.
    item_slots: FastMap<String, u32>,
    item_names: Vec<String>,
    /// Whether `item_slots` is the fixed catalogue (unknown items are dropped).
    fixed_items: bool,
    /// Codes of kinds beyond the four built-in ones (which are 0..=3).
    custom_kinds: FastMap<String, u16>,
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
        let (item_slots, item_names) = match &config.catalogue {
            Some(c) => (c.items.iter().enumerate().map(|(i, id)| (id.clone(), i as u32)).collect(), c.items.clone()),
            None => (FastMap::default(), Vec::new()),
        };
        Extractor {
            config,
            view,
            key,
            raw_slots: FastMap::default(),
            pseudonym_slots: FastMap::default(),
            slots: Vec::new(),
            item_slots,
            item_names,
            fixed_items: config.catalogue.is_some(),
            custom_kinds: FastMap::default(),
            events: Vec::new(),
            rows_in: 0,
            dropped: DropReason::ALL.iter().map(|&r| (r, 0)).collect(),
            dropped_subjects: [DropReason::NoConsent, DropReason::Withdrawn, DropReason::Erased]
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
    /// [`Error::Formats`] for I/O, a bad header, or (in strict mode) the first malformed row.
    pub fn add_file(&mut self, path: &Path, format: &EventFormat, progress: &mut dyn FnMut(u64)) -> Result<()> {
        let _span = tracing::info_span!("extract_file", format = format.name()).entered();
        let reader = EventReader::open(path, format)?;
        // Parsing runs on its own thread, handing over batches, while this
        // thread interns ids and applies the consent rules: the two halves
        // take similar time, so the pipeline nearly halves the wall time.
        let rows = std::thread::scope(|scope| -> Result<u64> {
            let (sender, batches) = std::sync::mpsc::sync_channel::<hush_formats::Result<RowBatch>>(8);
            let (recycle, recycled) = std::sync::mpsc::channel::<RowBatch>();
            let context = reader.field_context().clone();
            scope.spawn(move || parse_batches(reader, sender, recycled));
            let mut last_slot: Option<u32> = None;
            for batch in batches {
                let batch = batch?;
                for row in &batch.rows {
                    self.count_row(progress)?;
                    match row {
                        BatchRow::Fields { subject, rest, line } => {
                            let [item, kind, value, timestamp, event_id] = rest;
                            let fields = RawFields {
                                texts: [
                                    subject.as_ref().map_or("", |s| batch.text(s)),
                                    batch.text(item),
                                    batch.text(kind),
                                    batch.text(value),
                                    batch.text(timestamp),
                                ],
                                event_id: batch.text(event_id),
                                line: *line,
                            };
                            let slot = match (subject, last_slot) {
                                (None, Some(slot)) => slot,
                                // (None, None): the same subject as a previous row whose id was invalid.
                                _ => match context.subject(&fields) {
                                    Ok(subject_id) => self.slot_for_raw(subject_id),
                                    Err(error) => {
                                        last_slot = None;
                                        self.malformed(error)?;
                                        continue;
                                    }
                                },
                            };
                            last_slot = Some(slot);
                            // Rows of excluded subjects are dropped unparsed: they are not ours to process.
                            if let Inclusion::Excluded(reason) = self.slots[slot as usize].inclusion {
                                self.drop_row(reason);
                                continue;
                            }
                            match context.parse_after_subject(&fields) {
                                Ok(raw) => self.consider(slot, raw.item, raw.kind, raw.value, raw.at)?,
                                Err(error) => self.malformed(error)?,
                            }
                        }
                        BatchRow::Malformed(error) => self.malformed(error.clone())?,
                    }
                }
                if batch.last {
                    return Ok(batch.rows_read);
                }
                // The parser may have finished already; then nobody needs the buffer back.
                let _ = recycle.send(batch);
            }
            Err(hush_formats::Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other("the parser thread stopped unexpectedly"),
            }
            .into())
        })?;
        self.inputs.push(InputSummary { source: path.display().to_string(), format: format.name().into(), rows });
        Ok(())
    }

    /// Reads in-memory rows (a notebook's DataFrame or Arrow table) exactly
    /// as the rows of a file: the same subject check, the same field parsing
    /// and the same consent rules; `source` names them in the report.
    ///
    /// # Errors
    /// As [`Extractor::add_file`]: in strict mode the first malformed row,
    /// named by `context`'s label, its 1-based row number and its field.
    pub fn add_rows<'r>(
        &mut self,
        source: &str,
        context: &FieldContext,
        rows: impl IntoIterator<Item = RawFields<'r>>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let _span = tracing::info_span!("extract_rows").entered();
        let before = self.rows_in;
        for fields in rows {
            self.count_row(progress)?;
            let slot = match context.subject(&fields) {
                Ok(subject_id) => self.slot_for_raw(subject_id),
                Err(error) => {
                    self.malformed(error)?;
                    continue;
                }
            };
            // Rows of excluded subjects are dropped unparsed, as in files.
            if let Inclusion::Excluded(reason) = self.slots[slot as usize].inclusion {
                self.drop_row(reason);
                continue;
            }
            match context.parse_after_subject(&fields) {
                Ok(raw) => self.consider(slot, raw.item, raw.kind, raw.value, raw.at)?,
                Err(error) => self.malformed(error)?,
            }
        }
        self.inputs.push(InputSummary {
            source: source.to_string(),
            format: "rows".into(),
            rows: self.rows_in - before,
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
            self.consider(slot, &e.event.item, e.event.kind, e.event.value, e.event.at)
        })?;
        self.inputs.push(InputSummary {
            source: format!("event-store:{}", ledger.location()),
            format: "event-store".into(),
            rows: self.rows_in - before,
        });
        Ok(())
    }

    fn count_row(&mut self, progress: &mut dyn FnMut(u64)) -> Result<()> {
        self.rows_in += 1;
        if self.rows_in > u64::from(u32::MAX) {
            return Err(Error::TooManyEvents { max: u64::from(u32::MAX) });
        }
        if self.rows_in.is_multiple_of(PROGRESS_EVERY) {
            progress(self.rows_in);
        }
        Ok(())
    }

    fn malformed(&mut self, error: RowError) -> Result<()> {
        if self.config.strict {
            return Err(hush_formats::Error::Row(error).into());
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
        let key = match inclusion {
            Inclusion::Excluded(reason) => {
                *self.dropped_subjects.entry(reason).or_default() += 1;
                None
            }
            Inclusion::Included { .. } => Some(self.config.secret.key(&subject)),
        };
        // A slot is only where this run keeps the subject's events: nothing
        // random is keyed by it, so excluded subjects influence nobody.
        let slot = self.slots.len() as u32;
        self.slots.push(SubjectSlot { inclusion, key });
        self.pseudonym_slots.insert(subject, slot);
        slot
    }

    /// Applies the per-event rules in a fixed order; the first that fails names the drop reason.
    fn consider(&mut self, slot: u32, item: &str, kind: EventKind, value: f32, at: Timestamp) -> Result<()> {
        let config = self.config;
        let window_start = match self.slots[slot as usize].inclusion {
            Inclusion::Excluded(reason) => {
                self.drop_row(reason);
                return Ok(());
            }
            Inclusion::Included { window_start } => window_start,
        };
        if at > config.snapshot_at {
            self.drop_row(DropReason::AfterSnapshot);
            return Ok(());
        }
        if at < window_start {
            self.drop_row(DropReason::BeforeGrant);
            return Ok(());
        }
        if let Some(days) = config.retention_days {
            if at < config.snapshot_at.plus_days(-i64::from(days)) {
                self.drop_row(DropReason::Retention);
                return Ok(());
            }
        }
        let value = config.weighting.weigh(config.feedback, &kind, value);
        let value = match value {
            Ok(v) => v,
            Err(reason) => {
                self.drop_row(reason);
                return Ok(());
            }
        };
        let item = match self.item_slots.get(item) {
            Some(&i) => i,
            None if self.fixed_items => {
                self.drop_row(DropReason::UnknownItem);
                return Ok(());
            }
            None => {
                let i = self.item_names.len() as u32;
                self.item_slots.insert(item.to_string(), i);
                self.item_names.push(item.to_string());
                i
            }
        };
        let kind = self.kind_code(kind);
        self.events.push(Compact {
            subject: slot,
            item,
            seq: (self.rows_in - 1) as u32,
            kind,
            value,
            time: at.as_unix_seconds(),
        });
        Ok(())
    }

    /// A small code per kind, for duplicate detection in the compact records.
    fn kind_code(&mut self, kind: EventKind) -> u16 {
        match kind {
            EventKind::View => 0,
            EventKind::Cart => 1,
            EventKind::Purchase => 2,
            EventKind::Rating => 3,
            EventKind::Other(name) => {
                let next = 4 + self.custom_kinds.len() as u16;
                *self.custom_kinds.entry(name).or_insert(next)
            }
        }
    }

    /// The item universe in canonical order: the catalogue as given
    /// (sorted, items nobody touched included), or else the items seen,
    /// sorted. Never first-appearance order, which would encode who came
    /// first. Returns each item slot's dense index (`u32::MAX` for an item
    /// left out) and the item names by dense index.
    fn item_universe(&mut self, subjects: &[(SubjectKey, SubjectOutcome)]) -> (Vec<u32>, Vec<String>) {
        let item_dense: Vec<u32> = if self.fixed_items {
            (0..self.item_names.len() as u32).collect()
        } else {
            let mut seen = vec![false; self.item_names.len()];
            for (_, outcome) in subjects {
                for m in &outcome.merged {
                    seen[m.interaction.item as usize] = true;
                }
            }
            let mut order: Vec<u32> = (0..self.item_names.len() as u32).filter(|&i| seen[i as usize]).collect();
            order.sort_unstable_by(|&a, &b| self.item_names[a as usize].cmp(&self.item_names[b as usize]));
            let mut dense = vec![u32::MAX; self.item_names.len()];
            for (rank, &slot) in order.iter().enumerate() {
                dense[slot as usize] = rank as u32;
            }
            dense
        };
        let mut items: Vec<String> = vec![String::new(); item_dense.iter().filter(|&&d| d != u32::MAX).count()];
        for (slot, &d) in item_dense.iter().enumerate() {
            if d != u32::MAX {
                items[d as usize] = std::mem::take(&mut self.item_names[slot]);
            }
        }
        (item_dense, items)
    }

    /// Sorts, deduplicates, merges, bounds and indexes what was read.
    ///
    /// # Errors
    /// [`Error::TooManyMalformed`] if the inputs had too many malformed rows.
    pub fn finish(mut self, now: Timestamp) -> Result<(FeatureSet, ExtractionReport)> {
        let _span = tracing::info_span!("extract_finish", events = self.events.len()).entered();
        let malformed = self.dropped[&DropReason::Malformed];
        if self.rows_in > 0 && malformed as f64 > self.config.max_malformed_fraction * self.rows_in as f64 {
            return Err(Error::TooManyMalformed {
                bad: malformed,
                total: self.rows_in,
                allowed: self.config.max_malformed_fraction,
                first: Box::new(self.malformed_examples[0].clone()),
            });
        }
        let mut events = group_by_subject(std::mem::take(&mut self.events), self.slots.len());
        let config = self.config;
        // Each subject's events are independent: sort, merge and bound them in parallel.
        let slots = &self.slots;
        let names = &self.item_names;
        let subjects: Vec<(SubjectKey, SubjectOutcome)> = subject_runs(&mut events)
            .into_par_iter()
            .map(|run| {
                let key = slots[run[0].subject as usize].key.expect("only included subjects have events");
                (key, process_subject(config, key, names, run))
            })
            .collect();
        drop(events);

        let (item_dense, items) = self.item_universe(&subjects);
        let (rows, keys, events_kept) = canonical_rows(subjects, &item_dense, &mut self.dropped);

        let report = ExtractionReport {
            hush_version: env!("CARGO_PKG_VERSION").into(),
            created_at: now,
            snapshot_at: self.config.snapshot_at,
            policy: self.config.policy,
            feedback: self.config.feedback,
            research_data: self.config.research_data,
            sampling_seed: self.config.sampling_seed,
            catalogue: self.config.catalogue.as_ref().map(|c| c.source.clone()),
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
            sampling_seeded: self.config.secret.is_seeded(),
            catalogue: report.catalogue.clone(),
            report_digest: report.digest(self.key),
            created_at_ms: now.as_unix_millis(),
            hush_version: env!("CARGO_PKG_VERSION").into(),
            split: None,
            weighting: self.config.weighting.clone(),
        };
        tracing::info!(
            subjects = report.subjects,
            items = report.items,
            interactions = report.interactions,
            dropped = report.dropped_total(),
            "extraction finished"
        );
        Ok((FeatureSet::from_keyed_rows(meta, items, &rows, keys), report))
    }
}

/// The rows of the kept subjects, in subject-key order, each in item order,
/// with their items renumbered densely; adds each subject's dropped counts
/// to `dropped`. Returns the rows, their subjects' keys and the events kept.
fn canonical_rows(
    subjects: Vec<(SubjectKey, SubjectOutcome)>,
    item_dense: &[u32],
    dropped: &mut BTreeMap<DropReason, u64>,
) -> (Vec<Vec<Interaction>>, Vec<SubjectKey>, u64) {
    // Subjects in key order: their order sets the floating-point summation
    // order in training, and the input's row order must not show there.
    let mut subjects = subjects;
    subjects.sort_unstable_by_key(|(key, _)| *key);
    let mut rows: Vec<Vec<Interaction>> = Vec::new();
    let mut keys: Vec<SubjectKey> = Vec::new();
    let mut events_kept = 0u64;
    for (key, outcome) in subjects {
        for (reason, count) in [
            (DropReason::Duplicate, outcome.duplicates),
            (DropReason::Superseded, outcome.superseded),
            (DropReason::OverContributionBound, outcome.over_bound),
        ] {
            *dropped.entry(reason).or_default() += count;
        }
        if outcome.merged.is_empty() {
            continue;
        }
        let row = outcome
            .merged
            .iter()
            .map(|m| {
                events_kept += u64::from(m.events);
                Interaction { item: item_dense[m.interaction.item as usize], ..m.interaction }
            })
            .collect::<Vec<_>>();
        // Canonical order (by item), so the input's row order shows nowhere downstream.
        let mut row = row;
        row.sort_unstable_by_key(|i| i.item);
        rows.push(row);
        keys.push(key);
    }
    (rows, keys, events_kept)
}

struct Merged {
    interaction: Interaction,
    events: u32,
}

/// What one subject's events became.
#[derive(Default)]
struct SubjectOutcome {
    merged: Vec<Merged>,
    duplicates: u64,
    superseded: u64,
    over_bound: u64,
}

/// Groups events by subject, keeping input order within each subject.
///
/// Exports are often already grouped (by customer, as MovieLens is by user),
/// and then this is one linear check; otherwise a counting sort regroups them
/// in two linear passes.
fn group_by_subject(events: Vec<Compact>, subjects: usize) -> Vec<Compact> {
    if events.windows(2).all(|w| w[0].subject <= w[1].subject) {
        return events;
    }
    let mut next = vec![0usize; subjects + 1];
    for e in &events {
        next[e.subject as usize + 1] += 1;
    }
    for i in 1..next.len() {
        next[i] += next[i - 1];
    }
    let mut grouped = vec![Compact { subject: 0, item: 0, seq: 0, kind: 0, value: 0.0, time: 0 }; events.len()];
    for e in events {
        let slot = &mut next[e.subject as usize];
        grouped[*slot] = e;
        *slot += 1;
    }
    grouped
}

/// Splits grouped events into one run per subject.
fn subject_runs(mut events: &mut [Compact]) -> Vec<&mut [Compact]> {
    let mut runs = Vec::new();
    while !events.is_empty() {
        let subject = events[0].subject;
        // Runs are short: a linear scan beats a binary search over the whole remainder.
        let len = events.iter().position(|e| e.subject != subject).unwrap_or(events.len());
        let (run, rest) = events.split_at_mut(len);
        runs.push(run);
        events = rest;
    }
    runs
}

/// Sorts, deduplicates, merges and bounds one subject's events.
fn process_subject(
    config: &ExtractConfig,
    key: SubjectKey,
    names: &[String],
    events: &mut [Compact],
) -> SubjectOutcome {
    events.sort_unstable_by_key(|e| (e.item, e.time, e.kind, e.seq));
    let mut outcome = SubjectOutcome::default();
    let mut previous: Option<&Compact> = None;
    for e in events.iter() {
        let same_item = previous.is_some_and(|p| p.item == e.item);
        if previous.is_some_and(|p| same_item && p.time == e.time && p.kind == e.kind) {
            outcome.duplicates += 1;
            continue;
        }
        previous = Some(e);
        match outcome.merged.last_mut() {
            Some(m) if same_item => match config.feedback {
                // Sorted by time: the later rating replaces the earlier one.
                Feedback::Explicit => {
                    outcome.superseded += 1;
                    m.interaction.value = e.value;
                    m.interaction.time = e.time;
                }
                Feedback::Implicit => {
                    m.interaction.value += e.value;
                    m.interaction.time = m.interaction.time.max(e.time);
                    m.events += 1;
                }
            },
            _ => outcome
                .merged
                .push(Merged { interaction: Interaction { item: e.item, value: e.value, time: e.time }, events: 1 }),
        }
    }
    outcome.over_bound = bound_contribution(config, key, names, &mut outcome.merged);
    outcome
}

/// Keeps at most `max_events_per_subject` interactions, chosen uniformly at
/// random with the subject's own key; returns the events dropped.
///
/// # Privacy
/// This is what bounds one subject's influence on the model: with at most
/// k interactions each, the sensitivities of the per-item statistics in
/// DP-ALS are finite and stated in terms of k. Sampling uniformly (rather
/// than keeping the most recent) avoids a bias towards recent tastes.
fn bound_contribution(config: &ExtractConfig, key: SubjectKey, names: &[String], merged: &mut Vec<Merged>) -> u64 {
    let Some(bound) = config.max_events_per_subject.map(|b| b as usize) else { return 0 };
    if merged.len() <= bound {
        return 0;
    }
    // Positions are sampled in item-name order: item slots follow the order
    // items were first read, which other subjects decide, and the sample
    // must depend on this subject's data and key alone.
    let mut by_name: Vec<usize> = (0..merged.len()).collect();
    by_name.sort_unstable_by(|&a, &b| {
        names[merged[a].interaction.item as usize].cmp(&names[merged[b].interaction.item as usize])
    });
    let mut rng = key.rng(b"extract-bound", 0);
    let mut keep = vec![false; merged.len()];
    for i in rand::seq::index::sample(&mut rng, merged.len(), bound) {
        keep[by_name[i]] = true;
    }
    let mut dropped = 0;
    let mut index = 0;
    merged.retain(|m| {
        let kept = keep[index];
        index += 1;
        if !kept {
            dropped += u64::from(m.events);
        }
        kept
    });
    dropped
}

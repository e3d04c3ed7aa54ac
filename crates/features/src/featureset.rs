//! The minimized training set: dense subject and item indices, values and
//! times, in CSR form by subject and by item.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::envelope::{self, Kind};
use crate::{ConsentPolicy, Error, Feedback, Result, SubjectKey};

/// The envelope kind of feature set files.
pub const FEATURE_SET_KIND: Kind = Kind { name: "hush feature set", magic: *b"HUSHFSET", version: 3 };

/// One interaction of a subject with an item.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// Dense item index.
    pub item: u32,
    /// The rating (explicit) or summed kind weight (implicit).
    pub value: f32,
    /// Unix seconds of the latest event behind it.
    pub time: i64,
}

/// Compressed sparse rows: row `r` holds entries `indptr[r]..indptr[r + 1]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Csr {
    /// Row start offsets; length is rows + 1.
    pub indptr: Vec<u64>,
    /// Column index of each entry.
    pub indices: Vec<u32>,
    /// Value of each entry.
    pub values: Vec<f32>,
    /// Unix seconds of each entry.
    pub times: Vec<i64>,
}

impl Csr {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// The entry range of row `r`.
    pub fn range(&self, r: usize) -> std::ops::Range<usize> {
        self.indptr[r] as usize..self.indptr[r + 1] as usize
    }

    /// Column indices of row `r`.
    pub fn row_indices(&self, r: usize) -> &[u32] {
        &self.indices[self.range(r)]
    }

    /// Values of row `r`.
    pub fn row_values(&self, r: usize) -> &[f32] {
        &self.values[self.range(r)]
    }

    /// Builds a CSR from per-row entries, keeping their order.
    fn from_rows(rows: &[Vec<Interaction>]) -> Csr {
        let nnz = rows.iter().map(Vec::len).sum();
        let mut csr = Csr {
            indptr: Vec::with_capacity(rows.len() + 1),
            indices: Vec::with_capacity(nnz),
            values: Vec::with_capacity(nnz),
            times: Vec::with_capacity(nnz),
        };
        csr.indptr.push(0);
        for row in rows {
            for e in row {
                csr.indices.push(e.item);
                csr.values.push(e.value);
                csr.times.push(e.time);
            }
            csr.indptr.push(csr.indices.len() as u64);
        }
        csr
    }

    /// The transpose, with `columns` rows; entries in each new row are in old-row order.
    fn transpose(&self, columns: usize) -> Csr {
        let mut counts = vec![0u64; columns + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let indptr = counts.clone();
        let mut next = counts;
        let nnz = self.nnz();
        let mut out = Csr { indptr, indices: vec![0; nnz], values: vec![0.0; nnz], times: vec![0; nnz] };
        for r in 0..self.rows() {
            for k in self.range(r) {
                let c = self.indices[k] as usize;
                let slot = next[c] as usize;
                next[c] += 1;
                out.indices[slot] = r as u32;
                out.values[slot] = self.values[k];
                out.times[slot] = self.times[k];
            }
        }
        out
    }
}

/// How a feature set came to be: everything a model card needs to state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureMeta {
    /// Ratings or implicit signals.
    pub feedback: Feedback,
    /// Consent snapshot time T, unix milliseconds.
    pub snapshot_at_ms: i64,
    /// Consent policy used.
    pub policy: ConsentPolicy,
    /// Research data without a consent ledger (models from it must not be served).
    pub research_only: bool,
    /// Contribution bound (distinct items per subject) enforced.
    pub max_events_per_subject: Option<u32>,
    /// Whether per-subject randomness (contribution bound, splits, training
    /// samples) came from a seed anyone who knows it can replay, rather than
    /// a per-run secret from the operating system. Seeded sets are not releasable.
    pub sampling_seeded: bool,
    /// Where the item universe came from: a public catalogue's source, or
    /// `None` when it is the set of items seen in private rows (not releasable).
    pub catalogue: Option<String>,
    /// HMAC-SHA-256 of the extraction report under the store's key: lets the
    /// operator match a model to its report; nobody else can confirm a guess.
    pub report_digest: String,
    /// When the feature set was made, unix milliseconds.
    pub created_at_ms: i64,
    /// The hush version that made it.
    pub hush_version: String,
    /// What this part is, when it was split off another feature set (e.g. `train of holdout:0.2:42`).
    pub split: Option<String>,
    /// How events became interaction values (the model carries it on to serving).
    pub weighting: crate::EventWeighting,
}

impl FeatureMeta {
    /// Provenance of a feature set assembled in code rather than extracted
    /// from events and a consent ledger (tests, benchmarks, examples): no
    /// snapshot, no contribution bound, seeded sampling, no catalogue, no
    /// report digest, not split, the default event weighting.
    /// Change what differs with struct update syntax.
    pub fn assembled(feedback: Feedback) -> FeatureMeta {
        FeatureMeta {
            feedback,
            snapshot_at_ms: 0,
            policy: ConsentPolicy::AsOfSnapshot,
            research_only: false,
            max_events_per_subject: None,
            sampling_seeded: true,
            catalogue: None,
            report_digest: String::new(),
            created_at_ms: 0,
            hush_version: env!("CARGO_PKG_VERSION").into(),
            split: None,
            weighting: crate::EventWeighting::default(),
        }
    }
}

/// The minimized, pseudonymous training set.
///
/// Subjects appear only as dense indices `0..n_subjects`; no identifier of
/// any kind, raw or pseudonymous, is kept. Items keep their catalogue ids,
/// which serving needs and which are not personal data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureSet {
    /// Provenance.
    pub meta: FeatureMeta,
    /// Catalogue id of each dense item index.
    pub items: Vec<String>,
    /// Interactions by subject (rows are subjects, columns items).
    pub by_subject: Csr,
    /// Each subject's key (see [`SubjectKey`]): what per-subject random
    /// choices downstream (splits, training samples) are drawn from.
    pub subject_keys: Vec<SubjectKey>,
    /// The same interactions by item (rows are items, columns subjects).
    /// Derived from `by_subject`: not written to disk, rebuilt on load.
    #[serde(skip)]
    pub by_item: Csr,
}

impl FeatureSet {
    /// Builds a feature set assembled in code (tests, benchmarks): subject
    /// keys are derived from row positions, so `meta.sampling_seeded` must
    /// stay true (as [`FeatureMeta::assembled`] sets it).
    pub fn from_subject_rows(meta: FeatureMeta, items: Vec<String>, rows: &[Vec<Interaction>]) -> Self {
        let keys = (0..rows.len() as u64).map(SubjectKey::assembled).collect();
        Self::from_keyed_rows(meta, items, rows, keys)
    }

    /// Builds a feature set from each subject's interactions and key.
    ///
    /// # Panics
    /// If `keys` and `rows` differ in length (a programming error).
    pub fn from_keyed_rows(
        meta: FeatureMeta,
        items: Vec<String>,
        rows: &[Vec<Interaction>],
        subject_keys: Vec<SubjectKey>,
    ) -> Self {
        assert_eq!(rows.len(), subject_keys.len(), "one key per subject");
        let by_subject = Csr::from_rows(rows);
        let by_item = by_subject.transpose(items.len());
        FeatureSet { meta, items, by_subject, subject_keys, by_item }
    }

    /// Number of subjects.
    pub fn n_subjects(&self) -> usize {
        self.by_subject.rows()
    }

    /// Number of items.
    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    /// Number of interactions.
    pub fn nnz(&self) -> usize {
        self.by_subject.nnz()
    }

    /// The interactions of subject `s`, in their stored order.
    pub fn subject_interactions(&self, s: usize) -> impl Iterator<Item = Interaction> + '_ {
        self.by_subject.range(s).map(move |k| Interaction {
            item: self.by_subject.indices[k],
            value: self.by_subject.values[k],
            time: self.by_subject.times[k],
        })
    }

    /// Writes the feature set in its checksummed envelope (atomically).
    ///
    /// # Errors
    /// [`Error::Codec`] or [`Error::Envelope`].
    pub fn save(&self, path: &Path) -> Result<()> {
        let _span = tracing::info_span!("save_feature_set", interactions = self.nnz()).entered();
        let payload = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| Error::Codec { path: path.to_path_buf(), message: e.to_string() })?;
        envelope::write(path, FEATURE_SET_KIND, &payload)?;
        Ok(())
    }

    /// Reads and verifies a feature set file.
    ///
    /// # Errors
    /// [`Error::Envelope`] for a wrong, truncated, corrupted or wrong-version
    /// file; [`Error::Codec`] if the payload does not decode.
    pub fn load(path: &Path) -> Result<Self> {
        let payload = envelope::read(path, FEATURE_SET_KIND)?;
        let (mut set, used): (FeatureSet, usize) =
            bincode::serde::decode_from_slice(&payload, bincode::config::standard()).map_err(|e| Error::Codec {
                path: path.to_path_buf(),
                message: format!("undecodable feature set: {e}"),
            })?;
        if used != payload.len() {
            return Err(Error::Codec {
                path: path.to_path_buf(),
                message: "trailing bytes after the feature set".into(),
            });
        }
        set.check_shape().map_err(|message| Error::Codec { path: path.to_path_buf(), message })?;
        set.by_item = set.by_subject.transpose(set.items.len());
        Ok(set)
    }

    /// Checks the CSR invariants of `by_subject`, so a decoded file cannot
    /// cause out-of-bounds access later.
    fn check_shape(&self) -> std::result::Result<(), String> {
        let csr = &self.by_subject;
        let nnz = csr.indices.len();
        if csr.values.len() != nnz || csr.times.len() != nnz {
            return Err("column, value and time arrays differ in length".into());
        }
        if csr.indptr.first() != Some(&0)
            || csr.indptr.last() != Some(&(nnz as u64))
            || csr.indptr.windows(2).any(|w| w[0] > w[1])
        {
            return Err("row offsets are not a valid CSR".into());
        }
        if self.subject_keys.len() != csr.rows() {
            return Err("subject keys and rows differ in number".into());
        }
        if csr.indices.iter().any(|&c| c as usize >= self.items.len()) {
            return Err("an item index is out of range".into());
        }
        Ok(())
    }
}

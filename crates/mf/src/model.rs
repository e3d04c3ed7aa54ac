//! The released model: item side only, with the guarantee it was trained under.

use std::path::Path;

use hush_features::envelope::{self, Kind};
use hush_features::Feedback;
use hush_privacy::Release;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, TrainParams};

/// Below this [`Model::personalized_share`], a DP model is mostly
/// popularity: `hush train` warns and the card says so.
pub const MOSTLY_POPULARITY: f64 = 0.5;

/// The envelope kind of model files.
pub const MODEL_KIND: Kind = Kind { name: "hush model", magic: *b"HUSHMODL", version: 3 };

/// The privacy guarantee a model was trained under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrivacyGuarantee {
    /// Trained without noise: the non-private twin, for evaluation only.
    NonPrivate,
    /// User-level (ε, δ)-DP, joint DP for the subject vectors.
    Dp {
        /// The target ε.
        target_epsilon: f64,
        /// ε at δ: the better of the two certificates below.
        epsilon: f64,
        /// ε by the exact Gaussian-DP curve (Balle and Wang; Dong, Roth and Su).
        epsilon_gdp: f64,
        /// ε by OpenDP's conversion of the total ρ (zCDP).
        epsilon_zcdp: f64,
        /// δ.
        delta: f64,
        /// Total ρ (zCDP) of every release.
        rho: f64,
        /// ε by the simple bound ρ + 2√(ρ ln 1/δ), for comparison.
        epsilon_simple_bound: f64,
        /// Each release with its sensitivity and noise scale.
        releases: Vec<Release>,
        /// Subject vectors clipped to this L2 norm.
        clip_norm: f64,
        /// Explicit: residual targets clipped to ±this.
        residual_bound: f64,
        /// At most this many interactions per subject.
        max_items_per_subject: usize,
        /// Iterations (each releases the item statistics once).
        iterations: u32,
        /// Whether the noise came from a fixed seed: such a model is for research, not for release.
        noise_seeded: bool,
    },
}

impl PrivacyGuarantee {
    /// ε, or `None` for the non-private twin.
    pub fn epsilon(&self) -> Option<f64> {
        match self {
            PrivacyGuarantee::NonPrivate => None,
            PrivacyGuarantee::Dp { epsilon, .. } => Some(*epsilon),
        }
    }

    /// Whether the noise came from a fixed seed (false for the twin).
    pub fn noise_seeded(&self) -> bool {
        matches!(self, PrivacyGuarantee::Dp { noise_seeded: true, .. })
    }
}

/// Where a model's data came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataProvenance {
    /// Consent snapshot time of the feature set, unix milliseconds.
    pub snapshot_at_ms: i64,
    /// HMAC of the extraction report under the store's key (only the store
    /// can match it to a report).
    pub report_digest: String,
    /// Research data without a consent ledger: the server refuses such a model.
    pub research_only: bool,
    /// Per-subject sampling came from a published seed: not releasable.
    pub sampling_seeded: bool,
    /// The public catalogue the item list is; `None`: the items seen in
    /// private rows, which is itself a release (not releasable).
    pub catalogue: Option<String>,
    /// The split the model was trained on, if any (e.g. `train of holdout:0.2:42`).
    pub split: Option<String>,
    /// How events became interaction values in training: serving folds a
    /// subject's events in the same way.
    pub weighting: hush_features::EventWeighting,
}

/// The purpose a store derives its model-signing seed for from its key
/// (`PseudonymKey::derive(SIGNING_PURPOSE)`).
pub const SIGNING_PURPOSE: &str = "hush model release signing v1";

/// A store's signature over a released model: Ed25519 over the SHA-256 of
/// everything else in the model file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSeal {
    /// The signing store's public key, hex: the store's identity.
    pub store: String,
    /// The signature, hex.
    pub signature: String,
}

/// Why a model's seal does not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// No seal: the model was never released by a store.
    #[error("it is not signed by any store (only releases are)")]
    Unsigned,
    /// Signed by another store.
    #[error("it was released by another store (key {found}, this store's is {expected})")]
    OtherStore {
        /// The signer.
        found: String,
        /// This store.
        expected: String,
    },
    /// The signature does not match the content: altered after release.
    #[error("its signature does not match its content: it was altered after release")]
    BadSignature,
}

/// What a model was trained for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelPurpose {
    /// To be served: needs a committed release entry in the store's ledger.
    Release,
    /// An evaluation or tuning run: never served.
    Evaluation,
}

/// Everything a model card states besides the numbers the model itself holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// A content-derived id: the first 16 hex characters of the SHA-256 of the payload.
    pub model_id: String,
    /// hush version that trained it.
    pub hush_version: String,
    /// The day it was trained (00:00 UTC), unix milliseconds: to the day only.
    pub created_at_ms: i64,
    /// Ratings or implicit signals.
    pub feedback: Feedback,
    /// The settings used.
    pub params: TrainParams,
    /// The guarantee.
    pub privacy: PrivacyGuarantee,
    /// Provenance of the data.
    pub data: DataProvenance,
    /// What it was trained for.
    pub purpose: ModelPurpose,
}

/// The trained model: item side and aggregates only. No subject vector,
/// no subject identifier and no per-subject statistic is in here; subject
/// vectors are folded in at request time from that subject's own data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Provenance and guarantee.
    pub meta: ModelMeta,
    /// Catalogue id of each item index.
    pub items: Vec<String>,
    /// Rank of the factors.
    pub rank: usize,
    /// Item factors, `items × rank`, row-major.
    pub item_factors: Vec<f32>,
    /// Item biases (explicit mode; zeros in implicit mode).
    pub item_bias: Vec<f32>,
    /// Global mean rating (explicit; 0 in implicit mode), noisy under DP.
    pub global_mean: f32,
    /// Item popularity (interaction counts), noisy under DP: the non-personalized fallback.
    pub popularity: Vec<f32>,
    /// The store's signature, on releases only (see [`Model::seal`]).
    pub seal: Option<ReleaseSeal>,
    /// `Vᵀ V`, derived from the factors for implicit fold-in; not stored.
    #[serde(skip)]
    pub(crate) gram: Vec<f64>,
    /// Implicit mode: the popularity prior of each item, derived; not stored.
    #[serde(skip)]
    pub(crate) popularity_prior: Vec<f64>,
    /// What serving derives at load (quantized scoring panels, item norms,
    /// popularity order); not stored.
    #[serde(skip)]
    pub(crate) serving: crate::foldin::ServingIndex,
}

impl Model {
    /// Why this model may not be released or served, if anything: an empty
    /// list means it may (subject to the store's signature and ledger).
    ///
    /// # Privacy
    /// Each reason voids the stated guarantee or was never covered by it:
    /// no noise, noise or sampling anyone can replay from a published seed,
    /// data without consent, an item list taken from private rows, or a
    /// model trained (and perhaps chosen) for evaluation.
    pub fn not_releasable_because(&self) -> Vec<&'static str> {
        let mut reasons = Vec::new();
        match &self.meta.privacy {
            PrivacyGuarantee::NonPrivate => reasons.push("it is the non-private twin (no noise)"),
            PrivacyGuarantee::Dp { noise_seeded: true, .. } => reasons.push("its noise is seeded"),
            PrivacyGuarantee::Dp { .. } => {}
        }
        let data = &self.meta.data;
        if data.sampling_seeded {
            reasons.push("its per-subject sampling is seeded");
        }
        if data.research_only {
            reasons.push("it was trained on research data without consent");
        }
        if data.catalogue.is_none() {
            reasons.push("its item list comes from private rows, not a catalogue");
        }
        if self.meta.purpose == ModelPurpose::Evaluation {
            reasons.push("it was trained for evaluation");
        }
        reasons
    }

    /// SHA-256 of the model's encoding without its seal: what a seal signs.
    pub fn content_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut unsealed = self.clone();
        unsealed.seal = None;
        Sha256::digest(unsealed.encode().expect("a model always encodes")).into()
    }

    /// Signs the model as a release of the store whose signing seed this is
    /// (see `PseudonymKey::derive`): `hush serve` on that store accepts it,
    /// any other store refuses it.
    pub fn seal(&mut self, store_seed: &[u8; 32]) {
        use ed25519_dalek::Signer;
        let key = ed25519_dalek::SigningKey::from_bytes(store_seed);
        let signature = key.sign(&self.content_digest());
        self.seal = Some(ReleaseSeal {
            store: hex::encode(key.verifying_key().as_bytes()),
            signature: hex::encode(signature.to_bytes()),
        });
    }

    /// The public identity of the store with this signing seed.
    pub fn store_identity(store_seed: &[u8; 32]) -> String {
        hex::encode(ed25519_dalek::SigningKey::from_bytes(store_seed).verifying_key().as_bytes())
    }

    /// Checks that the store with this signing seed released this model, unaltered.
    ///
    /// # Errors
    /// [`SealError`] saying which check failed.
    pub fn verify_seal(&self, store_seed: &[u8; 32]) -> std::result::Result<(), SealError> {
        let seal = self.seal.as_ref().ok_or(SealError::Unsigned)?;
        let key = ed25519_dalek::SigningKey::from_bytes(store_seed).verifying_key();
        let expected = hex::encode(key.as_bytes());
        if seal.store != expected {
            return Err(SealError::OtherStore { found: seal.store.clone(), expected });
        }
        let mut bytes = [0u8; 64];
        hex::decode_to_slice(&seal.signature, &mut bytes).map_err(|_| SealError::BadSignature)?;
        key.verify_strict(&self.content_digest(), &ed25519_dalek::Signature::from_bytes(&bytes))
            .map_err(|_| SealError::BadSignature)
    }

    /// Marks what the model is for; its content-derived id changes with it.
    pub fn set_purpose(&mut self, purpose: ModelPurpose) {
        self.meta.purpose = purpose;
        self.assign_id();
    }

    /// The item factors as an items × rank matrix (a view, no copy).
    pub fn item_factor_matrix(&self) -> ndarray::ArrayView2<'_, f32> {
        ndarray::ArrayView2::from_shape((self.items.len(), self.rank), &self.item_factors)
            .expect("the shape is checked when a model is built or loaded")
    }

    /// Number of items.
    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    /// The factors of item `i`.
    pub fn factors(&self, i: usize) -> &[f32] {
        &self.item_factors[i * self.rank..(i + 1) * self.rank]
    }

    /// Recomputes derived state (the item Gramian); called after training and loading.
    /// The share of (released, noisy) interactions that fall on items with
    /// non-zero factors: where the model personalizes at all. Under DP, items
    /// whose statistics are mostly noise are shrunk to zero factors and rank
    /// by popularity alone. Post-processing of released values.
    pub fn personalized_share(&self) -> f64 {
        let (mut personal, mut total) = (0.0, 0.0);
        for i in 0..self.n_items() {
            let count = f64::from(self.popularity[i]).max(0.0);
            total += count;
            if self.factors(i).iter().any(|&v| v != 0.0) {
                personal += count;
            }
        }
        if total > 0.0 {
            personal / total
        } else {
            0.0
        }
    }

    pub(crate) fn prepare(&mut self) {
        let d = self.rank;
        let mut gram = vec![0.0f64; d * d];
        let mut z = vec![0.0f64; d];
        for i in 0..self.n_items() {
            for (slot, &f) in z.iter_mut().zip(self.factors(i)) {
                *slot = f64::from(f);
            }
            crate::linalg::add_outer_upper(&mut gram, d, &z, 1.0);
        }
        crate::linalg::mirror_upper(&mut gram, d);
        self.gram = gram;
        let max = self.popularity.iter().fold(0.0f64, |m, &p| m.max(f64::from(p)));
        let weight = self.meta.params.popularity_weight;
        self.popularity_prior = self
            .popularity
            .iter()
            .map(|&p| if max > 0.0 { weight * f64::from(p).max(0.0).ln_1p() / max.ln_1p() } else { 0.0 })
            .collect();
        self.serving = crate::foldin::ServingIndex::of(self);
    }

    fn check_shape(&self) -> std::result::Result<(), String> {
        let n = self.items.len();
        if self.rank == 0 || self.item_factors.len() != n * self.rank {
            return Err(format!(
                "item factors hold {} values, expected {} × {}",
                self.item_factors.len(),
                n,
                self.rank
            ));
        }
        if self.item_bias.len() != n || self.popularity.len() != n {
            return Err("item bias or popularity length differs from the item count".into());
        }
        if self.item_factors.iter().chain(&self.item_bias).chain(&self.popularity).any(|v| !v.is_finite())
            || !self.global_mean.is_finite()
        {
            return Err("the model holds non-finite numbers".into());
        }
        Ok(())
    }

    fn encode(&self) -> std::result::Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).map_err(|e| e.to_string())
    }

    /// Sets `meta.model_id` from the content (with the id field blank).
    pub(crate) fn assign_id(&mut self) {
        self.meta.model_id.clear();
        self.meta.model_id = hex::encode(&self.content_digest()[..8]);
    }

    /// Writes the model in its checksummed envelope, atomically.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if it cannot be encoded, [`Error::Envelope`] if it cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let payload = self.encode().map_err(|message| Error::Corrupt { path: path.to_path_buf(), message })?;
        envelope::write(path, MODEL_KIND, &payload)?;
        Ok(())
    }

    /// Reads and verifies a model file.
    ///
    /// # Errors
    /// [`Error::Envelope`] for a wrong, truncated, corrupted or wrong-version
    /// file; [`Error::Corrupt`] if the payload does not decode or is inconsistent.
    pub fn load(path: &Path) -> Result<Self> {
        let payload = envelope::read(path, MODEL_KIND)?;
        let corrupt = |message: String| Error::Corrupt { path: path.to_path_buf(), message };
        let (mut model, used): (Model, usize) =
            bincode::serde::decode_from_slice(&payload, bincode::config::standard())
                .map_err(|e| corrupt(format!("undecodable model: {e}")))?;
        if used != payload.len() {
            return Err(corrupt("trailing bytes after the model".into()));
        }
        model.check_shape().map_err(corrupt)?;
        model.prepare();
        Ok(model)
    }
}

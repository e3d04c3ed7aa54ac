//! Config files (`models/*.toml`): extraction, training (with overrides for
//! DP runs) and the store's budget settings, read once and validated.

use std::path::Path;

use hush_features::ExtractParams;
use hush_mf::TrainParams;
use serde::Deserialize;

use crate::{Error, Result};

/// The lifetime cap a store gets at its first run when no config sets one:
/// every release and evaluation on the store's data together, ε at δ = 1e-6.
pub const DEFAULT_LIFETIME_EPSILON: f64 = 10.0;

/// A hush config file; `models/*.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The `[extract]` table.
    #[serde(default)]
    pub extract: ExtractParams,
    /// The `[train]` table: the non-private twin's settings, and the DP-only
    /// bounds (clipping, contribution bound, shares of ρ) for DP runs.
    #[serde(default)]
    pub train: TrainParams,
    /// Explicit overrides for DP runs. Without them, a DP run takes every
    /// DP setting `[train]` does not fix from the rules (`hush_mf::rules`):
    /// settings that suit the twin (rank, iterations, λ, α) do not suit
    /// noisy statistics, and tuning them on the data being released would
    /// itself be a release.
    #[serde(default)]
    pub train_dp: toml::Table,
    /// The `[budget]` table.
    #[serde(default)]
    pub budget: BudgetConfig,
    /// The keys `[train]` sets.
    #[serde(skip)]
    pub train_keys: Vec<String>,
}

impl ConfigFile {
    /// The training settings of a DP run (`private`: `[train]` with
    /// `[train_dp]` on top, before the rules) or of the non-private twin.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a `[train_dp]` table that does not fit, and the
    /// training crate's error for a setting out of range.
    pub fn train_params(&self, private: bool) -> Result<TrainParams> {
        if !private || self.train_dp.is_empty() {
            return Ok(self.train.validate()?);
        }
        let mut table = toml::Table::try_from(&self.train)
            .map_err(|e| Error::Format { context: "the [train] table".into(), source: Box::new(e) })?;
        table.extend(self.train_dp.clone());
        let params: TrainParams =
            table.try_into().map_err(|e: toml::de::Error| Error::Invalid(format!("[train_dp]: {}", e.message())))?;
        Ok(params.validate()?)
    }

    /// The DP rules for what the config leaves open: everything but the
    /// keys of `[train_dp]` and the DP-only bounds `[train]` sets.
    pub fn dp_rules(&self) -> hush_mf::DpRules {
        let dp_only = self.train_keys.iter().filter(|k| hush_mf::rules::DP_ONLY_FIELDS.contains(&k.as_str()));
        hush_mf::DpRules::except(self.train_dp.keys().chain(dp_only).cloned())
    }
}

/// Reads a config file; a relative `catalogue` path is taken relative to
/// the config file, so a config works from any working directory.
///
/// # Errors
/// [`Error::Io`] if it cannot be read, [`Error::Invalid`] naming the file
/// and line of what does not parse.
pub fn read_config(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path).map_err(crate::io(format!("reading config {}", path.display())))?;
    let mut config: ConfigFile = toml::from_str(&text).map_err(|e| {
        let location = e
            .span()
            .map(|span| {
                let line = text[..span.start].matches('\n').count() + 1;
                format!(":{line}")
            })
            .unwrap_or_default();
        Error::Invalid(format!("config {}{location}: {}", path.display(), e.message()))
    })?;
    if let Ok(table) = text.parse::<toml::Table>() {
        if let Some(train) = table.get("train").and_then(toml::Value::as_table) {
            config.train_keys = train.keys().cloned().collect();
        }
    }
    if let Some(catalogue) = config.extract.catalogue.as_mut().filter(|c| c.is_relative()) {
        *catalogue = path.parent().unwrap_or(Path::new(".")).join(&*catalogue);
    }
    Ok(config)
}

/// The `[budget]` table of a config file.
///
/// # Privacy
/// There is one budget per store, named after the store's signing identity
/// (see [`crate::store::Store::dataset`]): no free-form name, so a new name
/// cannot open a new budget. A lifetime cap always exists; evaluation runs on
/// the store's data spend from it too (tuning on private data is charged),
/// and have a sub-cap of their own.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// The lifetime cap set on the store at its first run, when it has none
    /// yet (default [`DEFAULT_LIFETIME_EPSILON`]). Afterwards the stored cap
    /// rules; change it with `hush budget set-cap`.
    pub lifetime_epsilon: Option<f64>,
    /// δ of the lifetime cap.
    #[serde(default = "default_delta")]
    pub lifetime_delta: f64,
    /// The sub-cap of evaluation runs (default: the lifetime cap).
    pub evaluation_epsilon: Option<f64>,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig { lifetime_epsilon: None, lifetime_delta: default_delta(), evaluation_epsilon: None }
    }
}

fn default_delta() -> f64 {
    1e-6
}

//! Command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// hush: privacy-first recommendations for storefronts.
///
/// Consent-filtered features, differentially private matrix factorization,
/// consent-gated serving. Subject ids given on the command line are turned
/// into keyed pseudonyms at once and never stored or logged.
#[derive(Debug, Parser)]
#[command(name = "hush", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands (listed apart in every `--help`).
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// The consent ledger and event store: an SQLite file (a path or
    /// sqlite:///path/hush.db, the embedded default) or a PostgreSQL server
    /// (postgres://user:password@host:port/db), for several serving replicas.
    #[arg(long, visible_alias = "store", global = true, env = "HUSH_DB", default_value = "hush.db")]
    pub db: String,
    /// Allow sslmode=disable in a PostgreSQL URL whose host is not a loopback
    /// address: the store's contents then cross the network in clear. Only
    /// for a network you trust; TLS is on by default for such hosts.
    #[arg(long, global = true, env = "HUSH_STORE_ALLOW_CLEARTEXT")]
    pub store_allow_cleartext: bool,
    /// The pseudonymization key file (created with mode 0600 on first use;
    /// default: hush.key beside an SQLite store, ./hush.key for PostgreSQL).
    /// HUSH_PSEUDONYM_KEY (64 hex characters) takes precedence; replicas of
    /// one store must all use the same key.
    #[arg(long, global = true, env = "HUSH_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Create the store (and its key file) if it does not exist yet. Without
    /// it, a store or key file that does not exist is an error: a mistyped
    /// --db must not silently become a new, empty store. (`hush init` does
    /// the same on its own.)
    #[arg(long, global = true)]
    pub create: bool,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a store (the --db) and its pseudonymization key file; nothing
    /// else creates one unless given --create.
    Init,
    /// Generate a deterministic synthetic storefront (events, consent ledger, erasure requests).
    Synth(SynthArgs),
    /// Record, import and query consent.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// Import storefront events into the event store.
    #[command(subcommand)]
    Events(EventsCommand),
    /// The storefront's catalogue in the store: the public item universe of
    /// released models, and the titles and categories serving shows.
    #[command(subcommand)]
    Items(crate::commands::items::ItemsCommand),
    /// Export everything held about one subject as JSON (GDPR access and portability).
    Export(ExportArgs),
    /// Erase subjects: delete their consent history and events, and suppress later imports.
    Erase(EraseArgs),
    /// Extract a consent-filtered, minimized, pseudonymous feature set.
    Extract(ExtractArgs),
    /// Train a model (DP or the non-private twin) from a feature set or straight from an input file.
    Train(TrainArgs),
    /// Evaluate a model on a split, or run the whole offline loop on a ratings file.
    Evaluate(EvaluateArgs),
    /// Compare privacy budgets: train and evaluate at every epsilon and seed plus the
    /// non-private twin, and write report.html, results.csv, results.parquet and results.json.
    Sweep(SweepArgs),
    /// Audit a DP training run empirically: train once with canary subjects
    /// included at random, guess their membership from the released model,
    /// and report the epsilon lower bound the guesses prove.
    Audit(AuditArgs),
    /// Recommend offline for a list of a subject's interactions, or (--all)
    /// for every consenting subject of the store into a CSV or Parquet file.
    Recommend(RecommendArgs),
    /// Items like one item, by the cosine of the model's item factors (as
    /// `GET /v1/items/{id}/similar`).
    Similar(SimilarArgs),
    /// Inspect model files.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Serve a model over HTTP: consent-gated recommendations, consent, events, export, erasure.
    /// With --json the start-up summary (address, model id, example requests) is one JSON object.
    Serve(ServeArgs),
    /// The privacy budget ledger: what DP training has spent per dataset, and lifetime caps.
    #[command(subcommand)]
    Budget(BudgetCommand),
    /// Manage API keys of the server (stored hashed in the ledger).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The main job on the bundled sample: import consent and events, honour erasure requests, extract, train, report.
    Quickstart(QuickstartArgs),
}

#[derive(Debug, Subcommand)]
pub enum BudgetCommand {
    /// Spent and remaining budget per dataset and purpose.
    Show,
    /// Set (or change) the lifetime cap of a dataset.
    SetCap(SetCapArgs),
    /// Every recorded training run.
    Runs(BudgetRunsArgs),
}

#[derive(Debug, Args)]
pub struct SetCapArgs {
    /// Lifetime epsilon of all runs of this purpose together, on this store
    /// (the release cap bounds releases and evaluations together).
    #[arg(long)]
    pub epsilon: f64,
    /// Delta of the cap.
    #[arg(long, default_value_t = 1e-6)]
    pub delta: f64,
    /// Which budget: models for release, or exploratory evaluation runs.
    #[arg(long, value_enum, default_value_t = BudgetPurposeArg::Release)]
    pub purpose: BudgetPurposeArg,
    /// Set a cap below what is already spent.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct BudgetRunsArgs {
    /// Only this dataset.
    #[arg(long)]
    pub dataset: Option<String>,
}

/// The budget a training run spends from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BudgetPurposeArg {
    /// A model that may be served or shipped.
    Release,
    /// An exploratory model, never released.
    Evaluation,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once and only its hash is stored.
    Create(KeyCreateArgs),
    /// List keys (ids, names, scopes, revocation), never secrets.
    List,
    /// Revoke a key by its id.
    Revoke(KeyRevokeArgs),
}

#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// Who or what the key is for, e.g. the storefront's name.
    #[arg(long)]
    pub name: String,
    /// Comma-separated scopes: recommend, ingest, privacy, admin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KeyRevokeArgs {
    /// The key id (the part after `hush_`, before the second `_`).
    pub key_id: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The model file to serve (research-only models are refused).
    #[arg(long, env = "HUSH_MODEL")]
    pub model: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "HUSH_BIND")]
    pub bind: Option<String>,
    /// A TOML file with a `[serve]` table: model, bind, max_history, max_k,
    /// max_concurrent_requests, request_timeout_ms, header_read_timeout_ms, write_timeout_ms,
    /// max_connections, store_pool_size, store_reader_connections, kind_weights. Flags and
    /// environment variables win over it.
    #[arg(long, env = "HUSH_SERVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Read connections to the store (default 8; `store_pool_size` in the
    /// `[serve]` config). /metrics shows how many are in use.
    #[arg(long, env = "HUSH_STORE_POOL_SIZE")]
    pub store_pool_size: Option<u32>,
    /// On PostgreSQL, connections of the per-request read, each carrying
    /// pipelined queries (default: this machine's cores, at most 4;
    /// `store_reader_connections` in the `[serve]` config).
    #[arg(long, env = "HUSH_STORE_READER_CONNECTIONS")]
    pub store_reader_connections: Option<u32>,
}

/// Where training data comes from: a feature set file, or input files extracted on the fly.
#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// A feature set written by `hush extract`.
    #[arg(long, conflicts_with = "inputs")]
    pub features: Option<PathBuf>,
    /// Input event files, extracted with the config's `[extract]` settings.
    #[arg(long = "input")]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub format: FormatArgs,
    /// Research data without a consent ledger: the model is marked research-only and cannot be served.
    #[arg(long)]
    pub research_data: bool,
    /// Override the config's feedback mode.
    #[arg(long, value_enum)]
    pub feedback: Option<FeedbackArg>,
    /// The consent snapshot time for on-the-fly extraction (default now).
    #[arg(long)]
    pub as_of: Option<String>,
    /// A TOML config with `[extract]` and `[train]` tables (see models/).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The catalogue for on-the-fly extraction (overrides the config's).
    #[arg(long)]
    pub catalogue: Option<PathBuf>,
    /// Seed per-subject sampling for on-the-fly extraction (research only).
    #[arg(long)]
    pub sampling_seed: Option<u64>,
}

/// The privacy choice for training: a budget, or the non-private twin.
#[derive(Debug, Args, Clone)]
pub struct PrivacyArgs {
    /// Target epsilon of user-level (epsilon, delta)-DP.
    #[arg(long, conflicts_with = "non_private")]
    pub epsilon: Option<f64>,
    /// Target delta.
    #[arg(long, default_value_t = 1e-6)]
    pub delta: f64,
    /// Train the non-private twin (no clipping, no bound, no noise) for comparison.
    #[arg(long)]
    pub non_private: bool,
    /// Seed the DP noise (tests and reproducible research only: the model card says so).
    #[arg(long)]
    pub noise_seed: Option<u64>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub privacy: PrivacyArgs,
    /// Train on the train part of this split and evaluate on its test part: holdout:F:SEED or temporal:F.
    #[arg(long)]
    pub split: Option<String>,
    /// Where to write the model.
    #[arg(long, default_value = "model.hmdl")]
    pub out: PathBuf,
    /// Replace --out if it exists (it may be the model being served).
    #[arg(long)]
    pub force: bool,
    /// Which budget the run spends: release (default for DP models) or evaluation.
    /// Non-private, seeded-noise and research-data models are never for release.
    #[arg(long, value_enum)]
    pub purpose: Option<BudgetPurposeArg>,
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// A trained model to evaluate (on --features split by --split); without it, one is trained.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub privacy: PrivacyArgs,
    /// The split: holdout:FRACTION:SEED or temporal:FRACTION.
    #[arg(long, default_value = "holdout:0.2:42")]
    pub split: String,
    /// Length of recommendation lists.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Tune on validation data: split the training part again with this spec
    /// (e.g. holdout:0.2:7) and report metrics on that validation part; the
    /// test part is not looked at.
    #[arg(long)]
    pub validation: Option<String>,
    /// Also write the split as DIR/train.csv and DIR/test.csv (subject_index,item_id,value),
    /// so peer libraries can be measured on exactly the same data.
    #[arg(long)]
    pub write_split: Option<PathBuf>,
    /// The format of --write-split's files: csv, or parquet (train.parquet, test.parquet).
    #[arg(long, default_value = "csv", requires = "write_split")]
    pub split_format: hush_pipeline::tables::TableFormat,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The extraction report of --features (default: X.report.json beside X.hfs).
    #[arg(long)]
    pub extraction_report: Option<PathBuf>,
    /// Target epsilons, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2,4,8,16")]
    pub epsilons: Vec<f64>,
    /// Seeds per epsilon (the config's seed and the ones after it).
    #[arg(long, default_value_t = 5)]
    pub seeds: u32,
    /// Delta of every DP model.
    #[arg(long, default_value_t = 1e-6)]
    pub delta: f64,
    /// The split every cell uses: holdout:FRACTION:SEED or temporal:FRACTION.
    #[arg(long, default_value = "holdout:0.2:42")]
    pub split: String,
    /// Length of recommendation lists.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// The recommendation's tolerance: the smallest epsilon within this relative distance of the twin.
    #[arg(long, default_value_t = 0.05)]
    pub tolerance: f64,
    /// Output directory: report.html, results.csv, results.json, cells/.
    #[arg(long)]
    pub out: PathBuf,
    /// Discard finished cells in --out instead of resuming from them.
    #[arg(long)]
    pub fresh: bool,
}

/// `hush audit`: one training run with canaries (Steinke, Nasr & Jagielski 2023).
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub privacy: PrivacyArgs,
    /// m: canary subjects, each included in the training data with probability 1/2.
    #[arg(long, default_value_t = 500)]
    pub canaries: usize,
    /// Items per canary, each touched by that canary alone (default: the
    /// trainer's max_items_per_subject, at most 20; never more than it).
    #[arg(long)]
    pub canary_items: Option<usize>,
    /// r: guesses made, half "in" for the highest scores and half "out" for
    /// the lowest, abstaining on the rest (even, at most --canaries; default:
    /// half the canaries). Fixed before the scores are seen.
    #[arg(long)]
    pub guesses: Option<usize>,
    /// Confidence (1 - beta) of the epsilon lower bound.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Seed the canaries' inclusion draws (reproducible audits; default: the OS).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SimilarArgs {
    /// The model.
    #[arg(long)]
    pub model: PathBuf,
    /// The item (catalogue id).
    #[arg(long)]
    pub item: String,
    /// How many similar items.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Items never to list, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// The model.
    #[arg(long)]
    pub model: PathBuf,
    /// The subject's items (catalogue ids), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub items: Vec<String>,
    /// Their values (ratings or weights), comma-separated; default 1 (implicit) or 4 (explicit).
    #[arg(long, value_delimiter = ',')]
    pub values: Vec<f32>,
    /// How many recommendations (per subject with --all).
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Batch recommendations for every subject of the store as of --as-of
    /// (events at or before it, or a personalization decision): each
    /// subject's personalization consent is checked at run time exactly as
    /// the server checks it, those without it are counted by reason (no_record,
    /// withdrawn, erased) and never scored. Needs a release of this store and
    /// --out; rows are subject_pseudonym, rank, item, title, category, score,
    /// personalized.
    #[arg(long, requires = "out")]
    pub all: bool,
    /// With --all: the snapshot; only events at or before it are folded in
    /// (RFC 3339 or unix seconds; default now).
    #[arg(long, requires = "all")]
    pub as_of: Option<String>,
    /// With --all: the output file (owner-only), recs.csv or recs.parquet.
    #[arg(long, requires = "all")]
    pub out: Option<PathBuf>,
    /// With --all: the output format (default: from the --out extension).
    #[arg(long, value_enum, requires = "all")]
    pub format: Option<BatchFormat>,
    /// Only items in these categories of the store's catalogue (comma-separated).
    #[arg(long, requires = "all")]
    pub category: Option<String>,
    /// Never items in these categories of the store's catalogue (comma-separated).
    #[arg(long, requires = "all")]
    pub exclude_categories: Option<String>,
}

/// The file format of batch recommendations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BatchFormat {
    Csv,
    Parquet,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Print a model's summary: guarantee, data, settings, evaluation.
    Inspect(InspectArgs),
    /// Print a model's full card (Markdown, or HTML with --html).
    Card(CardArgs),
    /// Print every array a model file releases, exactly as stored, as JSON:
    /// items, item factors, item biases, popularity, the global mean and the
    /// metadata. What anyone receiving the model receives, nothing more.
    Dump(DumpArgs),
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The model file.
    pub model: PathBuf,
    /// JSON output (the only format; the flag makes scripts explicit).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CardArgs {
    /// The model file.
    pub model: PathBuf,
    /// A self-contained HTML page instead of Markdown.
    #[arg(long)]
    pub html: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The model file.
    pub model: PathBuf,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of subjects [default: 4000; 610 for movielens-csv].
    #[arg(long)]
    pub subjects: Option<u32>,
    /// Number of items [default: 600; 1000 for movielens-csv].
    #[arg(long)]
    pub items: Option<u32>,
    /// Mean events per subject [default: 12; 25 for movielens-csv].
    #[arg(long)]
    pub mean_events: Option<f64>,
    /// Latent taste dimension [default: 8].
    #[arg(long)]
    pub rank: Option<usize>,
    /// RNG seed [default: 7; 1 for movielens-csv].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Storefront with a low-rank taste signal: subjects look at item j with
    /// probability ∝ popularity_j · exp(S · taste match), the match having unit
    /// variance. Without it, subjects browse by popularity first (the bundled
    /// sample). 2 gives data where personalization clearly beats popularity.
    #[arg(long, value_name = "S")]
    pub taste_strength: Option<f64>,
    /// Power-law popularity exponent: item j has weight (j + 1)^-exponent
    /// [default: 0.8; 0.9 for movielens-csv].
    #[arg(long)]
    pub popularity_exponent: Option<f64>,
    /// Spread (σ of the log) of the log-normal events per subject [default: 0.8].
    #[arg(long)]
    pub activity_sigma: Option<f64>,
    /// Event file format; `movielens-csv` writes a MovieLens-shaped research
    /// data set (`ratings.csv`, `movies.csv`) instead of a storefront.
    #[arg(long, value_enum, default_value_t = SynthFormat::Csv)]
    pub format: SynthFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SynthFormat {
    Csv,
    Jsonl,
    MovielensCsv,
}

#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Import consent records from CSV or JSONL (one transaction; per-row errors).
    Import(ConsentImportArgs),
    /// Record a grant.
    Grant(ConsentChangeArgs),
    /// Record a withdrawal.
    Withdraw(ConsentChangeArgs),
    /// The consent status of a subject, now or as of a time.
    Status(StatusArgs),
    /// The full consent history of a subject.
    History(SubjectArg),
}

#[derive(Debug, Args)]
pub struct ImportTolerance {
    /// Stop at the first malformed row.
    #[arg(long)]
    pub strict: bool,
    /// Roll back when more than this fraction of rows is malformed
    /// [default: 0.01, or the config's `max_malformed_fraction`].
    #[arg(long)]
    pub max_malformed: Option<f64>,
}

#[derive(Debug, Args)]
pub struct ConsentImportArgs {
    /// The file to import.
    pub file: PathBuf,
    /// File format (default: from the extension: .parquet/.pq Parquet,
    /// .jsonl/.ndjson JSONL, anything else CSV).
    #[arg(long, value_enum)]
    pub format: Option<ConsentFileFormat>,
    #[command(flatten)]
    pub tolerance: ImportTolerance,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ConsentFileFormat {
    Csv,
    Jsonl,
    Parquet,
}

#[derive(Debug, Args)]
pub struct SubjectArg {
    /// The subject's external id (pseudonymized at once, never stored):
    /// 1 to 256 bytes without control characters.
    #[arg(long)]
    pub subject: hush_consent::SubjectId,
}

#[derive(Debug, Args)]
pub struct ConsentChangeArgs {
    #[command(flatten)]
    pub subject: SubjectArg,
    /// personalization or training.
    #[arg(long)]
    pub purpose: String,
    /// Version of the notice the subject was shown: required for a grant
    /// (what the subject agreed to is part of the proof of consent, GDPR
    /// Art. 7(1)); optional for a withdrawal, which needs no notice.
    #[arg(long)]
    pub notice_version: Option<String>,
    /// Reference to proof of the decision (e.g. a consent receipt id).
    #[arg(long)]
    pub proof: Option<String>,
    /// When the decision takes effect (RFC 3339 or unix seconds; default now).
    #[arg(long)]
    pub effective_at: Option<String>,
    /// Lift the suppression of an erased subject who opts in afresh.
    #[arg(long)]
    pub after_erasure: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub subject: SubjectArg,
    /// Only this purpose (default: all).
    #[arg(long)]
    pub purpose: Option<String>,
    /// The time to answer for (RFC 3339 or unix seconds; default now).
    #[arg(long)]
    pub as_of: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Import events; those of subjects with no purpose granted, or erased, are counted and not stored.
    Import(EventsImportArgs),
}

#[derive(Debug, Args)]
pub struct EventsImportArgs {
    /// The file to import.
    pub file: PathBuf,
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten)]
    pub tolerance: ImportTolerance,
}

#[derive(Debug, Args, Clone)]
pub struct FormatArgs {
    /// movielens-csv, udata, dat, csv, jsonl or parquet (default: from each
    /// file's extension: .parquet/.pq Parquet, .jsonl/.ndjson JSONL, .dat
    /// MovieLens dat, anything else CSV).
    #[arg(long)]
    pub format: Option<String>,
    /// Column mapping for csv and parquet, e.g. `subject=user,item=sku,timestamp=ts,kind=,default_kind=purchase`.
    #[arg(long)]
    pub mapping: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub subject: SubjectArg,
    /// Write the export here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct EraseTarget {
    /// The subject's external id.
    #[arg(long)]
    pub subject: Option<hush_consent::SubjectId>,
    /// A CSV of erasure requests with a `subject_id` column.
    #[arg(long)]
    pub requests: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EraseArgs {
    #[command(flatten)]
    pub target: EraseTarget,
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Event files to read; without any, the event store is read.
    #[arg(long = "input")]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub format: FormatArgs,
    /// Also read the event store when --input is given.
    #[arg(long)]
    pub from_store: bool,
    /// A TOML config with an `[extract]` table (see models/).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Consent snapshot time T (RFC 3339 or unix seconds; default now).
    #[arg(long)]
    pub as_of: Option<String>,
    /// as-of-snapshot or since-grant.
    #[arg(long, value_enum)]
    pub policy: Option<PolicyArg>,
    /// explicit (ratings) or implicit (views, carts, purchases).
    #[arg(long, value_enum)]
    pub feedback: Option<FeedbackArg>,
    /// Drop events older than this many days before the snapshot.
    #[arg(long)]
    pub retention_days: Option<u32>,
    /// Contribution bound: at most this many interactions per subject.
    #[arg(long)]
    pub max_events_per_subject: Option<u32>,
    /// No contribution bound (research only: DP training needs one).
    #[arg(long, conflicts_with = "max_events_per_subject")]
    pub unbounded: bool,
    /// Seed per-subject sampling (contribution bound, splits) for reproducible
    /// research: the output is then not releasable. Default: a secret from the OS.
    #[arg(long)]
    pub sampling_seed: Option<u64>,
    /// The storefront's catalogue (CSV with a header; the item id column is
    /// `item_id`, `item` or `movieId`, else the first): the public item
    /// universe. Events about other items are dropped as `unknown_item`.
    #[arg(long)]
    pub catalogue: Option<PathBuf>,
    /// Research data without a consent ledger: include every subject, mark the output research-only.
    #[arg(long)]
    pub research_data: bool,
    #[command(flatten)]
    pub tolerance: ImportTolerance,
    /// Where to write the feature set.
    #[arg(long, default_value = "features.hfs")]
    pub out: PathBuf,
    /// Where to write the extraction report (JSON).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Also write train/test parts: holdout:FRACTION:SEED or temporal:FRACTION.
    #[arg(long)]
    pub split: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    AsOfSnapshot,
    SinceGrant,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FeedbackArg {
    Explicit,
    Implicit,
}

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// The bundled sample to run on.
    #[arg(long, default_value = "data/sample")]
    pub sample: PathBuf,
    /// Working directory for the store, key and outputs (recreated on each run).
    #[arg(long, default_value = "quickstart")]
    pub dir: PathBuf,
    /// The extraction and training config.
    #[arg(long, default_value = "models/sample.toml")]
    pub config: PathBuf,
    /// Stop after training instead of serving the model.
    #[arg(long)]
    pub no_serve: bool,
    /// Where to serve the model at the end.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: String,
}

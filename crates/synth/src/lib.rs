//! A deterministic synthetic storefront.
//!
//! Subjects have latent tastes, items have latent traits and a power-law
//! popularity, and each subject browses over time: views, some of which turn
//! into carts, purchases and ratings, with the taste match driving every
//! step. Beside the events comes a consent ledger with realistic dynamics:
//! most subjects opt in to personalization, fewer to training, some opt in
//! late, some withdraw, some send a Global Privacy Control signal, and a few
//! ask to be erased. Everything is written in the formats hush imports, and
//! the same seed always gives the same bytes.
//!
//! [`EventFileFormat::MovielensCsv`] writes a MovieLens-shaped research data
//! set instead (`ratings.csv` and `movies.csv`, as in ml-latest-small), so that
//! tests need no real MovieLens file beside the project.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use hush_vocab::Timestamp;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, StandardNormal};
use serde::{Deserialize, Serialize};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while generating.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter outside its allowed range.
    #[error("invalid synth parameter `{field}`: {message}")]
    InvalidParam {
        /// The parameter.
        field: &'static str,
        /// What is allowed.
        message: String,
    },
    /// Writing an output file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Shares of subjects following each consent path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsentDynamics {
    /// Share granting personalization when they first visit.
    pub personalization: f64,
    /// Share granting training when they first visit.
    pub training: f64,
    /// Share of the others who opt in to training later, midway through their history.
    pub late_training: f64,
    /// Share of training grantors who later withdraw it.
    pub withdrawal: f64,
    /// Share sending a Global Privacy Control signal (withdrawing personalization).
    pub gpc: f64,
    /// Share asking to be erased.
    pub erasure: f64,
}

impl Default for ConsentDynamics {
    /// Opt-in rates in the range storefront consent banners report.
    fn default() -> Self {
        ConsentDynamics {
            personalization: 0.75,
            training: 0.6,
            late_training: 0.15,
            withdrawal: 0.08,
            gpc: 0.04,
            erasure: 0.02,
        }
    }
}

/// How a storefront subject chooses the items they look at.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "model")]
pub enum Preference {
    /// Popularity first (the bundled sample): six candidates drawn by
    /// popularity, the best taste match among them chosen softly. Popularity
    /// is hard to beat on such data, by design of the sample.
    Browse,
    /// A low-rank preference model: subject u looks at item j with
    /// probability proportional to `popularity_j · exp(strength · ⟨p_u, q_j⟩)`,
    /// distinct items per subject. `p_u ~ N(0, I_r)` and `q_j ~ N(0, I_r / r)`
    /// (r = `rank`), so `⟨p_u, q_j⟩` has unit variance and `strength` is the
    /// log-odds a one-standard-deviation better match buys. Drawn by
    /// sampling-importance-resampling over `candidates` popularity draws, which
    /// approaches the exact distribution as the candidates grow.
    Taste {
        /// Log-odds per standard deviation of taste match (0: popularity only).
        strength: f64,
        /// Popularity draws per chosen item.
        candidates: usize,
    },
}

impl Preference {
    /// Popularity draws per chosen item in taste mode: enough that the
    /// resampled choice is close to the exact distribution at strengths ≤ 3.
    pub const CANDIDATES: usize = 64;

    /// The taste model at `strength`, with [`Preference::CANDIDATES`] draws.
    #[must_use]
    pub fn taste(strength: f64) -> Preference {
        Preference::Taste { strength, candidates: Self::CANDIDATES }
    }
}

/// Output format of the event file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFileFormat {
    /// `events.csv` with header `subject_id,item_id,kind,value,timestamp`.
    Csv,
    /// `events.jsonl`, one object per line.
    Jsonl,
    /// A MovieLens-shaped research data set instead of a storefront:
    /// `ratings.csv` (`userId,movieId,rating,timestamp`, half-star ratings,
    /// sorted by user then movie, each pair once) and `movies.csv`
    /// (`movieId,title,genres`). No consent ledger: MovieLens is research data.
    #[serde(rename = "movielens-csv")]
    MovielensCsv,
}

/// Generator settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthParams {
    /// Number of subjects.
    pub subjects: u32,
    /// Number of items.
    pub items: u32,
    /// Mean events per subject (activity is log-normal around it).
    pub mean_events_per_subject: f64,
    /// Dimension of the latent tastes.
    pub rank: usize,
    /// Exponent of the power-law popularity: item j has weight (j + 1)^-exponent.
    pub popularity_exponent: f64,
    /// How subjects choose what to look at (storefront formats only).
    pub preference: Preference,
    /// Spread (σ of the log) of the log-normal number of events per subject.
    pub activity_sigma: f64,
    /// Start of the simulated period (unix seconds).
    pub start_unix_seconds: i64,
    /// Length of the simulated period.
    pub days: u32,
    /// Consent dynamics.
    pub consent: ConsentDynamics,
    /// Format of the event file.
    pub event_format: EventFileFormat,
    /// RNG seed: the same seed gives the same bytes.
    pub seed: u64,
}

impl Default for SynthParams {
    /// The bundled quickstart sample: small enough to commit, big enough to train on.
    fn default() -> Self {
        SynthParams {
            subjects: 4_000,
            items: 600,
            mean_events_per_subject: 12.0,
            rank: 8,
            popularity_exponent: 0.8,
            preference: Preference::Browse,
            activity_sigma: 0.8,
            start_unix_seconds: 1_735_689_600, // 2025-01-01
            days: 180,
            consent: ConsentDynamics::default(),
            event_format: EventFileFormat::Csv,
            seed: 7,
        }
    }
}

impl SynthParams {
    /// A small stand-in for ml-latest-small (610 users): 1,000 movies, about
    /// 30 ratings per user, written as MovieLens CSV. Tests use it where they
    /// need MovieLens-shaped data but must not depend on files outside the
    /// repository.
    #[must_use]
    pub fn movielens_shaped() -> Self {
        SynthParams {
            subjects: 610,
            items: 1_000,
            mean_events_per_subject: 25.0,
            rank: 8,
            popularity_exponent: 0.9,
            start_unix_seconds: 828_316_800, // 1996-04-01, as ml-latest-small starts in 1996
            days: 8_000,
            event_format: EventFileFormat::MovielensCsv,
            seed: 1,
            ..SynthParams::default()
        }
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, message: &str| Err(Error::InvalidParam { field, message: message.into() });
        if self.subjects == 0 {
            return bad("subjects", "must be at least 1");
        }
        if self.items < 2 {
            return bad("items", "must be at least 2");
        }
        if !(self.mean_events_per_subject >= 1.0 && self.mean_events_per_subject <= 10_000.0) {
            return bad("mean_events_per_subject", "must be within 1..=10000");
        }
        if !(1..=256).contains(&self.rank) {
            return bad("rank", "must be within 1..=256");
        }
        if !(0.0..=3.0).contains(&self.popularity_exponent) {
            return bad("popularity_exponent", "must be within 0..=3");
        }
        if !(0.0..=3.0).contains(&self.activity_sigma) {
            return bad("activity_sigma", "must be within 0..=3");
        }
        if let Preference::Taste { strength, candidates } = self.preference {
            if !(0.0..=10.0).contains(&strength) {
                return bad("preference.strength", "must be within 0..=10");
            }
            if !(1..=4096).contains(&candidates) {
                return bad("preference.candidates", "must be within 1..=4096");
            }
        }
        if self.days == 0 {
            return bad("days", "must be at least 1");
        }
        let c = &self.consent;
        for (field, share) in [
            ("consent.personalization", c.personalization),
            ("consent.training", c.training),
            ("consent.late_training", c.late_training),
            ("consent.withdrawal", c.withdrawal),
            ("consent.gpc", c.gpc),
            ("consent.erasure", c.erasure),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(Error::InvalidParam { field, message: format!("a share within 0..=1, found {share}") });
            }
        }
        Ok(())
    }
}

/// What was generated.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SynthSummary {
    /// Subjects generated.
    pub subjects: u64,
    /// Items in the catalogue.
    pub items: u64,
    /// Events written.
    pub events: u64,
    /// Consent records written.
    pub consent_records: u64,
    /// Erasure requests written.
    pub erasure_requests: u64,
    /// The files written.
    pub files: Vec<String>,
}

const CATEGORIES: [&str; 8] = ["books", "music", "garden", "kitchen", "outdoor", "toys", "games", "tools"];
const NOTICE_V1: &str = "2025-01";
const NOTICE_V2: &str = "2025-04";

struct Writers {
    events: BufWriter<File>,
    consent: BufWriter<File>,
    erasures: BufWriter<File>,
    format: EventFileFormat,
}

fn create(path: &Path) -> Result<BufWriter<File>> {
    File::create(path)
        .map(|f| BufWriter::with_capacity(1 << 20, f))
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

/// Generates a storefront into `dir`: `items.csv`, `events.csv` (or
/// `events.jsonl`), `consent.csv` and `erasure_requests.csv`.
///
/// `progress` receives the number of subjects done so far.
///
/// # Errors
/// [`Error::InvalidParam`] or [`Error::Io`].
pub fn generate(params: &SynthParams, dir: &Path, progress: &mut dyn FnMut(u64)) -> Result<SynthSummary> {
    params.validate()?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    if params.event_format == EventFileFormat::MovielensCsv {
        return generate_movielens(params, dir, progress);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let rank = params.rank;
    let scale = 1.0 / (rank as f64).sqrt();

    let item_traits: Vec<f32> =
        (0..params.items as usize * rank).map(|_| (rng.sample::<f64, _>(StandardNormal) * scale) as f32).collect();
    // Cumulative popularity for sampling by binary search.
    let mut cumulative = Vec::with_capacity(params.items as usize);
    let mut total = 0.0f64;
    for j in 0..params.items {
        total += (f64::from(j) + 1.0).powf(-params.popularity_exponent);
        cumulative.push(total);
    }

    let items_path = dir.join("items.csv");
    let mut items_file = create(&items_path)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    writeln!(items_file, "item_id,category").map_err(io(&items_path))?;
    for j in 0..params.items {
        writeln!(items_file, "{},{}", item_id(j), CATEGORIES[j as usize % CATEGORIES.len()])
            .map_err(io(&items_path))?;
    }
    items_file.flush().map_err(io(&items_path))?;

    let (events_name, format) = match params.event_format {
        EventFileFormat::Csv | EventFileFormat::MovielensCsv => ("events.csv", EventFileFormat::Csv),
        EventFileFormat::Jsonl => ("events.jsonl", EventFileFormat::Jsonl),
    };
    let events_path = dir.join(events_name);
    let consent_path = dir.join("consent.csv");
    let erasures_path = dir.join("erasure_requests.csv");
    let mut out = Writers {
        events: create(&events_path)?,
        consent: create(&consent_path)?,
        erasures: create(&erasures_path)?,
        format,
    };
    if format == EventFileFormat::Csv {
        writeln!(out.events, "subject_id,item_id,kind,value,timestamp").map_err(io(&events_path))?;
    }
    writeln!(out.consent, "subject_id,purpose,granted,effective_at,notice_version,proof_ref")
        .map_err(io(&consent_path))?;
    writeln!(out.erasures, "subject_id,requested_at").map_err(io(&erasures_path))?;

    let mut summary =
        SynthSummary { subjects: u64::from(params.subjects), items: u64::from(params.items), ..Default::default() };
    let sigma = params.activity_sigma;
    let activity = LogNormal::new(params.mean_events_per_subject.ln() - sigma * sigma / 2.0, sigma)
        .expect("valid log-normal parameters");
    let period = i64::from(params.days) * 86_400;
    let mut taste = vec![0f32; rank];
    let mut times: Vec<i64> = Vec::new();
    let mut chooser = Chooser::new(params.items as usize);
    for s in 0..params.subjects {
        for t in taste.iter_mut() {
            *t = rng.sample::<f64, _>(StandardNormal) as f32;
        }
        let n_events =
            (activity.sample(&mut rng).round() as usize).clamp(1, 20 * params.mean_events_per_subject as usize);
        let first_visit = params.start_unix_seconds + rng.random_range(0..period);
        let span = (params.start_unix_seconds + period - first_visit).max(1);
        times.clear();
        times.extend((0..n_events).map(|_| first_visit + rng.random_range(0..span)));
        times.sort_unstable();
        let last_visit = *times.last().expect("at least one event");
        let subject = subject_id(s);

        let written = write_consent(
            &mut out.consent,
            &mut out.erasures,
            &mut rng,
            params,
            &subject,
            first_visit,
            last_visit,
            period,
        )
        .map_err(io(&consent_path))?;
        summary.consent_records += written.0;
        summary.erasure_requests += written.1;

        chooser.start_subject();
        for &time in &times {
            let item = chooser.pick(&mut rng, params.preference, &cumulative, &item_traits, &taste);
            let score = dot(&taste, &item_traits[item * rank..(item + 1) * rank]);
            let id = item_id(item as u32);
            summary.events += write_event(&mut out, &subject, &id, "view", 1.0, time).map_err(io(&events_path))?;
            // Taste drives the funnel: a good match is more likely to be bought and rated well.
            if rng.random::<f64>() < sigmoid(2.0 * score - 1.5) {
                summary.events +=
                    write_event(&mut out, &subject, &id, "cart", 1.0, time + 30).map_err(io(&events_path))?;
                if rng.random::<f64>() < sigmoid(2.0 * score) {
                    summary.events +=
                        write_event(&mut out, &subject, &id, "purchase", 1.0, time + 90).map_err(io(&events_path))?;
                    if rng.random::<f64>() < 0.5 {
                        let noise: f64 = rng.sample::<f64, _>(StandardNormal) * 0.6;
                        let rating = (3.2 + 1.4 * score + noise).round().clamp(1.0, 5.0);
                        summary.events += write_event(&mut out, &subject, &id, "rating", rating, time + 86_400)
                            .map_err(io(&events_path))?;
                    }
                }
            }
        }
        if s % 1000 == 999 {
            progress(u64::from(s) + 1);
        }
    }
    for (writer, path) in
        [(&mut out.events, &events_path), (&mut out.consent, &consent_path), (&mut out.erasures, &erasures_path)]
    {
        writer.flush().map_err(io(path))?;
    }
    progress(u64::from(params.subjects));
    summary.files =
        [items_path, events_path, consent_path, erasures_path].iter().map(|p| p.display().to_string()).collect();
    Ok(summary)
}

const GENRES: [&str; 12] = [
    "Action",
    "Adventure",
    "Animation",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Horror",
    "Romance",
    "Sci-Fi",
    "Thriller",
];

/// Fewest ratings per user, as in ml-latest-small (every user rated at least 20 movies).
const MOVIELENS_MIN_RATINGS: usize = 20;

/// Writes `ratings.csv` and `movies.csv` in the MovieLens latest layout.
///
/// Users belong to a few taste clusters (their latent taste is the cluster's
/// centre plus a personal part), movies have latent traits, a quality bias and
/// a power-law popularity. A user watches popular movies that match their
/// taste, and rates them 3.5 plus user and movie biases plus the taste match
/// plus noise, rounded to half stars within 0.5..=5.0. A low-rank model thus
/// beats the movie-mean baseline, as on real MovieLens data.
fn generate_movielens(params: &SynthParams, dir: &Path, progress: &mut dyn FnMut(u64)) -> Result<SynthSummary> {
    const CLUSTERS: usize = 5;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let rank = params.rank;
    let n_items = params.items as usize;
    let scale = 1.0 / (rank as f64).sqrt();
    let normal = |rng: &mut ChaCha8Rng, std: f64| rng.sample::<f64, _>(StandardNormal) * std;
    let item_traits: Vec<f32> = (0..n_items * rank).map(|_| normal(&mut rng, scale) as f32).collect();
    let item_bias: Vec<f64> = (0..n_items).map(|_| normal(&mut rng, 0.4)).collect();
    let centres: Vec<f64> = (0..CLUSTERS * rank).map(|_| normal(&mut rng, 1.0)).collect();
    let mut cumulative = Vec::with_capacity(n_items);
    let mut total = 0.0f64;
    for j in 0..params.items {
        total += (f64::from(j) + 1.0).powf(-params.popularity_exponent);
        cumulative.push(total);
    }

    let movies_path = dir.join("movies.csv");
    let mut movies = create(&movies_path)?;
    writeln!(movies, "movieId,title,genres").map_err(io(&movies_path))?;
    for j in 0..params.items {
        let year = 1930 + rng.random_range(0..89);
        let first = rng.random_range(0..GENRES.len());
        let genres = match rng.random_range(0..3) {
            0 => GENRES[first].to_string(),
            k => {
                let mut picked: Vec<usize> = (0..=k).map(|i| (first + i * 5) % GENRES.len()).collect();
                picked.sort_unstable();
                picked.iter().map(|&g| GENRES[g]).collect::<Vec<_>>().join("|")
            }
        };
        writeln!(movies, "{},Synthetic Film {} ({year}),{genres}", movie_id(j), j + 1).map_err(io(&movies_path))?;
    }
    movies.flush().map_err(io(&movies_path))?;

    let ratings_path = dir.join("ratings.csv");
    let mut ratings = create(&ratings_path)?;
    writeln!(ratings, "userId,movieId,rating,timestamp").map_err(io(&ratings_path))?;
    let most = (n_items / 2).max(1);
    let fewest = MOVIELENS_MIN_RATINGS.min(most);
    // Every user rates at least `fewest` movies, and the rest is heavy-tailed
    // around the mean, so that activity has thirds (light, medium, heavy)
    // rather than a pile at the minimum.
    let sigma = 1.0f64;
    let extra_mean = (params.mean_events_per_subject - fewest as f64).max(1.0);
    let activity = LogNormal::new(extra_mean.ln() - sigma * sigma / 2.0, sigma).expect("valid log-normal parameters");
    let period = i64::from(params.days) * 86_400;
    let mut summary =
        SynthSummary { subjects: u64::from(params.subjects), items: u64::from(params.items), ..Default::default() };
    let mut taste = vec![0f32; rank];
    let mut seen = vec![false; n_items];
    let mut rated: Vec<(usize, i64)> = Vec::new();
    for s in 0..params.subjects {
        let cluster = rng.random_range(0..CLUSTERS);
        for (d, t) in taste.iter_mut().enumerate() {
            *t = (centres[cluster * rank + d] + normal(&mut rng, 0.6)) as f32;
        }
        let user_bias = normal(&mut rng, 0.35);
        let n = (fewest + activity.sample(&mut rng).round() as usize)
            .min(most.min(20 * params.mean_events_per_subject as usize).max(fewest));
        let first_visit = params.start_unix_seconds + rng.random_range(0..period);
        let span = (params.start_unix_seconds + period - first_visit).clamp(1, 400 * 86_400);
        rated.clear();
        // Popular, matching movies get watched; a cap on attempts keeps a
        // user with a narrow taste from looping when the head is exhausted.
        for _ in 0..50 * n {
            if rated.len() == n {
                break;
            }
            let j = pick_item(&mut rng, &cumulative, &item_traits, &taste, rank);
            if !seen[j] {
                seen[j] = true;
                rated.push((j, first_visit + rng.random_range(0..span)));
            }
        }
        rated.sort_unstable();
        for &(j, time) in &rated {
            seen[j] = false;
            let score = dot(&taste, &item_traits[j * rank..(j + 1) * rank]);
            let raw = 2.9 + user_bias + item_bias[j] + 0.7 * score + normal(&mut rng, 0.5);
            let stars = ((raw * 2.0).round() / 2.0).clamp(0.5, 5.0);
            writeln!(ratings, "{},{},{stars:.1},{time}", s + 1, movie_id(j as u32)).map_err(io(&ratings_path))?;
            summary.events += 1;
        }
        if s % 1000 == 999 {
            progress(u64::from(s) + 1);
        }
    }
    ratings.flush().map_err(io(&ratings_path))?;
    progress(u64::from(params.subjects));
    summary.files = [ratings_path, movies_path].iter().map(|p| p.display().to_string()).collect();
    Ok(summary)
}

/// The MovieLens `movieId` of item `j` of a MovieLens-shaped data set: 1-based,
/// with the most popular movies first, as Toy Story is movie 1.
pub fn movie_id(j: u32) -> u32 {
    j + 1
}

/// The external id of subject `s` (what a storefront would call a customer id).
pub fn subject_id(s: u32) -> String {
    format!("cust-{s:07}")
}

/// The catalogue id of item `j`.
pub fn item_id(j: u32) -> String {
    format!("sku-{j:06}")
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}

/// Picks the items one subject looks at, under a [`Preference`].
struct Chooser {
    /// Items this subject has already chosen (taste mode picks distinct items).
    seen: Vec<bool>,
    chosen: Vec<usize>,
    /// Scratch: candidate items and their resampling weights.
    candidates: Vec<(usize, f64)>,
}

impl Chooser {
    fn new(items: usize) -> Self {
        Chooser { seen: vec![false; items], chosen: Vec::new(), candidates: Vec::new() }
    }

    fn start_subject(&mut self) {
        for &j in &self.chosen {
            self.seen[j] = false;
        }
        self.chosen.clear();
    }

    fn pick(
        &mut self,
        rng: &mut ChaCha8Rng,
        preference: Preference,
        cumulative: &[f64],
        traits: &[f32],
        taste: &[f32],
    ) -> usize {
        let rank = taste.len();
        let (strength, draws) = match preference {
            Preference::Browse => return pick_item(rng, cumulative, traits, taste, rank),
            Preference::Taste { strength, candidates } => (strength, candidates),
        };
        // Sampling-importance-resampling: popularity proposes, taste
        // reweighs. Items the subject already chose get weight zero; if every
        // candidate was seen (a very active subject), a repeat is allowed,
        // which the extractor merges like a second visit.
        let total = *cumulative.last().expect("at least two items");
        self.candidates.clear();
        let mut best = f64::NEG_INFINITY;
        for _ in 0..draws {
            let u = rng.random::<f64>() * total;
            let j = cumulative.partition_point(|&c| c < u).min(cumulative.len() - 1);
            let logit = strength * dot(taste, &traits[j * rank..(j + 1) * rank]);
            best = best.max(logit);
            self.candidates.push((j, logit));
        }
        let mut sum = 0.0;
        for (j, w) in &mut self.candidates {
            *w = if self.seen[*j] { 0.0 } else { (*w - best).exp() };
            sum += *w;
        }
        let j = if sum > 0.0 {
            let mut u = rng.random::<f64>() * sum;
            let mut pick = self.candidates[0].0;
            for &(j, w) in &self.candidates {
                if w > 0.0 {
                    pick = j;
                    if u < w {
                        break;
                    }
                    u -= w;
                }
            }
            pick
        } else {
            self.candidates[0].0
        };
        if !self.seen[j] {
            self.seen[j] = true;
            self.chosen.push(j);
        }
        j
    }
}

/// Draws a few candidates by popularity and picks the best taste match among
/// them, softly: popular items get seen, matching items get chosen.
fn pick_item(rng: &mut ChaCha8Rng, cumulative: &[f64], traits: &[f32], taste: &[f32], rank: usize) -> usize {
    const CANDIDATES: usize = 6;
    let total = *cumulative.last().expect("at least two items");
    let mut best = 0;
    let mut best_key = f64::NEG_INFINITY;
    for _ in 0..CANDIDATES {
        let u = rng.random::<f64>() * total;
        let j = cumulative.partition_point(|&c| c < u).min(cumulative.len() - 1);
        let gumbel = -(-rng.random::<f64>().max(1e-12).ln()).ln();
        let key = 3.0 * dot(taste, &traits[j * rank..(j + 1) * rank]) + gumbel;
        if key > best_key {
            best_key = key;
            best = j;
        }
    }
    best
}

fn write_event(
    out: &mut Writers,
    subject: &str,
    item: &str,
    kind: &str,
    value: f64,
    time: i64,
) -> std::io::Result<u64> {
    match out.format {
        EventFileFormat::Csv | EventFileFormat::MovielensCsv => {
            writeln!(out.events, "{subject},{item},{kind},{value},{time}")?
        }
        EventFileFormat::Jsonl => writeln!(
            out.events,
            r#"{{"subject_id":"{subject}","item_id":"{item}","kind":"{kind}","value":{value},"timestamp":{time}}}"#
        )?,
    }
    Ok(1)
}

fn consent_line(
    out: &mut BufWriter<File>,
    subject: &str,
    purpose: &str,
    granted: bool,
    at: i64,
    notice: &str,
    proof: &str,
) -> std::io::Result<u64> {
    let at = Timestamp::from_unix_seconds(at);
    writeln!(out, "{subject},{purpose},{granted},{at},{notice},{proof}")?;
    Ok(1)
}

/// Writes one subject's consent history; returns (records, erasure requests).
#[allow(clippy::too_many_arguments)]
fn write_consent(
    consent: &mut BufWriter<File>,
    erasures: &mut BufWriter<File>,
    rng: &mut ChaCha8Rng,
    params: &SynthParams,
    subject: &str,
    first_visit: i64,
    last_visit: i64,
    period: i64,
) -> std::io::Result<(u64, u64)> {
    let c = &params.consent;
    let mut records = 0;
    let banner = first_visit - 5;
    let receipt = |rng: &mut ChaCha8Rng| format!("banner-{:012x}", rng.random::<u64>() & 0xffff_ffff_ffff);
    let personalization = rng.random::<f64>() < c.personalization;
    if personalization {
        let proof = receipt(rng);
        records += consent_line(consent, subject, "personalization", true, banner, NOTICE_V1, &proof)?;
    }
    let training_now = rng.random::<f64>() < c.training;
    let mut training_granted = training_now;
    if training_now {
        let proof = receipt(rng);
        records += consent_line(consent, subject, "training", true, banner, NOTICE_V1, &proof)?;
    } else if rng.random::<f64>() < c.late_training && last_visit > first_visit + 60 {
        let at = rng.random_range(first_visit..last_visit);
        let proof = receipt(rng);
        records += consent_line(consent, subject, "training", true, at, NOTICE_V2, &proof)?;
        training_granted = true;
    }
    let end = params.start_unix_seconds + period;
    if training_granted && rng.random::<f64>() < c.withdrawal {
        let at = rng.random_range(first_visit..end);
        records += consent_line(consent, subject, "training", false, at, NOTICE_V2, "")?;
    }
    if personalization && rng.random::<f64>() < c.gpc {
        let at = rng.random_range(first_visit..end);
        records += consent_line(consent, subject, "personalization", false, at, NOTICE_V2, "sec-gpc:1")?;
    }
    let mut erasure = 0;
    if rng.random::<f64>() < c.erasure {
        let at = Timestamp::from_unix_seconds(rng.random_range(first_visit..end));
        writeln!(erasures, "{subject},{at}")?;
        erasure = 1;
    }
    Ok((records, erasure))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SynthParams {
        SynthParams { subjects: 300, items: 50, mean_events_per_subject: 10.0, ..SynthParams::default() }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        generate(&small(), a.path(), &mut |_| {}).unwrap();
        generate(&small(), b.path(), &mut |_| {}).unwrap();
        generate(&SynthParams { seed: 8, ..small() }, c.path(), &mut |_| {}).unwrap();
        for name in ["events.csv", "consent.csv", "erasure_requests.csv", "items.csv"] {
            let read = |d: &tempfile::TempDir| std::fs::read(d.path().join(name)).unwrap();
            assert_eq!(read(&a), read(&b), "{name} differs between identical runs");
        }
        assert_ne!(
            std::fs::read(a.path().join("events.csv")).unwrap(),
            std::fs::read(c.path().join("events.csv")).unwrap()
        );
    }

    #[test]
    fn popularity_is_skewed_and_every_kind_occurs() {
        let dir = tempfile::tempdir().unwrap();
        let summary = generate(&small(), dir.path(), &mut |_| {}).unwrap();
        let text = std::fs::read_to_string(dir.path().join("events.csv")).unwrap();
        let mut per_item = std::collections::HashMap::<&str, u64>::new();
        let mut kinds = std::collections::BTreeSet::new();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split(',').collect();
            kinds.insert(fields[2]);
            *per_item.entry(fields[1]).or_default() += 1;
        }
        assert_eq!(kinds.into_iter().collect::<Vec<_>>(), ["cart", "purchase", "rating", "view"]);
        assert_eq!(text.lines().count() as u64 - 1, summary.events);
        let mut counts: Vec<u64> = per_item.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top_tenth: u64 = counts[..counts.len() / 10].iter().sum();
        assert!(
            top_tenth as f64 > 0.25 * summary.events as f64,
            "the head should dominate: {top_tenth} of {}",
            summary.events
        );
        assert!(summary.consent_records > 300 && summary.erasure_requests < 30);
    }

    fn movielens_rows(dir: &Path) -> Vec<(u32, u32, f64, i64)> {
        let text = std::fs::read_to_string(dir.join("ratings.csv")).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("userId,movieId,rating,timestamp"));
        lines
            .map(|line| {
                let f: Vec<&str> = line.split(',').collect();
                (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn movielens_shaped_data_looks_like_ml_latest_small() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let params = SynthParams::movielens_shaped();
        let summary = generate(&params, a.path(), &mut |_| {}).unwrap();
        generate(&params, b.path(), &mut |_| {}).unwrap();
        for name in ["ratings.csv", "movies.csv"] {
            let read = |d: &tempfile::TempDir| std::fs::read(d.path().join(name)).unwrap();
            assert_eq!(read(&a), read(&b), "{name} differs between identical runs");
        }
        assert!(!a.path().join("consent.csv").exists(), "MovieLens is research data: no consent ledger");

        let rows = movielens_rows(a.path());
        assert_eq!(rows.len() as u64, summary.events);
        // Sorted by user then movie, each pair once, every user with at least 20 ratings.
        assert!(rows.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
        let mut per_user = std::collections::BTreeMap::<u32, usize>::new();
        for r in &rows {
            *per_user.entry(r.0).or_default() += 1;
        }
        assert_eq!(per_user.len(), 610);
        assert!(per_user.values().all(|&n| n >= MOVIELENS_MIN_RATINGS), "{per_user:?}");
        // Half stars within 0.5..=5.0, skewed high as MovieLens is: mean about 3.5, 4.0 the most common.
        assert!(rows.iter().all(|r| (0.5..=5.0).contains(&r.2) && (r.2 * 2.0).fract() == 0.0));
        let mut stars = [0usize; 10];
        for r in &rows {
            stars[(r.2 * 2.0) as usize - 1] += 1;
        }
        let mean = rows.iter().map(|r| r.2).sum::<f64>() / rows.len() as f64;
        assert!((3.2..3.8).contains(&mean), "mean rating {mean}: {stars:?}");
        let mode = stars.iter().enumerate().max_by_key(|(_, n)| **n).unwrap().0;
        assert!((6..=7).contains(&mode), "most common rating should be 3.5 or 4.0: {stars:?}");
        assert!(stars.iter().all(|&n| n > 0), "every half star occurs: {stars:?}");

        let movies = std::fs::read_to_string(a.path().join("movies.csv")).unwrap();
        let mut lines = movies.lines();
        assert_eq!(lines.next(), Some("movieId,title,genres"));
        assert_eq!(lines.count(), 1_000);
        assert!(movies.lines().nth(1).unwrap().starts_with("1,Synthetic Film 1 ("));
    }

    /// Taste mode: each subject's items are distinct (while candidates last)
    /// and chosen for their match, far beyond what popularity alone picks.
    #[test]
    fn taste_mode_picks_distinct_matching_items() {
        let (rank, items) = (8, 400);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let traits: Vec<f32> =
            (0..items * rank).map(|_| (rng.sample::<f64, _>(StandardNormal) / (rank as f64).sqrt()) as f32).collect();
        let mut cumulative = Vec::new();
        let mut total = 0.0;
        for j in 0..items {
            total += (j as f64 + 1.0).powf(-0.8);
            cumulative.push(total);
        }
        let mut chooser = Chooser::new(items);
        let (mut taste_match, mut browse_match, mut repeats) = (0.0, 0.0, 0);
        for _ in 0..200 {
            let taste: Vec<f32> = (0..rank).map(|_| rng.sample::<f64, _>(StandardNormal) as f32).collect();
            chooser.start_subject();
            let mut seen = std::collections::HashSet::new();
            for _ in 0..20 {
                let j = chooser.pick(&mut rng, Preference::taste(3.0), &cumulative, &traits, &taste);
                repeats += usize::from(!seen.insert(j));
                taste_match += dot(&taste, &traits[j * rank..(j + 1) * rank]);
                let b = chooser.pick(&mut rng, Preference::taste(0.0), &cumulative, &traits, &taste);
                browse_match += dot(&taste, &traits[b * rank..(b + 1) * rank]);
            }
        }
        let n = 200.0 * 20.0;
        assert_eq!(repeats, 0, "a subject's taste-mode items are distinct");
        assert!(taste_match / n > 1.0, "chosen items match the taste: mean {}", taste_match / n);
        assert!((browse_match / n).abs() < 0.15, "strength 0 is popularity only: mean {}", browse_match / n);
    }

    #[test]
    fn bad_parameters_are_named() {
        let err = generate(&SynthParams { items: 1, ..small() }, Path::new("/nonexistent"), &mut |_| {}).unwrap_err();
        assert_eq!(err.to_string(), "invalid synth parameter `items`: must be at least 2");
    }
}

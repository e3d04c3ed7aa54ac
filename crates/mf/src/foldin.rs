//! Fold-in: a subject's vector from their own interactions, at request time.
//!
//! This is the subject step of training, run on one subject against the
//! released item side. Under joint DP it costs no privacy: it uses only the
//! subject's own data and the already-private model, and its result goes
//! back to that subject alone.

use hush_features::Feedback;

use crate::kernels::PANEL;
use crate::linalg;
use crate::Model;

/// The normal equations of one least-squares solve: `a x = b`.
pub(crate) struct NormalEquations {
    pub(crate) n: usize,
    pub(crate) a: Vec<f64>,
    pub(crate) b: Vec<f64>,
}

impl NormalEquations {
    pub(crate) fn new(n: usize) -> Self {
        NormalEquations { n, a: vec![0.0; n * n], b: vec![0.0; n] }
    }

    /// Starts from a given matrix (upper triangle used), e.g. the item Gramian.
    pub(crate) fn from_matrix(n: usize, a: &[f64]) -> Self {
        NormalEquations { n, a: a.to_vec(), b: vec![0.0; n] }
    }

    /// Adds `weight_a · z zᵀ` to `a` and `weight_b · z` to `b`.
    #[inline(always)]
    pub(crate) fn add(&mut self, z: &[f64], weight_a: f64, weight_b: f64) {
        linalg::add_outer_upper(&mut self.a, self.n, z, weight_a);
        for (bi, zi) in self.b.iter_mut().zip(z) {
            *bi += weight_b * zi;
        }
    }

    /// Solves `(a + diag(reg)) x = b`, raising the ridge if needed.
    #[inline(always)]
    pub(crate) fn solve(self, reg: &[f64]) -> Vec<f64> {
        let mut x = vec![0.0; self.n];
        linalg::solve_with_ridge(&self.a, self.n, reg, 1.0, &self.b, &mut x);
        x
    }
}

/// A subject's vector: factors and (explicit mode) bias.
#[derive(Clone, Debug, PartialEq)]
pub struct SubjectVector {
    /// Latent factors.
    pub factors: Vec<f64>,
    /// Subject bias (explicit mode; 0 in implicit mode).
    pub bias: f64,
}

/// Explicit subject step: least squares on `[v_i, 1]` against `r − μ − b_i`,
/// with ALS-WR regularization `λ · n` on every coordinate.
#[inline(always)]
pub(crate) fn explicit_subject_step(
    rank: usize,
    lambda: f64,
    mean: f64,
    interactions: impl Iterator<Item = (usize, f64)>,
    item_factors: impl Fn(usize, &mut [f64]),
    item_bias: impl Fn(usize) -> f64,
) -> SubjectVector {
    let n = rank + 1;
    let mut eq = NormalEquations::new(n);
    let mut z = vec![0.0; n];
    z[rank] = 1.0;
    let mut count = 0.0;
    for (item, rating) in interactions {
        item_factors(item, &mut z[..rank]);
        eq.add(&z, 1.0, rating - mean - item_bias(item));
        count += 1.0;
    }
    if count == 0.0 {
        return SubjectVector { factors: vec![0.0; rank], bias: 0.0 };
    }
    let reg = vec![lambda * count; n];
    let mut w = eq.solve(&reg);
    let bias = w.pop().expect("rank + 1 coordinates");
    SubjectVector { factors: w, bias }
}

/// Implicit subject step (Hu, Koren, Volinsky 2008): `(VᵀV + Vᵀ(C−I)V + λI) x = Vᵀ C p`
/// with confidence `c = 1 + α·value` and preference 1 on observed items.
#[inline(always)]
pub(crate) fn implicit_subject_step(
    rank: usize,
    lambda: f64,
    alpha: f64,
    gram: &[f64],
    interactions: impl Iterator<Item = (usize, f64)>,
    item_factors: impl Fn(usize, &mut [f64]),
) -> SubjectVector {
    let mut eq = NormalEquations::from_matrix(rank, gram);
    // Item vectors are added to the matrix four at a time (one pass over it
    // instead of four); the right-hand side takes each as it comes.
    let mut batch = vec![0.0; 4 * rank];
    let mut weights = [0.0; 4];
    let mut pending = 0;
    let mut any = false;
    for (item, value) in interactions {
        let z = &mut batch[pending * rank..(pending + 1) * rank];
        item_factors(item, z);
        let confidence = confidence(alpha, value);
        for (bi, zi) in eq.b.iter_mut().zip(z.iter()) {
            *bi += confidence * zi;
        }
        weights[pending] = confidence - 1.0;
        pending += 1;
        any = true;
        if pending == 4 {
            let z = std::array::from_fn(|k| &batch[k * rank..(k + 1) * rank]);
            linalg::add_outer_upper4(&mut eq.a, rank, z, weights);
            pending = 0;
        }
    }
    for (z, &weight) in batch.chunks_exact(rank).zip(&weights).take(pending) {
        linalg::add_outer_upper(&mut eq.a, rank, z, weight);
    }
    if !any {
        return SubjectVector { factors: vec![0.0; rank], bias: 0.0 };
    }
    SubjectVector { factors: eq.solve(&vec![lambda; rank]), bias: 0.0 }
}

/// The confidence of an observed implicit interaction: `1 + α·value`.
#[inline(always)]
fn confidence(alpha: f64, value: f64) -> f64 {
    1.0 + alpha * value
}

/// The indices of the `k` largest scores, best first (ties by index), skipping
/// excluded items: one pass that keeps a sorted buffer of the best so far,
/// since k is small next to the catalogue.
fn best_k(scores: &[f32], k: usize, exclude: impl Fn(usize) -> bool) -> Vec<usize> {
    if k == 0 {
        return Vec::new();
    }
    // Sorted best first, in `ranking` order.
    let better = |a: (f32, usize), b: (f32, usize)| ranking(a, b).is_lt();
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    for (block, chunk) in scores.chunks(SKIP_BLOCK).enumerate() {
        // Once k are held, most blocks lie wholly below the k-th best: one
        // vector comparison skips them. (Strictly below, so ties, signed
        // zeros and NaNs still take the exact path.)
        if best.len() == k && below(chunk, best[k - 1].0) {
            continue;
        }
        for (offset, &score) in chunk.iter().enumerate() {
            let i = block * SKIP_BLOCK + offset;
            // Indices only grow, so an item that merely ties the k-th best
            // loses the tie: `<=` is the exact test, and cheaper than the full order.
            if best.len() == k && score.total_cmp(&best[k - 1].0).is_le() {
                continue;
            }
            if exclude(i) {
                continue;
            }
            let at = best.partition_point(|&b| better(b, (score, i)));
            best.insert(at, (score, i));
            best.truncate(k);
        }
    }
    best.into_iter().map(|(_, i)| i).collect()
}

/// The order of every ranking hush returns: higher score first, ties by
/// lower item index (`total_cmp`, so it is total even with NaNs).
fn ranking(a: (f32, usize), b: (f32, usize)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Scores examined together when most can be skipped at once.
const SKIP_BLOCK: usize = 16;

/// Whether every score is strictly below `bound` (false for any NaN). No
/// early exit, so the loop compiles to vector comparisons.
#[inline(always)]
fn below(scores: &[f32], bound: f32) -> bool {
    scores.iter().fold(true, |all, &s| all & (s < bound))
}

/// Quantization levels of the item factors: ±127, signed bytes.
const ITEM_LEVELS: i32 = 127;

/// Quantization levels of a subject's factors: ±63, stored offset by
/// [`QUERY_OFFSET`] as unsigned bytes of at most 127, so that the AVX2 pass
/// (`vpmaddubsw`, which saturates a pair of products at 2¹⁵ − 1) stays
/// exact: 2 · 127 · 127 < 2¹⁵.
const QUERY_LEVELS: i32 = 63;

/// What is added to each quantized subject factor to make it unsigned.
const QUERY_OFFSET: i32 = 64;

/// The item factors again, laid out for a fast first scoring pass, and the
/// other per-model state serving derives at load (norms, popularity order).
///
/// Factors are quantized to signed bytes, each item on its own scale (its
/// largest |factor| is 127 levels), and items come in panels of [`PANEL`]: for each group of four
/// dimensions, the panel's items side by side, each holding its four
/// values. One `vpdpbusd` (AVX-512 VNNI) then multiply-adds four dimensions
/// for sixteen items at once, exactly, in integers; AVX2 takes a
/// `vpmaddubsw` and a `vpmaddwd` per eight items. A 10k × 64 catalogue is
/// 640 KB, well within a core's L2 cache, where the `f32` matrix (2.6 MB)
/// would stream from L3 on every request.
///
/// The integer dot products are exact, so an approximate score differs from
/// the exact one only by the quantization of the item factors (known at
/// load) and of the subject's factors (known per request), plus rounding in
/// the final scaling. [`ServingIndex::error_bounds`] bounds that difference
/// item by item, and [`Model::top_k`] uses the bounds to rescore exactly
/// every item that could still be in the top k, so the ranking is the exact
/// one. Per-item scales and bounds keep this tight when item norms differ
/// by orders of magnitude, as in a DP release, where most items are shrunk
/// to (near) zero and a few noisy ones are large: on one scale and one
/// bound, a single item of norm 1,054 among medians of 0.04 put all 9,950
/// items of a 10k catalogue within the bound, and every request rescored
/// the whole catalogue exactly.
/// Coarse levels only widen the set rescored (with one catalogue-wide
/// scale, 48 items for a top 10
/// of 10k at rank 64, against 11 with 16-bit levels), while the pass itself
/// reads half the memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ServingIndex {
    /// `panels × quads × PANEL × 4` quantized factors; items and the
    /// dimensions past the rank are zero.
    quantized: Vec<i8>,
    /// Groups of four dimensions per item: ⌈rank / 4⌉.
    quads: usize,
    /// `QUERY_OFFSET ×` the sum of each item's quantized factors (padded to
    /// whole panels): what the offset adds to an integer dot product.
    offset_terms: Vec<i32>,
    /// The value of one quantization level of each item, padded to whole panels.
    item_scales: Vec<f32>,
    /// Each item's quantization error, as a norm: ‖v − scale·q‖.
    item_errors: Vec<f32>,
    /// Each item's factor norm for the bounds: summed in `f64` and rounded
    /// up, so a tiny row's norm never underflows to zero as `norms`' can.
    bound_norms: Vec<f32>,
    /// The ranking prior of each item ([`Model::prior`]), padded to whole panels.
    prior: Vec<f32>,
    /// Each item's factor norm.
    norms: Vec<f32>,
    /// Whether the quantized pass may be used (finite factors and scale).
    usable: bool,
    /// Item indices by (noisy) popularity, most popular first, ties by index.
    by_popularity: Vec<u32>,
}

/// A subject's factors quantized for the first scoring pass.
struct QuantizedQuery {
    /// Groups of four quantized factors plus [`QUERY_OFFSET`], as unsigned
    /// bytes packed in one `i32` (lowest byte the first dimension), as
    /// `vpdpbusd` and `vpmaddubsw` read them.
    quads: Vec<i32>,
    /// The value of one level of the query: times an item's scale, it
    /// turns an integer dot product into a score.
    scale: f32,
    /// ‖q_u‖ and ‖e_u‖ (the quantized query's norm, and its quantization
    /// error's) and ‖u‖, for the per-item bounds.
    q_norm: f64,
    e_norm: f64,
    u_norm: f64,
    /// Whether the bounds are usable (a finite query).
    finite: bool,
}

impl ServingIndex {
    pub(crate) fn of(model: &Model) -> ServingIndex {
        let (d, n) = (model.rank, model.n_items());
        let quads = d.div_ceil(4);
        let padded = n.div_ceil(PANEL) * PANEL;
        let mut quantized = vec![0i8; padded * quads * 4];
        let mut offset_terms = vec![0i32; padded];
        let mut prior = vec![0.0; padded];
        let mut item_scales = vec![0.0f32; padded];
        let mut item_errors = Vec::with_capacity(n);
        let mut norms = Vec::with_capacity(n);
        let mut bound_norms = Vec::with_capacity(n);
        let mut usable = true;
        for (i, prior) in prior.iter_mut().enumerate().take(n) {
            let (panel, lane) = (i / PANEL, i % PANEL);
            let row = model.factors(i);
            let largest = row.iter().fold(0.0f32, |m, &f| m.max(f.abs()));
            let item_scale = (f64::from(largest) / f64::from(ITEM_LEVELS)) as f32;
            item_scales[i] = item_scale;
            let mut error = 0.0f64;
            for (k, &f) in row.iter().enumerate() {
                let q = quantize(f, item_scale, ITEM_LEVELS);
                quantized[((panel * quads + k / 4) * PANEL + lane) * 4 + k % 4] = q as i8;
                offset_terms[i] += QUERY_OFFSET * q;
                // Exact in f64: a 24-bit scale times an 8-bit integer.
                let e = f64::from(f) - f64::from(item_scale) * f64::from(q);
                error += e * e;
            }
            // Rounded up, so the bound built on it still holds.
            item_errors.push(next_up(error.sqrt() as f32));
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            norms.push(norm);
            let exact_norm = row.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
            bound_norms.push(next_up(exact_norm as f32));
            *prior = model.prior(i);
            usable &= largest.is_finite() && norm.is_finite() && prior.is_finite();
        }
        let mut by_popularity: Vec<u32> = (0..n as u32).collect();
        by_popularity.sort_by(|&a, &b| {
            ranking((model.popularity[a as usize], a as usize), (model.popularity[b as usize], b as usize))
        });
        ServingIndex {
            quantized,
            quads,
            offset_terms,
            item_scales,
            item_errors,
            bound_norms,
            prior,
            norms,
            usable,
            by_popularity,
        }
    }

    /// Quantizes subject factors `u` on their own scale, keeping what the
    /// per-item error bounds need.
    fn quantize_query(&self, u: &[f32]) -> QuantizedQuery {
        let largest = u.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
        let query_scale = (f64::from(largest) / f64::from(QUERY_LEVELS)) as f32;
        // Dimensions past the rank hold the offset too; their item factors are zero.
        let mut quads = vec![i32::from_le_bytes([QUERY_OFFSET as u8; 4]); self.quads];
        let (mut q_norm, mut e_norm, mut u_norm) = (0.0f64, 0.0f64, 0.0f64);
        for (k, &x) in u.iter().enumerate() {
            let q = quantize(x, query_scale, QUERY_LEVELS);
            let mut bytes = quads[k / 4].to_le_bytes();
            bytes[k % 4] = (q + QUERY_OFFSET) as u8;
            quads[k / 4] = i32::from_le_bytes(bytes);
            let e = f64::from(x) - f64::from(query_scale) * f64::from(q);
            q_norm += f64::from(q) * f64::from(q);
            e_norm += e * e;
            u_norm += f64::from(x) * f64::from(x);
        }
        let finite = largest.is_finite() && u_norm.is_finite();
        QuantizedQuery {
            quads,
            scale: query_scale,
            q_norm: q_norm.sqrt(),
            e_norm: e_norm.sqrt(),
            u_norm: u_norm.sqrt(),
            finite,
        }
    }

    /// The panels and `query` as the scoring kernels read them.
    #[cfg(target_arch = "x86_64")]
    fn panel_scan<'a>(&'a self, query: &'a QuantizedQuery) -> crate::kernels::PanelScan<'a> {
        crate::kernels::PanelScan {
            quantized: &self.quantized,
            quads: self.quads,
            offset_terms: &self.offset_terms,
            item_scales: &self.item_scales,
            prior: &self.prior,
            query: &query.quads,
            query_scale: query.scale,
        }
    }

    /// A bound on |approximate − exact| score of every item (padded to
    /// whole panels), or `None` for a query without one (non-finite).
    ///
    /// With `u = s_u·q_u + e_u` and `v = s_v·q_v + e_v`,
    /// `u·v = s_u·s_v·(q_u·q_v) + s_u·(q_u·e_v) + e_u·v`; Cauchy–Schwarz bounds
    /// the last two terms by `s_u‖q_u‖·‖e_v‖ + ‖e_u‖·‖v‖`. To that come the
    /// `f32` roundings of both scores (the product of the two scales, the
    /// conversion and scaling of the integer product and the prior's
    /// addition here; the summation of the exact dot product there), and
    /// those of the bound's own use (`approximate ± bound`). A 1% margin
    /// covers the bound's arithmetic.
    fn error_bounds(&self, query: &QuantizedQuery, d: usize) -> Option<Vec<f32>> {
        if !query.finite {
            return None;
        }
        let a = f64::from(query.scale) * query.q_norm;
        let b = query.e_norm;
        let magnitude = query.u_norm + query.e_norm;
        let unit = f64::from(f32::EPSILON);
        let roundings = (d as f64 + 12.0) * unit;
        // Underflow in the scaling, should the factors be tiny.
        let underflow = 2f64.powi(-100);
        let mut bounds = vec![0.0f32; self.prior.len()];
        for (i, bound) in bounds.iter_mut().enumerate().take(self.norms.len()) {
            let (error, norm) = (f64::from(self.item_errors[i]), f64::from(self.bound_norms[i]));
            let quantization = a * error + b * norm;
            let score = magnitude * (norm + error) + f64::from(self.prior[i].abs());
            let total = 1.01 * (quantization + roundings * score) + underflow;
            *bound = if total.is_finite() { next_up(total as f32) } else { f32::INFINITY };
        }
        Some(bounds)
    }
}

/// The next `f32` above a finite, non-negative `x`: a conversion that
/// rounded down cannot make a bound smaller than it is.
fn next_up(x: f32) -> f32 {
    if x.is_finite() {
        f32::from_bits(x.to_bits() + 1)
    } else {
        x
    }
}

/// `x / scale` rounded to the nearest integer within ±`levels` (0 for a zero scale).
fn quantize(x: f32, scale: f32, levels: i32) -> i32 {
    if scale > 0.0 {
        (f64::from(x) / f64::from(scale)).round().clamp(-f64::from(levels), f64::from(levels)) as i32
    } else {
        0
    }
}

impl Model {
    fn item_row(&self, item: usize, out: &mut [f64]) {
        for (o, f) in out.iter_mut().zip(self.factors(item)) {
            *o = f64::from(*f);
        }
    }

    /// The subject's vector from their own interactions (item index, value).
    /// Unknown item indices are ignored.
    ///
    /// At [`KernelLevel::Avx512Fma`](crate::KernelLevel::Avx512Fma) and above
    /// an implicit model's system is formed and factored in AVX-512
    /// registers; otherwise, at AVX2+FMA, the portable code runs compiled
    /// for those instructions.
    pub fn fold_in(&self, interactions: &[(u32, f32)]) -> SubjectVector {
        #[cfg(target_arch = "x86_64")]
        {
            let kernel = crate::kernels::kernel();
            if let Some(avx512) = kernel.avx512_fma() {
                if self.meta.feedback == Feedback::Implicit {
                    if let Some(vector) = self.implicit_fold_in_avx512(avx512, interactions) {
                        return vector;
                    }
                }
            }
            if let Some(avx2) = kernel.avx2_fma() {
                return avx2.fold_in(self, interactions);
            }
        }
        self.fold_in_portable(interactions)
    }

    /// Implicit fold-in by [`crate::kernels::Avx512Fma::implicit_solve`], or
    /// `None` if that system is not positive definite (the portable path
    /// raises the ridge).
    #[cfg(target_arch = "x86_64")]
    fn implicit_fold_in_avx512(
        &self,
        avx512: crate::kernels::Avx512Fma,
        interactions: &[(u32, f32)],
    ) -> Option<SubjectVector> {
        let p = &self.meta.params;
        let items: Vec<(&[f32], f64, f64)> = self
            .known_implicit(interactions)
            .map(|(i, value)| {
                let confidence = confidence(p.alpha, value);
                (self.factors(i), confidence - 1.0, confidence)
            })
            .collect();
        if items.is_empty() {
            return Some(SubjectVector { factors: vec![0.0; self.rank], bias: 0.0 });
        }
        let factors = avx512.implicit_solve(&self.gram, self.rank, p.lambda, &items)?;
        Some(SubjectVector { factors, bias: 0.0 })
    }

    #[inline(always)]
    /// The interactions with items this model knows, as (item, value).
    fn known<'a>(&'a self, interactions: &'a [(u32, f32)]) -> impl Iterator<Item = (usize, f64)> + 'a {
        interactions.iter().filter(|(i, _)| (*i as usize) < self.n_items()).map(|&(i, v)| (i as usize, f64::from(v)))
    }

    /// The same for an implicit model, each value capped at the training cap.
    fn known_implicit<'a>(&'a self, interactions: &'a [(u32, f32)]) -> impl Iterator<Item = (usize, f64)> + 'a {
        let cap = self.meta.params.max_value;
        self.known(interactions).map(move |(i, v)| (i, v.min(cap)))
    }

    /// [`Model::fold_in`] in portable code (which the AVX2+FMA kernel compiles for those instructions).
    pub(crate) fn fold_in_portable(&self, interactions: &[(u32, f32)]) -> SubjectVector {
        let known = self.known(interactions);
        let p = &self.meta.params;
        match self.meta.feedback {
            Feedback::Explicit => explicit_subject_step(
                self.rank,
                p.lambda,
                f64::from(self.global_mean),
                known.map(|(i, v)| (i, v.clamp(p.rating_min, p.rating_max))),
                |i, out| self.item_row(i, out),
                |i| f64::from(self.item_bias[i]),
            ),
            Feedback::Implicit => implicit_subject_step(
                self.rank,
                p.lambda,
                p.alpha,
                &self.gram,
                self.known_implicit(interactions),
                |i, out| self.item_row(i, out),
            ),
        }
    }

    /// The model's score of `item` for a folded-in subject: a predicted rating
    /// (explicit, clipped to the rating range) or a preference score (implicit).
    pub fn score(&self, subject: &SubjectVector, item: usize) -> f64 {
        let dot: f64 = subject.factors.iter().zip(self.factors(item)).map(|(x, v)| x * f64::from(*v)).sum();
        match self.meta.feedback {
            Feedback::Explicit => {
                let p = &self.meta.params;
                (f64::from(self.global_mean) + subject.bias + f64::from(self.item_bias[item]) + dot)
                    .clamp(p.rating_min, p.rating_max)
            }
            Feedback::Implicit => dot + self.popularity_prior[item],
        }
    }

    /// The cosine similarity of two items' factors (0 if either is zero):
    /// how alike the model thinks they are, for explanations.
    pub fn cosine(&self, a: usize, b: usize) -> f32 {
        let norms = self.serving.norms[a] * self.serving.norms[b];
        if norms > 0.0 {
            crate::cg::dot(self.factors(a), self.factors(b)) / norms
        } else {
            0.0
        }
    }

    /// Whether the model learned factors for `item` (under DP, an item whose
    /// statistics were all noise may have none).
    pub fn has_factors(&self, item: usize) -> bool {
        self.serving.norms.get(item).is_some_and(|&n| n > 0.0)
    }

    /// The `k` items most like `item` by the cosine of their factors, best
    /// first (ties by lower index), skipping `item` itself, items the model
    /// learned no factors for, and items for which `exclude` is true. Empty
    /// when `item` itself has no factors: the model knows nothing it is like.
    ///
    /// Exact: every item is scored (one dot product per item, no subject
    /// involved), which takes about a millisecond per 100k items at rank 64
    /// (`cargo bench -p hush-mf --bench foldin -- similar`).
    pub fn similar(&self, item: usize, k: usize, exclude: impl Fn(usize) -> bool) -> Vec<(usize, f32)> {
        let norms = &self.serving.norms;
        if k == 0 || item >= self.n_items() || norms[item] <= 0.0 {
            return Vec::new();
        }
        let query = self.factors(item);
        let scores: Vec<f32> = (0..self.n_items())
            .map(|j| if norms[j] > 0.0 { crate::cg::dot(query, self.factors(j)) / norms[j] } else { f32::NEG_INFINITY })
            .collect();
        let skip = |j: usize| j == item || norms[j] <= 0.0 || exclude(j);
        best_k(&scores, k, skip).into_iter().map(|j| (j, scores[j] / norms[item])).collect()
    }

    /// The exact ranking score of one item for `factors`, in `f32`.
    #[inline(always)]
    fn rank_score(&self, factors: &[f32], item: usize) -> f32 {
        crate::cg::dot(self.factors(item), factors) + self.prior(item)
    }

    /// Approximate ranking scores of every item (padded to whole panels)
    /// from the quantized panels, or `None` at the portable kernel level
    /// (no vector scan: every item is scored exactly), or where the factors
    /// do not quantize. The scan is AVX-512 VNNI's at that level, else
    /// AVX2's.
    fn approximate_scores(&self, query: &QuantizedQuery) -> Option<Vec<f32>> {
        if !self.serving.usable {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let kernel = crate::kernels::kernel();
            if let Some(vnni) = kernel.avx512_vnni() {
                return Some(vnni.approximate_scores(&self.serving.panel_scan(query)));
            }
            if let Some(avx2) = kernel.avx2_fma() {
                return Some(avx2.approximate_scores(&self.serving.panel_scan(query)));
            }
        }
        let _ = query;
        None
    }

    /// The same scores computed one item at a time: the reference the
    /// vector scans must equal bit for bit (integer sums are exact, and the
    /// final multiply-add rounds once everywhere).
    #[cfg(test)]
    fn approximate_scores_portable(&self, query: &QuantizedQuery) -> Vec<f32> {
        let index = &self.serving;
        (0..index.prior.len())
            .map(|i| {
                let (panel, lane) = (i / PANEL, i % PANEL);
                let sum: i32 = (0..index.quads)
                    .map(|m| {
                        let at = ((panel * index.quads + m) * PANEL + lane) * 4;
                        let items = &index.quantized[at..at + 4];
                        let bytes = query.quads[m].to_le_bytes();
                        items.iter().zip(bytes).map(|(&v, u)| i32::from(v) * i32::from(u)).sum::<i32>()
                    })
                    .sum();
                ((sum - index.offset_terms[i]) as f32).mul_add(query.scale * index.item_scales[i], index.prior[i])
            })
            .collect()
    }

    /// What ranking adds to the dot product: the item bias (explicit) or the popularity prior (implicit).
    #[inline(always)]
    fn prior(&self, i: usize) -> f32 {
        if self.meta.feedback == Feedback::Explicit {
            self.item_bias[i]
        } else {
            self.popularity_prior[i] as f32
        }
    }

    /// The top `k` items for a subject, best first (ties by lower index),
    /// skipping items for which `exclude` is true.
    ///
    /// A first pass scores the catalogue approximately from the quantized
    /// panels, each item with a bound on its error; every item whose
    /// approximate score plus its bound reaches the k-th best of the
    /// approximate scores minus theirs is then rescored exactly, and those
    /// exact scores decide. An item left out is beaten, exactly, by k
    /// others, so the result is the exact ranking at a fraction of the
    /// memory traffic.
    pub fn top_k(&self, subject: &SubjectVector, k: usize, exclude: impl Fn(usize) -> bool) -> Vec<(usize, f64)> {
        if k == 0 {
            return Vec::new();
        }
        let factors: Vec<f32> = subject.factors.iter().map(|&x| x as f32).collect();
        let mut candidates: Vec<(f32, usize)> =
            self.shortlist(&factors, k, &exclude).into_iter().map(|i| (self.rank_score(&factors, i), i)).collect();
        // Only the best k need an order.
        if candidates.len() > k {
            candidates.select_nth_unstable_by(k - 1, |&a, &b| ranking(a, b));
            candidates.truncate(k);
        }
        candidates.sort_unstable_by(|&a, &b| ranking(a, b));
        candidates.into_iter().map(|(_, i)| (i, self.score(subject, i))).collect()
    }

    /// The items the exact pass must rescore for a top `k` of `factors`:
    /// every item not excluded that could be among the best k, in index order.
    fn shortlist(&self, factors: &[f32], k: usize, exclude: &impl Fn(usize) -> bool) -> Vec<usize> {
        let n = self.n_items();
        let query = self.serving.quantize_query(factors);
        let (Some(mut approximate), Some(bounds)) =
            (self.approximate_scores(&query), self.serving.error_bounds(&query, self.rank))
        else {
            // No vector scan on this CPU, or no usable bound: rescore everything.
            return (0..n).filter(|&i| !exclude(i)).collect();
        };
        approximate.truncate(n);
        // A product of scales can overflow on finite factors (0·∞ is NaN):
        // such an item is bounded by nothing, so it can be anywhere.
        let lower: Vec<f32> = approximate
            .iter()
            .zip(&bounds)
            .map(|(&s, &b)| if (s - b).is_nan() { f32::NEG_INFINITY } else { s - b })
            .collect();
        let upper: Vec<f32> = approximate
            .iter()
            .zip(&bounds)
            .map(|(&s, &b)| if (s + b).is_nan() { f32::INFINITY } else { s + b })
            .collect();
        // k items score at least their lower bounds, so at least the k-th
        // best of those: an item whose upper bound is below it is beaten.
        let threshold = match best_k(&lower, k, exclude).last() {
            Some(&kth) if !lower[kth].is_nan() => lower[kth],
            _ => f32::NEG_INFINITY,
        };
        let mut shortlist = Vec::new();
        for (block, chunk) in upper.chunks(SKIP_BLOCK).enumerate() {
            if below(chunk, threshold) {
                continue;
            }
            for (offset, &score) in chunk.iter().enumerate() {
                let i = block * SKIP_BLOCK + offset;
                if score >= threshold && !exclude(i) {
                    shortlist.push(i);
                }
            }
        }
        shortlist
    }

    /// The most popular items by the model's (noisy, under DP) popularity: the fallback for subjects without consent.
    /// The order is computed once when the model is loaded: this is the
    /// answer to every visitor without consent, on every page view.
    pub fn popular(&self, k: usize, exclude: impl Fn(usize) -> bool) -> Vec<(usize, f64)> {
        self.serving
            .by_popularity
            .iter()
            .map(|&i| i as usize)
            .filter(|&i| !exclude(i))
            .take(k)
            .map(|i| (i, f64::from(self.popularity[i])))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use hush_features::{FeatureMeta, FeatureSet, Feedback, Interaction};
    use proptest::prelude::*;

    use super::*;
    use crate::{train, Privacy, TrainParams};

    /// A model of `n` items and rank `d` whose factors and popularity are then replaced.
    fn model_with(n: usize, d: usize, factors: Vec<f32>, popularity: Vec<f32>) -> Model {
        model_of(Feedback::Implicit, n, d, factors, popularity)
    }

    /// [`model_with`] for either kind of feedback.
    fn model_of(feedback: Feedback, n: usize, d: usize, factors: Vec<f32>, popularity: Vec<f32>) -> Model {
        let meta = FeatureMeta::assembled(feedback);
        let rows = vec![vec![Interaction { item: 0, value: 1.0, time: 0 }]];
        let set = FeatureSet::from_subject_rows(meta, (0..n).map(|i| i.to_string()).collect(), &rows);
        let params = TrainParams { rank: d, iterations: 1, ..TrainParams::default() };
        let mut model = train(&set, &params, Privacy::NonPrivate, &mut |_| {}).expect("a model");
        model.item_factors = factors;
        model.popularity = popularity;
        model.prepare();
        model
    }

    /// Similar items are the exact cosine ranking: the item itself and
    /// items without factors never appear, and an item without factors has
    /// no similar items.
    #[test]
    fn similar_items_are_the_exact_cosine_ranking() {
        use rand::{Rng, SeedableRng};
        let (n, d) = (300, 8);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut factors: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        for j in [5, 17, 250] {
            factors[j * d..(j + 1) * d].fill(0.0);
        }
        let model = model_with(n, d, factors, vec![1.0; n]);
        let cosine = |a: usize, b: usize| {
            let (x, y) = (model.factors(a), model.factors(b));
            let dot: f64 = x.iter().zip(y).map(|(p, q)| f64::from(*p) * f64::from(*q)).sum();
            let norm = |v: &[f32]| v.iter().map(|p| f64::from(*p).powi(2)).sum::<f64>().sqrt();
            dot / (norm(x) * norm(y))
        };
        for item in [0, 42, 299] {
            let got = model.similar(item, 10, |j| j == 3);
            let mut reference: Vec<usize> = (0..n).filter(|&j| ![item, 3, 5, 17, 250].contains(&j)).collect();
            reference.sort_by(|&a, &b| cosine(item, b).total_cmp(&cosine(item, a)).then(a.cmp(&b)));
            let ids: Vec<usize> = got.iter().map(|&(j, _)| j).collect();
            assert_eq!(ids, reference[..10], "item {item}");
            for &(j, score) in &got {
                assert!((f64::from(score) - cosine(item, j)).abs() < 1e-4, "item {item} vs {j}: {score}");
            }
        }
        assert!(model.similar(17, 10, |_| false).is_empty());
        assert_eq!(model.similar(0, n, |_| false).len(), n - 4);
    }

    proptest! {
        /// The one-pass selection agrees with sorting everything: best score
        /// first, ties by lower index, excluded items never chosen.
        #[test]
        fn best_k_equals_a_full_sort(
            scores in prop::collection::vec(prop_oneof![Just(0.5f32), -3.0f32..3.0], 0..200),
            k in 0usize..20,
            modulus in 2usize..7,
        ) {
            let exclude = |i: usize| i.is_multiple_of(modulus);
            let mut reference: Vec<usize> = (0..scores.len()).filter(|&i| !exclude(i)).collect();
            reference.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
            reference.truncate(k);
            prop_assert_eq!(best_k(&scores, k, exclude), reference);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The quantized first pass never changes the answer: top_k equals
        /// an exact ranking of every item, even when scores nearly tie
        /// (factors drawn from a few values plus perturbations far below
        /// one quantization level).
        #[test]
        fn top_k_and_popular_are_the_exact_rankings(
            n in 1usize..300,
            d in 1usize..80,
            seed in any::<u64>(),
            k in 0usize..15,
            modulus in 2usize..9,
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let coarse = [-1.0f32, -0.5, 0.0, 0.25, 0.5, 1.0, 3e-6];
            let factors: Vec<f32> = (0..n * d)
                .map(|_| coarse[rng.random_range(0..coarse.len())] + rng.random_range(-1e-6f32..1e-6))
                .collect();
            let popularity: Vec<f32> = (0..n).map(|_| rng.random_range(0.0f32..4.0).floor()).collect();
            let model = model_with(n, d, factors, popularity);
            let subject = SubjectVector {
                factors: (0..d).map(|_| coarse[rng.random_range(0..coarse.len())] as f64 * 2.0).collect(),
                bias: 0.0,
            };
            let exclude = |i: usize| i.is_multiple_of(modulus);
            let u: Vec<f32> = subject.factors.iter().map(|&x| x as f32).collect();
            let mut reference: Vec<usize> = (0..n).filter(|&i| !exclude(i)).collect();
            reference.sort_by(|&a, &b| model.rank_score(&u, b).total_cmp(&model.rank_score(&u, a)).then(a.cmp(&b)));
            reference.truncate(k);
            let chosen: Vec<usize> = model.top_k(&subject, k, exclude).into_iter().map(|(i, _)| i).collect();
            prop_assert_eq!(chosen, reference);

            // The precomputed popularity order answers as a full sort would.
            let mut by_popularity: Vec<usize> = (0..n).filter(|&i| !exclude(i)).collect();
            by_popularity.sort_by(|&a, &b| model.popularity[b].total_cmp(&model.popularity[a]).then(a.cmp(&b)));
            by_popularity.truncate(k);
            let popular: Vec<usize> = model.popular(k, exclude).into_iter().map(|(i, _)| i).collect();
            prop_assert_eq!(popular, by_popularity);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every approximate score lies within the bound of the exact one,
        /// and every vector scan this CPU runs gives the reference's bits.
        #[test]
        fn quantized_scores_are_within_the_bound(
            n in 1usize..200,
            d in 1usize..80,
            seed in any::<u64>(),
            spread in prop_oneof![Just(1e-3f32), Just(1.0f32), Just(1e4f32)],
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            // Rows of very different norms (zero, tiny, one, huge), as a DP
            // release has: each item is quantized on its own scale.
            let rows = [0.0f32, 1e-3, 1.0, 1e3];
            let factors: Vec<f32> = (0..n)
                .flat_map(|_| {
                    let row = rows[rng.random_range(0..rows.len())];
                    (0..d).map(|_| row * rng.random_range(-spread..spread)).collect::<Vec<_>>()
                })
                .collect();
            let popularity: Vec<f32> = (0..n).map(|_| rng.random_range(0.0f32..50.0).floor()).collect();
            let model = model_with(n, d, factors, popularity);
            let u: Vec<f32> = (0..d).map(|_| rng.random_range(-spread..spread)).collect();
            let query = model.serving.quantize_query(&u);
            let reference = model.approximate_scores_portable(&query);
            let bounds = model.serving.error_bounds(&query, d).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for (i, &approximate) in reference.iter().enumerate().take(n) {
                let exact = model.rank_score(&u, i);
                prop_assert!(
                    approximate - bounds[i] <= exact && exact <= approximate + bounds[i],
                    "item {i}: approximate {approximate}, exact {exact}, bound {}", bounds[i]
                );
            }
            if let Some(fast) = model.approximate_scores(&query) {
                prop_assert_eq!(bits(&fast), bits(&reference));
            }
            #[cfg(target_arch = "x86_64")]
            if let Some(avx2) = crate::kernels::Avx2Fma::new() {
                let avx2 = avx2.approximate_scores(&model.serving.panel_scan(&query));
                prop_assert_eq!(bits(&avx2), bits(&reference));
            }
            #[cfg(target_arch = "x86_64")]
            if let Some(vnni) = crate::kernels::Avx512Vnni::new() {
                let vnni = vnni.approximate_scores(&model.serving.panel_scan(&query));
                prop_assert_eq!(bits(&vnni), bits(&reference));
            }
        }
    }

    /// A DP-shaped catalogue: half the items shrunk to zero factors, most
    /// of the rest small, one noisy item huge. The exact pass rescores a
    /// handful of items, not the catalogue (on one scale and one global
    /// bound it rescored all of them), and the answer is the exact ranking.
    #[test]
    fn one_huge_item_does_not_send_the_catalogue_to_the_exact_pass() {
        use rand::{Rng, SeedableRng};
        let (n, d) = (4000, 16);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let factors: Vec<f32> = (0..n)
            .flat_map(|i| {
                let row = match i {
                    17 => 1000.0,
                    i if i % 2 == 0 => 0.0,
                    _ => rng.random_range(0.0f32..0.1),
                };
                (0..d).map(|_| row * rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>()
            })
            .collect();
        let popularity: Vec<f32> = (0..n).map(|_| rng.random_range(0.0f32..50.0).floor()).collect();
        let model = model_with(n, d, factors, popularity);
        let u: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let subject = SubjectVector { factors: u.iter().map(|&x| f64::from(x)).collect(), bias: 0.0 };
        let mut reference: Vec<usize> = (0..n).collect();
        reference.sort_by(|&a, &b| model.rank_score(&u, b).total_cmp(&model.rank_score(&u, a)).then(a.cmp(&b)));
        reference.truncate(10);
        let chosen: Vec<usize> = model.top_k(&subject, 10, |_| false).into_iter().map(|(i, _)| i).collect();
        assert_eq!(chosen, reference);
        if model.approximate_scores(&model.serving.quantize_query(&u)).is_some() {
            let shortlist = model.shortlist(&u, 10, &|_| false);
            assert!(shortlist.len() < 100, "{} of {n} items rescored", shortlist.len());
        }
    }

    /// The exact ranking of the first `k` items, by a full sort.
    fn exact_top(model: &Model, u: &[f32], k: usize, exclude: impl Fn(usize) -> bool) -> Vec<usize> {
        let mut reference: Vec<usize> = (0..model.n_items()).filter(|&i| !exclude(i)).collect();
        reference.sort_by(|&a, &b| model.rank_score(u, b).total_cmp(&model.rank_score(u, a)).then(a.cmp(&b)));
        reference.truncate(k);
        reference
    }

    fn top(model: &Model, u: &[f32], k: usize, exclude: impl Fn(usize) -> bool) -> Vec<usize> {
        let subject = SubjectVector { factors: u.iter().map(|&x| f64::from(x)).collect(), bias: 0.0 };
        model.top_k(&subject, k, exclude).into_iter().map(|(i, _)| i).collect()
    }

    /// Rows so small that their squares underflow in `f32` still have a
    /// bound that holds (review finding: their `f32` norm was zero).
    #[test]
    fn tiny_rows_whose_f32_norm_underflows_are_still_bounded() {
        let t = 1e-23f32;
        let model = model_with(2, 2, vec![0.0, t, 0.005 * t, 0.0], vec![0.0; 2]);
        let u = [1.0f32, 0.4 / 63.0];
        assert_eq!(top(&model, &u, 1, |_| false), exact_top(&model, &u, 1, |_| false));
    }

    /// A query scale times an item scale beyond `f32`'s range (finite
    /// factors): the item is rescored, not dropped (review finding).
    #[test]
    fn an_overflowing_scale_product_does_not_drop_an_item() {
        let model = model_with(3, 2, vec![1e19, 0.0, 0.0, 1.0, 0.0, -1.0], vec![0.0; 3]);
        let u = [0.0f32, 1e38];
        assert_eq!(top(&model, &u, 2, |_| false), exact_top(&model, &u, 2, |_| false));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Adversarial catalogues (the review's): rows from zero to 1e9 built
        /// from a few shared directions (ties), with and without jitter, or
        /// rows so tiny they underflow; priors negative, tiny and huge;
        /// subjects from 1e-12 to 1e9; k beyond the catalogue; excluded
        /// items. `top_k` is the full exact sort every time.
        #[test]
        fn top_k_is_exact_on_adversarial_catalogues(
            n in 1usize..70,
            d in 1usize..40,
            seed in any::<u64>(),
            k in 0usize..80,
            modulus in 2usize..9,
            tiny in any::<bool>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let scales: &[f32] = if tiny { &[0.0, 1e-24, 1e-23, 3e-23] } else { &[0.0, 1e-15, 1e-12, 1e-3, 1.0, 1e3, 1e9] };
            let coarse = [-1.0f32, -0.5, 0.0, 0.25, 0.5, 1.0, 3e-6, 0.3333];
            let unit = [-1.0f32, 0.0, 1.0];
            let directions: Vec<Vec<f32>> = (0..4)
                .map(|_| {
                    (0..d)
                        .map(|_| if tiny { unit[rng.random_range(0..3)] } else { coarse[rng.random_range(0..coarse.len())] })
                        .collect()
                })
                .collect();
            let mut factors = Vec::new();
            for _ in 0..n {
                let scale = scales[rng.random_range(0..scales.len())];
                let row = &directions[rng.random_range(0..directions.len())];
                let jitter = !tiny && rng.random_bool(0.5);
                for &x in row {
                    let j = if jitter { rng.random_range(-1e-6f32..1e-6) } else { 0.0 };
                    factors.push(scale * (x + j));
                }
            }
            let mut model = model_with(n, d, factors, vec![0.0; n]);
            let priors = [0.0f64, -1.0, 1.0, 1e-7, -1e-7, 0.5, 1e6];
            model.popularity_prior =
                (0..n).map(|_| if tiny { 0.0 } else { priors[rng.random_range(0..priors.len())] }).collect();
            model.serving = ServingIndex::of(&model);
            let subject_scale = [1e-12f32, 1e-3, 1.0, 1e3, 1e9][rng.random_range(0..5)];
            let u: Vec<f32> = (0..d)
                .map(|_| subject_scale * (coarse[rng.random_range(0..coarse.len())] + rng.random_range(-0.01f32..0.01)))
                .collect();
            let exclude = |i: usize| i.is_multiple_of(modulus);
            prop_assert_eq!(top(&model, &u, k, exclude), exact_top(&model, &u, k, exclude));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Every fold-in path this CPU runs solves the same system: the
        /// vector path agrees with the portable one to within rounding.
        #[test]
        fn fold_in_paths_agree(
            n in 2usize..120,
            d in 1usize..70,
            seed in any::<u64>(),
            events in 1usize..60,
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let factors: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let model = model_with(n, d, factors, vec![1.0; n]);
            let interactions: Vec<(u32, f32)> =
                (0..events).map(|_| (rng.random_range(0..n as u32 + 3), rng.random_range(0.5f32..6.0))).collect();
            let portable = model.fold_in_portable(&interactions);
            let mut paths = vec![model.fold_in(&interactions)];
            #[cfg(target_arch = "x86_64")]
            if let Some(avx512) = crate::kernels::Avx512Fma::new() {
                let vector = model.implicit_fold_in_avx512(avx512, &interactions);
                // λ > 0 and positive weights: the system is positive definite.
                prop_assert!(vector.is_some());
                paths.extend(vector);
            }
            #[cfg(target_arch = "x86_64")]
            if let Some(avx2) = crate::kernels::Avx2Fma::new() {
                paths.push(avx2.fold_in(&model, &interactions));
            }
            let scale = portable.factors.iter().fold(1.0f64, |m, x| m.max(x.abs()));
            for vector in paths {
                prop_assert_eq!(vector.factors.len(), d);
                for (a, b) in vector.factors.iter().zip(&portable.factors) {
                    prop_assert!((a - b).abs() <= 1e-9 * scale, "{a} vs {b}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The AVX2+FMA fold-in is the portable code compiled for those
        /// instructions: the same bits, for explicit and implicit models.
        #[test]
        #[cfg(target_arch = "x86_64")]
        fn avx2_fold_in_is_the_portable_one_to_the_bit(
            explicit in any::<bool>(),
            n in 2usize..120,
            d in 1usize..70,
            seed in any::<u64>(),
            events in 0usize..60,
        ) {
            use rand::{Rng, SeedableRng};
            let Some(avx2) = crate::kernels::Avx2Fma::new() else {
                return Ok(());
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let feedback = if explicit { Feedback::Explicit } else { Feedback::Implicit };
            let factors: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let model = model_of(feedback, n, d, factors, vec![1.0; n]);
            let interactions: Vec<(u32, f32)> =
                (0..events).map(|_| (rng.random_range(0..n as u32 + 3), rng.random_range(0.5f32..6.0))).collect();
            let portable = model.fold_in_portable(&interactions);
            let vector = avx2.fold_in(&model, &interactions);
            let bits = |v: &SubjectVector| (v.factors.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), v.bias.to_bits());
            prop_assert_eq!(bits(&vector), bits(&portable));
        }
    }
}

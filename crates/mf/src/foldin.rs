//! Fold-in: a subject's vector from their own interactions, at request time.
//!
//! This is the subject step of training, run on one subject against the
//! released item side. Under joint DP it costs no privacy: it uses only the
//! subject's own data and the already-private model, and its result goes
//! back to that subject alone.

use hush_features::Feedback;

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
    pub(crate) fn solve(mut self, reg: &[f64]) -> Vec<f64> {
        linalg::mirror_upper(&mut self.a, self.n);
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
    let mut z = vec![0.0; rank];
    let mut any = false;
    for (item, value) in interactions {
        item_factors(item, &mut z);
        let confidence = 1.0 + alpha * value;
        eq.add(&z, confidence - 1.0, confidence);
        any = true;
    }
    if !any {
        return SubjectVector { factors: vec![0.0; rank], bias: 0.0 };
    }
    SubjectVector { factors: eq.solve(&vec![lambda; rank]), bias: 0.0 }
}

/// The indices of the `k` largest scores, best first (ties by index), skipping
/// excluded items: one pass that keeps a sorted buffer of the best so far,
/// since k is small next to the catalogue.
fn best_k(scores: &[f32], k: usize, exclude: impl Fn(usize) -> bool) -> Vec<usize> {
    if k == 0 {
        return Vec::new();
    }
    // Sorted best first; `better` orders by score, then by lower index.
    let better = |a: (f32, usize), b: (f32, usize)| a.0.total_cmp(&b.0).reverse().then(a.1.cmp(&b.1)).is_lt();
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    for (i, &score) in scores.iter().enumerate() {
        // Indices only grow, so an item that merely ties the k-th best loses
        // the tie: `<=` is the exact test, and cheaper than the full order.
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
    best.into_iter().map(|(_, i)| i).collect()
}

impl Model {
    fn item_row(&self, item: usize, out: &mut [f64]) {
        for (o, f) in out.iter_mut().zip(self.factors(item)) {
            *o = f64::from(*f);
        }
    }

    /// The subject's vector from their own interactions (item index, value).
    /// Unknown item indices are ignored.
    pub fn fold_in(&self, interactions: &[(u32, f32)]) -> SubjectVector {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU supports both features, checked just above.
                return unsafe { self.fold_in_avx2(interactions) };
            }
        }
        self.fold_in_portable(interactions)
    }

    /// The same, compiled for AVX2+FMA: the rank-one updates and the
    /// Cholesky factorization are its inner loops.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fold_in_avx2(&self, interactions: &[(u32, f32)]) -> SubjectVector {
        self.fold_in_portable(interactions)
    }

    #[inline(always)]
    fn fold_in_portable(&self, interactions: &[(u32, f32)]) -> SubjectVector {
        let known = interactions
            .iter()
            .filter(|(i, _)| (*i as usize) < self.n_items())
            .map(|&(i, v)| (i as usize, f64::from(v)));
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
                known.map(|(i, v)| (i, v.min(p.max_value))),
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

    /// Ranking scores of every item for `factors`, in `f32`: the per-request
    /// hot loop of serving (items × rank multiply-adds), compiled for AVX2+FMA
    /// when the CPU has them.
    fn rank_scores(&self, factors: &[f32]) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU supports both features, checked just above.
                return unsafe { self.rank_scores_avx2(factors) };
            }
        }
        self.rank_scores_portable(factors)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rank_scores_avx2(&self, factors: &[f32]) -> Vec<f32> {
        self.rank_scores_portable(factors)
    }

    // A plain loop, not iterator adapters: generic adapter code is compiled
    // outside this function and would not get its AVX2 target feature.
    #[inline(always)]
    fn rank_scores_portable(&self, factors: &[f32]) -> Vec<f32> {
        let d = self.rank;
        let mut scores = Vec::with_capacity(self.n_items());
        for i in 0..self.n_items() {
            let row = &self.item_factors[i * d..(i + 1) * d];
            scores.push(crate::cg::dot(row, factors) + self.prior(i));
        }
        scores
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

    /// The top `k` items for a subject, best first, skipping items for which `exclude` is true.
    pub fn top_k(&self, subject: &SubjectVector, k: usize, exclude: impl Fn(usize) -> bool) -> Vec<(usize, f64)> {
        let factors: Vec<f32> = subject.factors.iter().map(|&x| x as f32).collect();
        let scores = self.rank_scores(&factors);
        best_k(&scores, k, exclude).into_iter().map(|i| (i, self.score(subject, i))).collect()
    }

    /// The most popular items by the model's (noisy, under DP) popularity: the fallback for subjects without consent.
    pub fn popular(&self, k: usize, exclude: impl Fn(usize) -> bool) -> Vec<(usize, f64)> {
        let mut items: Vec<usize> = (0..self.n_items()).filter(|&i| !exclude(i)).collect();
        items.sort_by(|&a, &b| self.popularity[b].total_cmp(&self.popularity[a]).then(a.cmp(&b)));
        items.truncate(k);
        items.into_iter().map(|i| (i, f64::from(self.popularity[i]))).collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::best_k;

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
}

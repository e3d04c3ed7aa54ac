//! Conjugate-gradient solves for weighted ALS (Takács, Pilászy, Tikk 2011),
//! as the `implicit` library does: a few warm-started steps per subject or
//! item instead of forming and factorizing each normal matrix, which costs
//! O(n·d) per step rather than O(n·d² + d³).
//!
//! The system is `(G + Σᵢ wᵢ zᵢ zᵢᵀ + ρI) x = b`, where G is a dense symmetric
//! matrix (the shared Gramian, plus an item's DP noise when there is any) and
//! the zᵢ are rows of a factor matrix.
//!
//! Everything here is `f32`, as in `implicit`: eight lanes per AVX2 register
//! and half the memory traffic of `f64`. Three CG steps do not need more
//! precision; the caller keeps its master copies in `f64`.

/// The dense symmetric part of a [`System`], row-major `n×n`.
#[derive(Clone, Copy)]
pub(crate) enum Gram<'a> {
    /// Both triangles filled: the shared Gramian.
    Full(&'a [f32]),
    /// Only the upper triangle (diagonal included) is read: an item's noisy
    /// Gramian, which then needs no mirroring.
    Upper(&'a [f32]),
}

/// One weighted linear system, applied matrix-free.
pub(crate) struct System<'a> {
    /// Dimension.
    pub n: usize,
    /// The dense symmetric part.
    pub gram: Gram<'a>,
    /// Factor matrix whose rows are the zᵢ (row stride `n`).
    pub factors: &'a [f32],
    /// (row index, value) pairs: row i has weight α·value in the matrix and
    /// confidence 1 + α·value in the right-hand side (Hu et al.).
    pub rows: &'a [(u32, f32)],
    /// α of the confidence weighting.
    pub alpha: f32,
    /// Ridge.
    pub ridge: f32,
}

impl System<'_> {
    #[inline(always)]
    fn apply(&self, p: &[f32], out: &mut [f32]) {
        let n = self.n;
        match self.gram {
            Gram::Full(gram) => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = dot(&gram[i * n..(i + 1) * n], p) + self.ridge * p[i];
                }
            }
            Gram::Upper(gram) => {
                // Row i's upper part gives out[i] (a dot) and, as the
                // mirrored column, adds p[i]·a_ij to every later out[j].
                for (o, pi) in out.iter_mut().zip(p) {
                    *o = self.ridge * pi;
                }
                for i in 0..n {
                    let row = &gram[i * n + i..(i + 1) * n];
                    out[i] += dot(row, &p[i..]);
                    let pi = p[i];
                    for (o, a) in out[i + 1..].iter_mut().zip(&row[1..]) {
                        *o += a * pi;
                    }
                }
            }
        }
        for &(row, value) in self.rows {
            let z = &self.factors[row as usize * n..(row as usize + 1) * n];
            let scale = self.alpha * value * dot(z, p);
            if scale != 0.0 {
                for (o, zi) in out.iter_mut().zip(z) {
                    *o += scale * zi;
                }
            }
        }
    }

    /// Runs `steps` conjugate-gradient steps from `x`, in place.
    ///
    /// At kernel level AVX2+FMA or above the same code is compiled for
    /// those instructions ([`crate::kernels::Avx2Fma::cg_solve`]): the dot
    /// products are most of the training time, and the portable baseline
    /// has only SSE2.
    pub fn solve(&self, base_rhs: Option<&[f32]>, x: &mut [f32], steps: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = crate::kernels::kernel().avx2_fma() {
            return avx2.cg_solve(self, base_rhs, x, steps);
        }
        self.solve_portable(base_rhs, x, steps);
    }

    /// [`System::solve`] in portable code, inlined into the kernels that
    /// compile it for wider instructions.
    #[inline(always)]
    pub(crate) fn solve_portable(&self, base_rhs: Option<&[f32]>, x: &mut [f32], steps: usize) {
        let n = self.n;
        // b = base + Σ (1 + α·vᵢ) zᵢ
        let mut b = base_rhs.map_or_else(|| vec![0.0; n], <[f32]>::to_vec);
        for &(row, value) in self.rows {
            let confidence = 1.0 + self.alpha * value;
            for (bk, zk) in b.iter_mut().zip(&self.factors[row as usize * n..(row as usize + 1) * n]) {
                *bk += confidence * zk;
            }
        }
        let mut ap = vec![0.0; n];
        self.apply(x, &mut ap);
        let mut r: Vec<f32> = b.iter().zip(&ap).map(|(b, a)| b - a).collect();
        let mut p = r.clone();
        let mut rs = dot(&r, &r);
        for _ in 0..steps {
            if rs <= 1e-30 {
                break;
            }
            self.apply(&p, &mut ap);
            let pap = dot(&p, &ap);
            if !(pap > 0.0 && pap.is_finite()) {
                break;
            }
            let alpha = rs / pap;
            for i in 0..n {
                x[i] += alpha * p[i];
                r[i] -= alpha * ap[i];
            }
            let next = dot(&r, &r);
            let beta = next / rs;
            for i in 0..n {
                p[i] = r[i] + beta * p[i];
            }
            rs = next;
        }
    }
}

/// Dot product with sixteen independent accumulators (two AVX2 registers), so it vectorizes and
/// the additions do not wait on each other.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (a16.remainder(), b16.remainder());
    for (x, y) in a16.zip(b16) {
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_to_the_exact_solution() {
        // G = I, rows z0 = [1, 0, 1], z1 = [0, 2, 0] with weights 3 and 1, ridge 0.5.
        let gram = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let factors = [1.0f32, 0.0, 1.0, 0.0, 2.0, 0.0];
        // Values 3 and 1 with alpha 1: matrix weights 3 and 1, confidences 4 and 2.
        let rows = [(0u32, 3.0f32), (1u32, 1.0)];
        let system = System { n: 3, gram: Gram::Full(&gram), factors: &factors, rows: &rows, alpha: 1.0, ridge: 0.5 };
        let base = [1.0f32, 2.0, 3.0];
        let mut x = vec![0.0; 3];
        system.solve(Some(&base), &mut x, 3);
        let mut ax = vec![0.0; 3];
        system.apply(&x, &mut ax);
        // b = base + 4·z0 + 2·z1 = [5, 6, 7]
        for (a, b) in ax.iter().zip(&[5.0, 6.0, 7.0]) {
            assert!((a - b).abs() < 1e-4, "{ax:?}");
        }
    }

    #[test]
    fn upper_triangle_applies_as_the_full_symmetric_matrix() {
        let n = 11;
        // A symmetric matrix, and a copy whose lower triangle is garbage that must not be read.
        let full: Vec<f32> =
            (0..n * n).map(|k| ((k / n).min(k % n) * 7 + (k / n).max(k % n) * 3) as f32 * 0.1 - 2.0).collect();
        let mut upper = full.clone();
        for i in 0..n {
            for j in 0..i {
                upper[i * n + j] = f32::NAN;
            }
        }
        let factors = vec![0.5f32; 2 * n];
        let rows = [(1u32, 2.0f32)];
        let p: Vec<f32> = (0..n).map(|k| (k as f32 * 0.7).sin()).collect();
        let apply = |gram| {
            let mut out = vec![0.0; n];
            System { n, gram, factors: &factors, rows: &rows, alpha: 1.0, ridge: 0.3 }.apply(&p, &mut out);
            out
        };
        for (a, b) in apply(Gram::Full(&full)).iter().zip(apply(Gram::Upper(&upper))) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}

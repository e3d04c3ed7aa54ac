//! Small dense linear algebra for the per-subject and per-item solves.
//!
//! Each solve is a (rank+1)-dimensional symmetric positive-definite system,
//! formed and solved thousands of times per iteration. A hand-written
//! Cholesky on a flat row-major `f64` buffer avoids allocation and the
//! per-call overhead of a general library at these sizes (≤ 257), and keeps
//! accumulation in `f64` where the normal equations need the precision.

/// Adds `weight · z zᵀ` to the upper triangle of the row-major `n×n` matrix `a`.
#[inline(always)]
pub fn add_outer_upper(a: &mut [f64], n: usize, z: &[f64], weight: f64) {
    for i in 0..n {
        let wi = weight * z[i];
        if wi == 0.0 {
            continue;
        }
        let row = &mut a[i * n + i..(i + 1) * n];
        for (cell, zj) in row.iter_mut().zip(&z[i..]) {
            *cell += wi * zj;
        }
    }
}

/// [`add_outer_upper`] for four vectors at once: each cell is loaded and
/// stored once for four updates instead of four times, and each update is a
/// fused multiply-add. Fused operations round once, so the result is the
/// same on every CPU; where the CPU lacks FMA they are library calls, much
/// slower, which is why only the request-time fold-in (compiled for FMA
/// where the CPU has it) uses this.
#[inline(always)]
pub fn add_outer_upper4(a: &mut [f64], n: usize, z: [&[f64]; 4], weight: [f64; 4]) {
    for i in 0..n {
        let w = [weight[0] * z[0][i], weight[1] * z[1][i], weight[2] * z[2][i], weight[3] * z[3][i]];
        let row = &mut a[i * n + i..(i + 1) * n];
        let (z0, z1, z2, z3) = (&z[0][i..n], &z[1][i..n], &z[2][i..n], &z[3][i..n]);
        for (j, cell) in row.iter_mut().enumerate() {
            let mut c = *cell;
            c = w[0].mul_add(z0[j], c);
            c = w[1].mul_add(z1[j], c);
            c = w[2].mul_add(z2[j], c);
            c = w[3].mul_add(z3[j], c);
            *cell = c;
        }
    }
}

/// Copies the upper triangle onto the lower one.
#[inline(always)]
pub fn mirror_upper(a: &mut [f64], n: usize) {
    for i in 0..n {
        for j in 0..i {
            a[i * n + j] = a[j * n + i];
        }
    }
}

/// Solves `a x = b` for symmetric positive-definite `a` (row-major `n×n`,
/// upper triangle read, lower triangle ignored) by Cholesky, `a = UᵀU`, in
/// place: the upper triangle of `a` is overwritten by U and `b` by the
/// solution. Returns `false`, leaving the buffers unspecified, if `a` is not
/// positive definite.
///
/// The factorization is the right-looking one: each step scales a row of U
/// and subtracts its outer product from the trailing rows, so every inner
/// loop runs along a contiguous row and vectorizes, with no horizontal sums.
/// Steps are taken [`BLOCK`] at a time: the block's rows are factored among
/// themselves, then their updates reach each trailing cell in one pass (one
/// load and store per cell instead of one per step). Every cell still
/// receives the same operations in the same order, so the result is the
/// same, bit for bit, as one step at a time.
#[inline(always)]
pub fn cholesky_solve(a: &mut [f64], n: usize, b: &mut [f64]) -> bool {
    let mut start = 0;
    while start < n {
        let end = (start + BLOCK).min(n);
        for j in start..end {
            let Some((row_j, later)) = pivot_row(a, n, j) else {
                return false;
            };
            // The block's later rows: a_ik −= u_ji · u_jk for k ≥ i.
            for i in j + 1..end {
                let u_ji = row_j[i - j - 1];
                let row_i = &mut later[(i - j - 1) * n + i..(i - j) * n];
                for (cell, u_jk) in row_i.iter_mut().zip(&row_j[i - j - 1..]) {
                    *cell -= u_ji * u_jk;
                }
            }
        }
        let (block, trailing) = a.split_at_mut(end * n);
        // Row j of U from column i on, and its entry in column i.
        let row = |j: usize, i: usize| (block[j * n + i], &block[j * n + i..(j + 1) * n]);
        for i in end..n {
            let row_i = &mut trailing[(i - end) * n + i..(i - end + 1) * n];
            if end - start == BLOCK {
                let [(w0, z0), (w1, z1), (w2, z2), (w3, z3)] = std::array::from_fn(|t| row(start + t, i));
                // Equal lengths up front, so the loop has no bounds checks and vectorizes.
                let len = row_i.len();
                let (z0, z1, z2, z3) = (&z0[..len], &z1[..len], &z2[..len], &z3[..len]);
                for k in 0..len {
                    let mut c = row_i[k];
                    c -= w0 * z0[k];
                    c -= w1 * z1[k];
                    c -= w2 * z2[k];
                    c -= w3 * z3[k];
                    row_i[k] = c;
                }
            } else {
                for j in start..end {
                    let (w, z) = row(j, i);
                    for (cell, z_k) in row_i.iter_mut().zip(z) {
                        *cell -= w * z_k;
                    }
                }
            }
        }
        start = end;
    }
    substitute(a, n, n, b);
    true
}

/// Solves `UᵀU x = b` in place for the `n×n` upper-triangular factor `u`,
/// stored by rows `stride` apart: `b` (length `n`) becomes `x`.
#[inline(always)]
pub(crate) fn substitute(u: &[f64], n: usize, stride: usize, b: &mut [f64]) {
    let row = |i: usize| &u[i * stride + i + 1..i * stride + n];
    // Uᵀ y = b, by rows of U: once y_i is known, remove it from the later equations.
    for i in 0..n {
        b[i] /= u[i * stride + i];
        let y_i = b[i];
        for (bk, u_ik) in b[i + 1..n].iter_mut().zip(row(i)) {
            *bk -= u_ik * y_i;
        }
    }
    // U x = y, backwards: each a dot product along a row of U.
    for i in (0..n).rev() {
        let s = b[i] - dot(row(i), &b[i + 1..n]);
        b[i] = s / u[i * stride + i];
    }
}

/// Step `j` of the factorization: row j of U is the pivot row scaled by the
/// square root of its diagonal. Returns U's row j right of the diagonal and
/// the rows below, or `None` if the pivot is not positive (the matrix is not
/// positive definite).
#[inline(always)]
fn pivot_row(a: &mut [f64], n: usize, j: usize) -> Option<(&[f64], &mut [f64])> {
    let d = a[j * n + j];
    if !(d > 0.0 && d.is_finite()) {
        return None;
    }
    let d = d.sqrt();
    let (done, later) = a.split_at_mut((j + 1) * n);
    let row_j = &mut done[j * n + j..];
    row_j[0] = d;
    row_j[1..].iter_mut().for_each(|u| *u /= d);
    Some((&row_j[1..], later))
}

/// Factorization steps taken together in [`cholesky_solve`].
const BLOCK: usize = 4;

/// Dot product with eight independent accumulators, so the compiler can
/// vectorize it and the additions do not wait on each other.
#[inline(always)]
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (x8, y8) = (x.chunks_exact(8), y.chunks_exact(8));
    let (rx, ry) = (x8.remainder(), y8.remainder());
    for (a, b) in x8.zip(y8) {
        let a: &[f64; 8] = a.try_into().expect("chunks of 8");
        let b: &[f64; 8] = b.try_into().expect("chunks of 8");
        for k in 0..8 {
            acc[k] += a[k] * b[k];
        }
    }
    let mut sum = (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]);
    for (a, b) in rx.iter().zip(ry) {
        sum += a * b;
    }
    sum
}

/// Solves `(a + ridge·D) x = b`, raising the ridge tenfold until the system
/// is positive definite (noisy statistics can make it indefinite). `diag`
/// gives D's diagonal. Returns the ridge used.
#[inline(always)]
pub fn solve_with_ridge(a: &[f64], n: usize, diag: &[f64], ridge: f64, b: &[f64], x: &mut [f64]) -> f64 {
    let mut ridge = ridge.max(1e-9);
    let mut work = a.to_vec();
    loop {
        for i in 0..n {
            work[i * n + i] += ridge * diag[i];
        }
        x.copy_from_slice(b);
        if cholesky_solve(&mut work, n, x) {
            return ridge;
        }
        ridge *= 10.0;
        work.copy_from_slice(a);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The factorization one step at a time, as it was before blocking.
    fn cholesky_one_step_at_a_time(a: &mut [f64], n: usize) -> bool {
        for j in 0..n {
            let Some((row_j, trailing)) = pivot_row(a, n, j) else {
                return false;
            };
            for (offset, &u_ji) in row_j.iter().enumerate() {
                let i = j + 1 + offset;
                let row_i = &mut trailing[(i - j - 1) * n + i..(i - j) * n];
                for (cell, u_jk) in row_i.iter_mut().zip(&row_j[offset..]) {
                    *cell -= u_ji * u_jk;
                }
            }
        }
        true
    }

    proptest! {
        /// Blocking changes neither the factor nor the verdict, to the bit,
        /// for every size (whole blocks and a partial last one) and for
        /// matrices that are not positive definite.
        #[test]
        fn blocked_cholesky_equals_one_step_at_a_time(
            n in 1usize..23,
            values in prop::collection::vec(-1.0f64..1.0, 23 * 23),
            ridge in prop_oneof![Just(-0.5f64), Just(0.0), 0.1f64..30.0],
        ) {
            let mut a = vec![0.0; n * n];
            for r in 0..n {
                add_outer_upper(&mut a, n, &values[r * n..(r + 1) * n], 1.0);
            }
            (0..n).for_each(|i| a[i * n + i] += ridge);
            let mut blocked = a.clone();
            let mut reference = a.clone();
            let ok = cholesky_solve(&mut blocked, n, &mut vec![1.0; n]);
            prop_assert_eq!(ok, cholesky_one_step_at_a_time(&mut reference, n));
            if ok {
                let upper = |m: &[f64]| (0..n).flat_map(|i| (i..n).map(move |k| m[i * n + k].to_bits())).collect::<Vec<_>>();
                prop_assert_eq!(upper(&blocked), upper(&reference));
            }
        }
    }

    #[test]
    fn solves_a_known_system() {
        // A = [[4, 2], [2, 3]], x = [1, 2] → b = [8, 8]; the lower triangle is not read.
        let mut a = vec![4.0, 2.0, f64::NAN, 3.0];
        let mut b = vec![8.0, 8.0];
        assert!(cholesky_solve(&mut a, 2, &mut b));
        assert!((b[0] - 1.0).abs() < 1e-12 && (b[1] - 2.0).abs() < 1e-12);
        let mut indefinite = vec![1.0, 2.0, 2.0, 1.0];
        assert!(!cholesky_solve(&mut indefinite, 2, &mut [1.0, 1.0]));
    }

    #[test]
    fn outer_products_accumulate_and_ridge_rescues() {
        let mut a = vec![0.0; 9];
        add_outer_upper(&mut a, 3, &[1.0, 2.0, 3.0], 2.0);
        mirror_upper(&mut a, 3);
        assert_eq!(a, [2.0, 4.0, 6.0, 4.0, 8.0, 12.0, 6.0, 12.0, 18.0]);
        let mut x = vec![0.0; 3];
        let ridge = solve_with_ridge(&a, 3, &[1.0; 3], 1e-12, &[1.0, 1.0, 1.0], &mut x);
        assert!(ridge > 0.0 && x.iter().all(|v| v.is_finite()));
    }
}

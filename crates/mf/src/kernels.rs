#![allow(unsafe_code)] // SIMD intrinsics and calls into `#[target_feature]` functions need `unsafe`; it lives here only.
//! The crate's SIMD kernels, and the one choice of which of them run.
//!
//! # Kernels
//! - the conjugate-gradient solve of training ([`crate::cg`]), compiled for
//!   AVX2 and FMA (the same code as the portable one, which has only SSE2);
//! - request-time fold-in, compiled for AVX2 and FMA, and for implicit
//!   models an AVX-512 solve formed and factored in registers;
//! - the quantized first scoring pass of `top_k`: AVX-512 VNNI
//!   (`vpdpbusd`) or AVX2 (`vpmaddubsw`); the portable path has no such pass
//!   and scores every item exactly.
//!
//! # Levels
//! [`KernelLevel`] orders what a CPU can run: portable, AVX2+FMA,
//! AVX-512F+FMA, AVX-512 VNNI. Each level includes the ones below it. A
//! level is a token type here ([`Avx2Fma`], [`Avx512Fma`], [`Avx512Vnni`])
//! that only its `new()` makes, after checking every CPU feature its
//! kernels enable (the witness types of the `memchr` crate): holding one
//! proves the kernels it calls are sound to run, so its methods are safe.
//!
//! The level is chosen once per process, on first use: the highest the CPU
//! supports, unless the environment variable `HUSH_KERNEL` says
//! `portable` (any case), which forces the portable code everywhere in
//! this crate (and `hush-privacy` reads it the same way). Unset, empty or
//! `auto` means detection; any other value is ignored with a warning (the
//! level is then detected, as for `auto`). [`kernel_level`] tells which level
//! was chosen. The tests compare every kernel with its portable twin on
//! whatever the CPU supports, whatever the level.

use std::sync::OnceLock;

use hush_privacy::{KernelSwitch, KERNEL_SWITCH_VAR as SWITCH};

/// Which kernels this process runs (see the crate documentation's section on SIMD kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelLevel {
    /// Portable Rust, no CPU-specific code: forced by `HUSH_KERNEL=portable`,
    /// or a CPU without AVX2 and FMA.
    Portable,
    /// AVX2 and FMA.
    Avx2Fma,
    /// AVX-512F and FMA (and AVX2): the AVX-512 fold-in solve.
    Avx512Fma,
    /// AVX-512F, AVX-512 VNNI and FMA (and AVX2): the VNNI scoring pass too.
    Avx512Vnni,
}

impl KernelLevel {
    /// A short name for logs: `portable`, `avx2+fma`, `avx512f+fma` or `avx512vnni`.
    pub fn name(self) -> &'static str {
        match self {
            KernelLevel::Portable => "portable",
            KernelLevel::Avx2Fma => "avx2+fma",
            KernelLevel::Avx512Fma => "avx512f+fma",
            KernelLevel::Avx512Vnni => "avx512vnni",
        }
    }
}

/// The kernel level this process runs, chosen on first use (by any kernel
/// or by this call) from the CPU and `HUSH_KERNEL`, then fixed.
pub fn kernel_level() -> KernelLevel {
    kernel().level()
}

/// The chosen level with its proof: what the crate's dispatching code asks
/// for the token of the kernels it wants to run.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kernel {
    /// The portable code only.
    Portable,
    /// See [`Avx2Fma`].
    #[cfg(target_arch = "x86_64")]
    Avx2Fma(Avx2Fma),
    /// See [`Avx512Fma`].
    #[cfg(target_arch = "x86_64")]
    Avx512Fma(Avx512Fma),
    /// See [`Avx512Vnni`].
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni(Avx512Vnni),
}

/// The kernels this process runs: chosen once, then a load of a static.
pub(crate) fn kernel() -> Kernel {
    static CHOSEN: OnceLock<Kernel> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let kernel = match KernelSwitch::from_env() {
            KernelSwitch::Portable => Kernel::Portable,
            KernelSwitch::Auto => detected(),
            KernelSwitch::Unknown => {
                tracing::warn!(
                    value = ?std::env::var_os(SWITCH).unwrap_or_default(),
                    "{SWITCH}: unknown value (expected `auto` or `portable`); ignored, the CPU's kernels are detected as for `auto`"
                );
                detected()
            }
        };
        tracing::debug!(level = kernel.level().name(), "hush-mf kernels chosen");
        kernel
    })
}

/// The highest level this CPU supports.
fn detected() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(vnni) = Avx512Vnni::new() {
            return Kernel::Avx512Vnni(vnni);
        }
        if let Some(avx512) = Avx512Fma::new() {
            return Kernel::Avx512Fma(avx512);
        }
        if let Some(avx2) = Avx2Fma::new() {
            return Kernel::Avx2Fma(avx2);
        }
    }
    Kernel::Portable
}

impl Kernel {
    fn level(self) -> KernelLevel {
        match self {
            Kernel::Portable => KernelLevel::Portable,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma(_) => KernelLevel::Avx2Fma,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Fma(_) => KernelLevel::Avx512Fma,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni(_) => KernelLevel::Avx512Vnni,
        }
    }

    /// The AVX2+FMA token, if the level is at least that.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn avx2_fma(self) -> Option<Avx2Fma> {
        match self {
            Kernel::Portable => None,
            Kernel::Avx2Fma(avx2) => Some(avx2),
            Kernel::Avx512Fma(avx512) => Some(avx512.avx2_fma()),
            Kernel::Avx512Vnni(vnni) => Some(vnni.avx512_fma().avx2_fma()),
        }
    }

    /// The AVX-512F+FMA token, if the level is at least that.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn avx512_fma(self) -> Option<Avx512Fma> {
        match self {
            Kernel::Avx512Fma(avx512) => Some(avx512),
            Kernel::Avx512Vnni(vnni) => Some(vnni.avx512_fma()),
            _ => None,
        }
    }

    /// The AVX-512 VNNI token, if the level is that.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn avx512_vnni(self) -> Option<Avx512Vnni> {
        match self {
            Kernel::Avx512Vnni(vnni) => Some(vnni),
            _ => None,
        }
    }
}

/// Proof that the CPU runs AVX2 and FMA: only [`Avx2Fma::new`] makes one.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Fma(());

/// Proof that the CPU runs AVX-512F, FMA and AVX2: only [`Avx512Fma::new`] makes one.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Fma(());

/// Proof that the CPU runs AVX-512F, AVX-512 VNNI, FMA and AVX2: only
/// [`Avx512Vnni::new`] makes one.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Vnni(());

#[cfg(target_arch = "x86_64")]
impl Avx2Fma {
    /// The token, if this CPU has AVX2 and FMA (whatever `HUSH_KERNEL` says:
    /// tests use it to run a kernel beside its portable twin).
    pub(crate) fn new() -> Option<Self> {
        (std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")).then_some(Avx2Fma(()))
    }

    /// [`crate::cg::System::solve`]'s portable code compiled for AVX2 and
    /// FMA: the dot products are most of the training time, and the
    /// portable baseline has only SSE2.
    pub(crate) fn cg_solve(
        self,
        system: &crate::cg::System<'_>,
        base_rhs: Option<&[f32]>,
        x: &mut [f32],
        steps: usize,
    ) {
        // SAFETY: the token proves the CPU has AVX2 and FMA, all the function enables.
        unsafe { x86::cg_solve_avx2_fma(system, base_rhs, x, steps) }
    }

    /// [`crate::Model::fold_in`]'s portable code compiled for AVX2 and FMA:
    /// the rank-one updates and the Cholesky factorization are its inner loops.
    pub(crate) fn fold_in(self, model: &crate::Model, interactions: &[(u32, f32)]) -> crate::SubjectVector {
        // SAFETY: the token proves the CPU has AVX2 and FMA, all the function enables.
        unsafe { x86::fold_in_avx2_fma(model, interactions) }
    }

    /// The quantized scoring pass on AVX2: see [`x86::approximate_scores_avx2_fma`].
    pub(crate) fn approximate_scores(self, scan: &PanelScan<'_>) -> Vec<f32> {
        let panels = scan.panels();
        // SAFETY: the token proves the CPU has AVX2 and FMA, all the function
        // enables; `panels` checked the buffers' lengths against the layout.
        unsafe { x86::approximate_scores_avx2_fma(scan, panels) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx512Fma {
    /// The token, if this CPU has AVX-512F, FMA and AVX2 (whatever `HUSH_KERNEL` says).
    pub(crate) fn new() -> Option<Self> {
        (std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("avx2"))
        .then_some(Avx512Fma(()))
    }

    /// The AVX2+FMA token: this one proves those features too.
    pub(crate) fn avx2_fma(self) -> Avx2Fma {
        Avx2Fma(())
    }

    /// Solves `(G + λI + Σ_t w_t v_t v_tᵀ) x = Σ_t c_t v_t` for the `d×d`
    /// row-major Gramian `gram` (upper triangle read) and items
    /// `(v_t, w_t, c_t)`, or `None` if the system is not positive definite
    /// (the caller then takes the portable path, which raises the ridge).
    /// See [`x86::implicit_solve_avx512`].
    pub(crate) fn implicit_solve(
        self,
        gram: &[f64],
        d: usize,
        lambda: f64,
        items: &[(&[f32], f64, f64)],
    ) -> Option<Vec<f64>> {
        // SAFETY: the token proves the CPU has AVX-512F and FMA, all the
        // function enables; it is sound for any slices (it indexes them with
        // bounds checks and keeps its pointers inside its own buffers).
        unsafe { x86::implicit_solve_avx512(gram, d, lambda, items) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx512Vnni {
    /// The token, if this CPU has AVX-512F, AVX-512 VNNI, FMA and AVX2
    /// (whatever `HUSH_KERNEL` says).
    pub(crate) fn new() -> Option<Self> {
        (std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("avx2"))
        .then_some(Avx512Vnni(()))
    }

    /// The AVX-512F+FMA token: this one proves those features too.
    pub(crate) fn avx512_fma(self) -> Avx512Fma {
        Avx512Fma(())
    }

    /// The quantized scoring pass on AVX-512 VNNI: see [`x86::approximate_scores_avx512_vnni`].
    pub(crate) fn approximate_scores(self, scan: &PanelScan<'_>) -> Vec<f32> {
        let panels = scan.panels();
        // SAFETY: the token proves the CPU has AVX-512F, AVX-512 VNNI and FMA,
        // all the function enables; `panels` checked the buffers' lengths.
        unsafe { x86::approximate_scores_avx512_vnni(scan, panels) }
    }
}

/// Items per scoring panel: one 512-bit register of `i32` lanes, or two
/// 256-bit ones.
pub(crate) const PANEL: usize = 16;

/// The quantized item panels of a serving index and one quantized query:
/// the input of the first scoring pass (see `ServingIndex` in `foldin`).
#[cfg(target_arch = "x86_64")]
pub(crate) struct PanelScan<'a> {
    /// `panels × quads × PANEL × 4` quantized item factors: for each panel
    /// and group of four dimensions, the panel's items side by side.
    pub quantized: &'a [i8],
    /// Groups of four dimensions per item.
    pub quads: usize,
    /// What the query's offset adds to each item's integer dot product
    /// (`panels × PANEL`).
    pub offset_terms: &'a [i32],
    /// The value of one quantization level of each item (`panels × PANEL`).
    pub item_scales: &'a [f32],
    /// The ranking prior of each item (`panels × PANEL`).
    pub prior: &'a [f32],
    /// The query's groups of four offset bytes, one `i32` each (at least `quads`).
    pub query: &'a [i32],
    /// The value of one level of the query.
    pub query_scale: f32,
}

#[cfg(target_arch = "x86_64")]
impl PanelScan<'_> {
    /// The number of panels, after checking that every buffer has the
    /// layout's length: the scans read them through raw pointers.
    fn panels(&self) -> usize {
        let panels = self.prior.len() / PANEL;
        let items = panels * PANEL;
        assert!(
            self.prior.len() == items
                && self.offset_terms.len() == items
                && self.item_scales.len() == items
                && items.checked_mul(self.quads).and_then(|n| n.checked_mul(4)) == Some(self.quantized.len())
                && self.query.len() >= self.quads,
            "a panel scan's buffers do not match its layout"
        );
        panels
    }
}

/// The `#[target_feature]` functions: each `unsafe` to call because the CPU
/// must have the features it enables, which the tokens above prove.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{PanelScan, PANEL};

    // The scans read a panel as one 512-bit register of i32 lanes, or two 256-bit ones.
    const _: () = assert!(PANEL == 16);

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn cg_solve_avx2_fma(
        system: &crate::cg::System<'_>,
        base_rhs: Option<&[f32]>,
        x: &mut [f32],
        steps: usize,
    ) {
        system.solve_portable(base_rhs, x, steps);
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fold_in_avx2_fma(model: &crate::Model, interactions: &[(u32, f32)]) -> crate::SubjectVector {
        model.fold_in_portable(interactions)
    }

    /// The panel scan on AVX-512 VNNI: per panel, four independent
    /// accumulators over the groups of four dimensions (so consecutive
    /// `vpdpbusd` do not wait on each other), then the offset's terms taken
    /// out, and one conversion, scaling and prior.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, AVX-512 VNNI and FMA, and the scan's
    /// buffers must hold `panels` panels ([`PanelScan::panels`] checks).
    #[target_feature(enable = "avx512f,avx512vnni,fma")]
    pub(super) unsafe fn approximate_scores_avx512_vnni(scan: &PanelScan<'_>, panels: usize) -> Vec<f32> {
        let quads = scan.quads;
        let mut scores = vec![0.0f32; panels * PANEL];
        let query_scale = _mm512_set1_ps(scan.query_scale);
        let (fours, rest) = scan.query[..quads].as_chunks::<4>();
        for p in 0..panels {
            // SAFETY: panel p spans quantized[p·quads·4·PANEL ..][.. quads·4·PANEL]
            // and offset_terms/item_scales/prior/scores[p·PANEL ..][.. PANEL],
            // all within their lengths (the caller's contract).
            unsafe {
                let mut at = scan.quantized.as_ptr().add(p * quads * 4 * PANEL);
                let mut next = || {
                    let load = _mm512_loadu_si512(at.cast());
                    at = at.add(4 * PANEL);
                    load
                };
                let mut acc = [_mm512_setzero_si512(); 4];
                for four in fours {
                    for (acc, &quad) in acc.iter_mut().zip(four) {
                        *acc = _mm512_dpbusd_epi32(*acc, _mm512_set1_epi32(quad), next());
                    }
                }
                for &quad in rest {
                    acc[0] = _mm512_dpbusd_epi32(acc[0], _mm512_set1_epi32(quad), next());
                }
                let sum = _mm512_add_epi32(_mm512_add_epi32(acc[0], acc[1]), _mm512_add_epi32(acc[2], acc[3]));
                let offset = _mm512_loadu_si512(scan.offset_terms.as_ptr().add(p * PANEL).cast());
                let dot = _mm512_sub_epi32(sum, offset);
                let prior = _mm512_loadu_ps(scan.prior.as_ptr().add(p * PANEL));
                let scale = _mm512_mul_ps(query_scale, _mm512_loadu_ps(scan.item_scales.as_ptr().add(p * PANEL)));
                _mm512_storeu_ps(
                    scores.as_mut_ptr().add(p * PANEL),
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, prior),
                );
            }
        }
        scores
    }

    /// The same scan on AVX2: each panel as two halves of eight items, each
    /// group of four dimensions a `vpmaddubsw` (pairs of byte products, exact
    /// since the query bytes stay at or below 127) and a `vpmaddwd` by ones.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA, and the scan's buffers must hold
    /// `panels` panels ([`PanelScan::panels`] checks).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn approximate_scores_avx2_fma(scan: &PanelScan<'_>, panels: usize) -> Vec<f32> {
        let quads = scan.quads;
        let mut scores = vec![0.0f32; panels * PANEL];
        let query_scale = _mm256_set1_ps(scan.query_scale);
        let ones = _mm256_set1_epi16(1);
        for p in 0..panels {
            // SAFETY: as in the AVX-512 scan; each half is 8 of the panel's 16 lanes.
            unsafe {
                let base = scan.quantized.as_ptr().add(p * quads * 4 * PANEL);
                let mut acc = [_mm256_setzero_si256(); 2];
                for (m, &quad) in scan.query[..quads].iter().enumerate() {
                    let q = _mm256_set1_epi32(quad);
                    for (h, acc) in acc.iter_mut().enumerate() {
                        let items = _mm256_loadu_si256(base.add(m * 4 * PANEL + h * 4 * 8).cast());
                        let pairs = _mm256_maddubs_epi16(q, items);
                        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(pairs, ones));
                    }
                }
                for (h, acc) in acc.iter().enumerate() {
                    let at = p * PANEL + h * 8;
                    let offset = _mm256_loadu_si256(scan.offset_terms.as_ptr().add(at).cast());
                    let dot = _mm256_sub_epi32(*acc, offset);
                    let prior = _mm256_loadu_ps(scan.prior.as_ptr().add(at));
                    let scale = _mm256_mul_ps(query_scale, _mm256_loadu_ps(scan.item_scales.as_ptr().add(at)));
                    let score = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, prior);
                    _mm256_storeu_ps(scores.as_mut_ptr().add(at), score);
                }
            }
        }
        scores
    }

    /// The implicit subject solve of request-time fold-in on AVX-512, formed and
    /// factored in registers.
    ///
    /// The portable path adds each item's outer product to the whole matrix
    /// and factors it right-looking: both stream the matrix through memory once
    /// per item or step. Here every row is computed once, as a combination of
    /// rows held in L1: row `i` of the matrix is `G_i + λe_i + Σ_t w_t v_t[i] v_t`,
    /// and row `i` of the Cholesky factor is that row minus `Σ_{k<i} U_ki U_k`,
    /// scaled. Each combination accumulates up to 32 columns in four registers
    /// while the rows stream past, so a cell is loaded and stored once.
    /// Rounding differs from the portable path (fused operations, another
    /// order); the result is the same solution to within `f64` rounding.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and FMA.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn implicit_solve_avx512(
        gram: &[f64],
        d: usize,
        lambda: f64,
        items: &[(&[f32], f64, f64)],
    ) -> Option<Vec<f64>> {
        // A negative weight has no square root (below): the portable path takes it.
        if items.iter().any(|&(_, weight, _)| weight.is_nan() || weight < 0.0) {
            return None;
        }
        // Rows padded to whole registers with zeros, so no loop has a tail.
        let stride = d.div_ceil(8) * 8;
        let m = items.len();
        let mut a = vec![0.0f64; d * stride];
        for i in 0..d {
            a[i * stride + i..i * stride + d].copy_from_slice(&gram[i * d + i..(i + 1) * d]);
            a[i * stride + i] += lambda;
        }
        // Item vectors scaled by √w_t: Σ_t w_t v_t v_tᵀ = Σ_t s_t s_tᵀ, so one
        // matrix gives both the coefficients (column i) and the rows.
        let mut scaled = vec![0.0f64; m * stride];
        let mut b = vec![0.0f64; stride];
        for (t, &(factors, weight, confidence)) in items.iter().enumerate() {
            let root = weight.sqrt();
            let scaled = &mut scaled[t * stride..t * stride + d];
            for ((s, b), &f) in scaled.iter_mut().zip(b.iter_mut()).zip(&factors[..d]) {
                let f = f64::from(f);
                *s = root * f;
                *b += confidence * f;
            }
        }
        for i in 0..d {
            let first = i / 8 * 8;
            // SAFETY: every pointer stays within its buffer: rows of `stride`
            // columns, combinations over columns first..stride.
            unsafe {
                let row = a.as_mut_ptr().add(i * stride + first);
                combine::<true>(row, stride - first, scaled.as_ptr().add(i), scaled.as_ptr().add(first), stride, m);
            }
        }
        // Up-looking Cholesky, a = UᵀU: row i of U from the rows above it.
        // Columns left of the diagonal are never read for the upper triangle,
        // so whatever lands there is harmless.
        for i in 0..d {
            let first = i / 8 * 8;
            // SAFETY: as above; rows 0..i are complete before row i reads them.
            unsafe {
                let row = a.as_mut_ptr().add(i * stride + first);
                combine::<false>(row, stride - first, a.as_ptr().add(i), a.as_ptr().add(first), stride, i);
            }
            let pivot = a[i * stride + i];
            if !(pivot > 0.0 && pivot.is_finite()) {
                return None;
            }
            let pivot = pivot.sqrt();
            a[i * stride + i] = pivot;
            // One division, then multiplications: a vector division per
            // element cost more than the rest of the row.
            let inverse = 1.0 / pivot;
            a[i * stride + i + 1..i * stride + d].iter_mut().for_each(|u| *u *= inverse);
        }
        b.truncate(d);
        crate::linalg::substitute(&a, d, stride, &mut b);
        Some(b)
    }

    /// `dst[c] ± Σ_{t<count} coef[t·stride] · rows[t·stride + c]` for `c < len`
    /// (`len` a multiple of 8; added if `ADD`, else subtracted), 32 columns at
    /// a time in registers.
    ///
    /// # Safety
    /// All the addressed elements must lie within their buffers, and the CPU
    /// must support AVX-512F and FMA.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn combine<const ADD: bool>(
        dst: *mut f64,
        len: usize,
        coef: *const f64,
        rows: *const f64,
        stride: usize,
        count: usize,
    ) {
        let mut g = 0;
        while g < len {
            // SAFETY: forwarded from the caller, for columns g..g + 8·B ≤ len.
            unsafe {
                match (len - g) / 8 {
                    1 => group::<1, ADD>(dst.add(g), coef, rows.add(g), stride, count),
                    2 => group::<2, ADD>(dst.add(g), coef, rows.add(g), stride, count),
                    3 => group::<3, ADD>(dst.add(g), coef, rows.add(g), stride, count),
                    _ => group::<4, ADD>(dst.add(g), coef, rows.add(g), stride, count),
                }
            }
            g += 32;
        }
    }

    /// [`combine`] for `8·B` columns held in `B` registers.
    ///
    /// # Safety
    /// As for [`combine`], for `8·B` columns.
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    unsafe fn group<const B: usize, const ADD: bool>(
        dst: *mut f64,
        coef: *const f64,
        rows: *const f64,
        stride: usize,
        count: usize,
    ) {
        // c·x added to or subtracted from the accumulator, fused.
        #[inline(always)]
        fn step<const ADD: bool>(c: __m512d, x: __m512d, acc: __m512d) -> __m512d {
            // SAFETY: only reached from `group`, compiled for AVX-512F and FMA.
            unsafe {
                if ADD {
                    _mm512_fmadd_pd(c, x, acc)
                } else {
                    _mm512_fnmadd_pd(c, x, acc)
                }
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe {
            // Two sets of accumulators, even and odd rows, so that up to eight
            // multiply-adds are in flight instead of one chain per register.
            let mut even: [__m512d; B] = std::array::from_fn(|r| _mm512_loadu_pd(dst.add(8 * r)));
            let mut odd: [__m512d; B] = [_mm512_setzero_pd(); B];
            for p in 0..count / 2 {
                let (t0, t1) = (2 * p, 2 * p + 1);
                let (c0, c1) = (_mm512_set1_pd(*coef.add(t0 * stride)), _mm512_set1_pd(*coef.add(t1 * stride)));
                let (row0, row1) = (rows.add(t0 * stride), rows.add(t1 * stride));
                for (r, (even, odd)) in even.iter_mut().zip(odd.iter_mut()).enumerate() {
                    *even = step::<ADD>(c0, _mm512_loadu_pd(row0.add(8 * r)), *even);
                    *odd = step::<ADD>(c1, _mm512_loadu_pd(row1.add(8 * r)), *odd);
                }
            }
            if count % 2 == 1 {
                let t = count - 1;
                let c = _mm512_set1_pd(*coef.add(t * stride));
                let row = rows.add(t * stride);
                for (r, even) in even.iter_mut().enumerate() {
                    *even = step::<ADD>(c, _mm512_loadu_pd(row.add(8 * r)), *even);
                }
            }
            for (r, (even, odd)) in even.iter().zip(&odd).enumerate() {
                _mm512_storeu_pd(dst.add(8 * r), _mm512_add_pd(*even, *odd));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::process::Command;

    use proptest::prelude::*;

    use super::*;

    /// Set in the child processes of [`hush_kernel_chooses_the_level`]: the
    /// name of the level the child must have chosen.
    const EXPECTED: &str = "HUSH_KERNEL_TEST_EXPECTED_LEVEL";

    /// `HUSH_KERNEL=portable` selects the portable kernels; unset, empty,
    /// `auto` or an unknown value the best the CPU has. The level is chosen
    /// once per process, so each setting runs this test again in a child
    /// process (this test binary, running this test only).
    #[test]
    fn hush_kernel_chooses_the_level() {
        if let Some(expected) = std::env::var_os(EXPECTED) {
            assert_eq!(OsStr::new(kernel_level().name()), expected);
            return;
        }
        let best = detected().level();
        // This process too: CI runs the tests again with HUSH_KERNEL=portable.
        if std::env::var(SWITCH).as_deref() == Ok("portable") {
            assert_eq!(kernel_level(), KernelLevel::Portable);
        } else if std::env::var_os(SWITCH).is_none() {
            assert_eq!(kernel_level(), best);
        }
        for (value, expected) in [
            (Some("portable"), KernelLevel::Portable),
            (Some("PORTABLE"), KernelLevel::Portable),
            (None, best),
            (Some(""), best),
            (Some("auto"), best),
            (Some("avx9000"), best),
        ] {
            let mut child = Command::new(std::env::current_exe().expect("the test binary's path"));
            child.args(["--exact", "kernels::tests::hush_kernel_chooses_the_level"]).env(EXPECTED, expected.name());
            match value {
                Some(value) => child.env(SWITCH, value),
                None => child.env_remove(SWITCH),
            };
            let output = child.output().expect("the test binary runs");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success() && stdout.contains("1 passed"),
                "HUSH_KERNEL={value:?} should choose {expected:?}:\n{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// A level's token hands out the tokens of the levels below it.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn each_level_includes_the_ones_below() {
        let kernel = detected();
        assert_eq!(kernel.avx512_vnni().is_some(), kernel.level() >= KernelLevel::Avx512Vnni);
        assert_eq!(kernel.avx512_fma().is_some(), kernel.level() >= KernelLevel::Avx512Fma);
        assert_eq!(kernel.avx2_fma().is_some(), kernel.level() >= KernelLevel::Avx2Fma);
        assert!(Kernel::Portable.avx2_fma().is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The AVX2+FMA conjugate-gradient solve is the portable code
        /// compiled for those instructions: the same bits, for both kinds
        /// of Gramian, with and without a base right-hand side.
        #[test]
        #[cfg(target_arch = "x86_64")]
        fn avx2_cg_solve_is_the_portable_one_to_the_bit(
            n in 1usize..40,
            interactions in 0usize..30,
            seed in any::<u64>(),
            upper in any::<bool>(),
            with_base in any::<bool>(),
            steps in 0usize..6,
        ) {
            use rand::{Rng, SeedableRng};
            let Some(avx2) = Avx2Fma::new() else {
                return Ok(());
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut gram = vec![0.0f32; n * n];
            for i in 0..n {
                for j in i..n {
                    let value = if i == j { n as f32 + rng.random_range(0.0f32..1.0) } else { rng.random_range(-1.0f32..1.0) };
                    gram[i * n + j] = value;
                    gram[j * n + i] = if upper { f32::NAN } else { value };
                }
            }
            let factor_rows = 50;
            let factors: Vec<f32> = (0..factor_rows * n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let rows: Vec<(u32, f32)> =
                (0..interactions).map(|_| (rng.random_range(0..factor_rows as u32), rng.random_range(0.0f32..5.0))).collect();
            let base: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let start: Vec<f32> = (0..n).map(|_| rng.random_range(-0.1f32..0.1)).collect();
            let system = crate::cg::System {
                n,
                gram: if upper { crate::cg::Gram::Upper(&gram) } else { crate::cg::Gram::Full(&gram) },
                factors: &factors,
                rows: &rows,
                alpha: rng.random_range(0.1f32..40.0),
                ridge: rng.random_range(0.01f32..1.0),
            };
            let base = with_base.then_some(base.as_slice());
            let (mut portable, mut vector) = (start.clone(), start);
            system.solve_portable(base, &mut portable, steps);
            avx2.cg_solve(&system, base, &mut vector, steps);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&vector), bits(&portable));
        }
    }
}

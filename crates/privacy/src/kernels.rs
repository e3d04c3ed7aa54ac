#![allow(unsafe_code)] // SIMD intrinsics and calls into `#[target_feature]` functions need `unsafe`; it lives here only.
//! The crate's SIMD kernel, and the one choice of whether it runs.
//!
//! # Kernels
//! - the fast path of the Gaussian sampler's ziggurat (`noise`), eight
//!   words at a time with AVX2 gathers of the layer edges. Its portable twin
//!   takes one word at a time; both compute the same `f32` values, so a
//!   seeded run draws the same noise on any CPU.
//!
//! # Levels
//! [`KernelLevel`]: portable or AVX2. The AVX2 level is a token type here
//! ([`Avx2`]) that only its `new()` makes, after checking the CPU feature
//! its kernel enables (the witness types of the `memchr` crate): holding
//! one proves the kernel is sound to run, so its method is safe.
//!
//! The level is chosen once per process, on first use: AVX2 where the CPU
//! has it, unless the environment variable `HUSH_KERNEL` says `portable`
//! (any case), which forces the portable code (`hush-mf` reads the same
//! variable for its kernels). Unset, empty or `auto` means detection; any
//! other value is ignored and the level detected, as for `auto` (this crate
//! logs nothing; `hush-mf` warns about such a value). [`kernel_level`]
//! tells which level was chosen. The tests compare the kernel with its
//! portable twin wherever the CPU has AVX2, whatever the level.

use std::ffi::OsStr;
use std::sync::OnceLock;

/// The environment variable that can force the portable kernels, read the
/// same way by every hush crate with SIMD kernels ([`KernelSwitch`]).
pub const KERNEL_SWITCH_VAR: &str = "HUSH_KERNEL";

/// Which kernels this process runs (see the crate documentation's section on SIMD kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelLevel {
    /// Portable Rust, no CPU-specific code: forced by `HUSH_KERNEL=portable`,
    /// or a CPU without AVX2.
    Portable,
    /// AVX2.
    Avx2,
}

impl KernelLevel {
    /// A short name for logs: `portable` or `avx2`.
    pub fn name(self) -> &'static str {
        match self {
            KernelLevel::Portable => "portable",
            KernelLevel::Avx2 => "avx2",
        }
    }
}

/// The kernel level this process runs, chosen on first use (by the
/// sampler or by this call) from the CPU and `HUSH_KERNEL`, then fixed.
pub fn kernel_level() -> KernelLevel {
    kernel().level()
}

/// The chosen level with its proof: what the sampler asks for the token of
/// the kernel it wants to run.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kernel {
    /// The portable code only.
    Portable,
    /// See [`Avx2`].
    #[cfg(target_arch = "x86_64")]
    Avx2(Avx2),
}

/// The kernels this process runs: chosen once, then a load of a static.
pub(crate) fn kernel() -> Kernel {
    static CHOSEN: OnceLock<Kernel> = OnceLock::new();
    *CHOSEN.get_or_init(|| match KernelSwitch::from_env() {
        KernelSwitch::Portable => Kernel::Portable,
        KernelSwitch::Auto | KernelSwitch::Unknown => detected(),
    })
}

/// What `HUSH_KERNEL` asks for: the one reading of it, shared with `hush-mf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSwitch {
    /// Unset, empty or `auto`: the best level the CPU supports.
    Auto,
    /// `portable` (any case): the portable code only.
    Portable,
    /// Anything else: ignored, as [`KernelSwitch::Auto`] (a crate that logs says so).
    Unknown,
}

impl KernelSwitch {
    /// Reads [`KERNEL_SWITCH_VAR`] from the environment.
    pub fn from_env() -> Self {
        Self::parse(std::env::var_os(KERNEL_SWITCH_VAR).as_deref())
    }

    /// Reads one value of the variable (`None`: unset).
    pub fn parse(value: Option<&OsStr>) -> Self {
        match value.map(OsStr::to_str) {
            None | Some(Some("")) => KernelSwitch::Auto,
            Some(Some(v)) if v.eq_ignore_ascii_case("auto") => KernelSwitch::Auto,
            Some(Some(v)) if v.eq_ignore_ascii_case("portable") => KernelSwitch::Portable,
            Some(_) => KernelSwitch::Unknown,
        }
    }
}

/// The highest level this CPU supports.
fn detected() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    if let Some(avx2) = Avx2::new() {
        return Kernel::Avx2(avx2);
    }
    Kernel::Portable
}

impl Kernel {
    fn level(self) -> KernelLevel {
        match self {
            Kernel::Portable => KernelLevel::Portable,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2(_) => KernelLevel::Avx2,
        }
    }

    /// The AVX2 token, if the level is that.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn avx2(self) -> Option<Avx2> {
        match self {
            Kernel::Portable => None,
            Kernel::Avx2(avx2) => Some(avx2),
        }
    }
}

/// Proof that the CPU runs AVX2: only [`Avx2::new`] makes one.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2(());

#[cfg(target_arch = "x86_64")]
impl Avx2 {
    /// The token, if this CPU has AVX2 (whatever `HUSH_KERNEL` says: tests
    /// use it to run the kernel beside its portable twin).
    pub(crate) fn new() -> Option<Self> {
        std::is_x86_feature_detected!("avx2").then_some(Avx2(()))
    }

    /// The ziggurat's fast path for the words of every whole group of eight
    /// (of at most 128 words): each word's draw from its layer's rectangle
    /// into `out`, and the lanes whose draw falls outside the rectangle as
    /// bits of the returned mask. `edges` are the layer edges in `f32`, as
    /// the portable fast path reads them; lanes past the last whole group
    /// of eight are left to the caller.
    pub(crate) fn ziggurat_fast_path(self, words: &[u32], out: &mut [f32], edges: &[f32; 257]) -> u128 {
        // One mask bit a lane: more than 128 lanes would shift bits out of it.
        assert!(words.len().min(out.len()) <= 128, "at most 128 words a block");
        // SAFETY: the token proves the CPU has AVX2, all the function
        // enables; it is sound for any slices (it stays within both).
        unsafe { x86::ziggurat_fast_path_avx2(words, out, edges) }
    }
}

/// The `#[target_feature]` function: `unsafe` to call because the CPU must
/// have AVX2, which the token above proves.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// See [`super::Avx2::ziggurat_fast_path`]: the layer edges are looked
    /// up with gathers, so the branch-free loop runs at the generator's pace.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn ziggurat_fast_path_avx2(words: &[u32], out: &mut [f32], edges: &[f32; 257]) -> u128 {
        let n = words.len().min(out.len());
        let lanes = n / 8 * 8;
        let low_byte = _mm256_set1_epi32(0xff);
        let centre = _mm256_set1_ps(8_388_607.5);
        let scale = _mm256_set1_ps(1.0 / 8_388_608.0);
        let magnitude = _mm256_set1_ps(f32::from_bits(0x7fff_ffff));
        let mut rejected = 0u128;
        for start in (0..lanes).step_by(8) {
            // SAFETY: start + 8 <= n, within both slices; layer indices are at
            // most 255, so `layer` and `layer + 1` are inside the 257 edges.
            unsafe {
                let word = _mm256_loadu_si256(words.as_ptr().add(start).cast());
                let layer = _mm256_and_si256(word, low_byte);
                let position =
                    _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32::<8>(word)), centre), scale);
                let edge = _mm256_i32gather_ps::<4>(edges.as_ptr(), layer);
                let inner_edge = _mm256_i32gather_ps::<4>(edges.as_ptr().add(1), layer);
                let x = _mm256_mul_ps(position, edge);
                let outside = _mm256_cmp_ps::<_CMP_NLT_UQ>(_mm256_and_ps(x, magnitude), inner_edge);
                _mm256_storeu_ps(out.as_mut_ptr().add(start), x);
                rejected |= u128::from(_mm256_movemask_ps(outside) as u8) << start;
            }
        }
        rejected
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Set in the child processes of [`hush_kernel_chooses_the_level`]: the
    /// name of the level the child must have chosen.
    const EXPECTED: &str = "HUSH_KERNEL_TEST_EXPECTED_LEVEL";

    #[test]
    fn hush_kernel_values_are_read_as_documented() {
        use KernelSwitch::*;
        for (value, expected) in [
            (None, Auto),
            (Some(""), Auto),
            (Some("auto"), Auto),
            (Some("AUTO"), Auto),
            (Some("portable"), Portable),
            (Some("Portable"), Portable),
            (Some(" portable"), Unknown),
            (Some("avx2"), Unknown),
        ] {
            assert_eq!(KernelSwitch::parse(value.map(OsStr::new)), expected, "HUSH_KERNEL={value:?}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            assert_eq!(KernelSwitch::parse(Some(OsStr::from_bytes(b"portable\xff"))), Unknown, "not UTF-8");
        }
    }

    /// `HUSH_KERNEL=portable` selects the portable kernel; unset, empty,
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
        if std::env::var(KERNEL_SWITCH_VAR).as_deref() == Ok("portable") {
            assert_eq!(kernel_level(), KernelLevel::Portable);
        } else if std::env::var_os(KERNEL_SWITCH_VAR).is_none() {
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
                Some(value) => child.env(KERNEL_SWITCH_VAR, value),
                None => child.env_remove(KERNEL_SWITCH_VAR),
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
}

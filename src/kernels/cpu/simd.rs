//! Run-time choice of the instruction set the hand-written kernels are compiled for.

use std::sync::OnceLock;

/// The instruction-set level a kernel runs at. Each hand-written kernel is compiled once per
/// level; [`SimdLevel::current`] picks the best one the processor has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Plain Rust, whatever the target's baseline allows (SSE2 on x86-64).
    Portable,
    /// AVX2 with fused multiply-add (x86-64).
    Avx2,
    /// AVX-512F (x86-64).
    Avx512,
}

impl SimdLevel {
    /// The best level this processor supports.
    pub fn detected() -> Self {
        static DETECTED: OnceLock<SimdLevel> = OnceLock::new();
        *DETECTED.get_or_init(Self::probe)
    }

    fn probe() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// The level the kernels use: the detected one, lowered by the environment variable
    /// `TRANSFER_VISION_SIMD` (`portable`, `avx2` or `avx512`) when set. Read once per process.
    pub fn current() -> Self {
        static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let detected = Self::detected();
            std::env::var("TRANSFER_VISION_SIMD")
                .ok()
                .and_then(|name| Self::parse(&name))
                .map_or(detected, |asked| asked.min(detected))
        })
    }

    /// Parses `portable`, `avx2` or `avx512` (case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "portable" | "scalar" | "none" => Some(Self::Portable),
            "avx2" => Some(Self::Avx2),
            "avx512" | "avx512f" => Some(Self::Avx512),
            _ => None,
        }
    }

    /// Every level this processor can run, lowest first (what the tests walk).
    pub fn supported() -> Vec<Self> {
        let best = Self::detected();
        [Self::Portable, Self::Avx2, Self::Avx512]
            .into_iter()
            .filter(|level| *level <= best)
            .collect()
    }
}

/// Defines `$name(level, args...)` that runs `$body::<FMA>(args...)` compiled for the given
/// [`SimdLevel`]: the same Rust, with the instruction set of each level enabled, so the compiler
/// vectorises it for that width. `FMA` is true where fused multiply-add is available.
///
/// `$body` must be `#[inline(always)]`: a body the compiler leaves out of line is compiled once,
/// for the target's baseline, and every level then runs that one copy (`perf` shows the body's
/// own symbol instead of `$name::avx512`).
macro_rules! simd_dispatch {
    ($(#[$doc:meta])* $vis:vis fn $name:ident => $body:ident ($($arg:ident : $ty:ty),* $(,)?)) => {
        $(#[$doc])*
        $vis fn $name(level: $crate::kernels::cpu::SimdLevel, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            fn avx512($($arg: $ty),*) {
                $body::<true>($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) {
                $body::<true>($($arg),*)
            }
            match level.min($crate::kernels::cpu::SimdLevel::detected()) {
                // SAFETY: the level is capped by `SimdLevel::detected`, which checked that this
                // processor has AVX-512F, AVX2 and FMA (respectively AVX2 and FMA), the features
                // these two functions are compiled with.
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::cpu::SimdLevel::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::cpu::SimdLevel::Avx2 => unsafe { avx2($($arg),*) },
                _ => $body::<false>($($arg),*),
            }
        }
    };
}
pub(crate) use simd_dispatch;

/// `a * b + c`, fused where the level has FMA (one rounding, and one instruction), else plain
/// (a software `mul_add` would be far slower than the two roundings).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

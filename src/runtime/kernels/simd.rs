//! Each hot loop is written once over slices, so that the compiler can vectorise it, and compiled
//! three times — AVX-512, AVX2+FMA and the x86-64 baseline — with the variant picked at run time
//! (`multiversion!`): the `.so` ships to clusters whose CPUs we do not know, so it cannot be built for
//! one `target-cpu`. Every variant computes the same values: multiply-adds are fused everywhere
//! (`f32::mul_add`: one instruction with FMA, libm's correctly rounded `fmaf` on the baseline, slower
//! but equal) and clamps take the vector instructions' rule ([`clamp`]), so that a model lowered the
//! same way gives the same bits whichever variant ran (the int8 rows' promise, tests/int8_identity.rs).

/// `x` clamped to `low..=high` as AVX's `max_ps(x, low)` then `min_ps(·, high)` clamp it, which
/// every kernel's intrinsics use: equal values (+0 against −0) give the bound, unlike
/// `f32::max`/`min`, which may give either. One rule, so that a portable kernel stores the bits
/// an intrinsics kernel stores.
#[inline(always)]
pub(crate) fn clamp(x: f32, low: f32, high: f32) -> f32 {
    let above = if x > low { x } else { low };
    if above < high { above } else { high }
}

/// Defines `fn $name(args)` (with the visibility given) that runs `$body` compiled for AVX-512 or AVX2+FMA when the CPU has
/// them, else for the x86-64 baseline.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                /// # Safety
                /// The CPU has AVX-512 F and VL, AVX2 and FMA (`Isa::Avx512`).
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                /// # Safety
                /// The CPU has AVX2 and FMA (`Isa::Avx2Fma` or wider).
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                match $crate::cpu::isa() {
                    // SAFETY: the CPU has these features: `cpu::isa()` reports AVX-512 only where
                    // AVX-512 F and VL, AVX2 and FMA were all detected, and AVX2 only with FMA.
                    $crate::cpu::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::cpu::Isa::Avx2Fma => return unsafe { avx2($($arg),*) },
                    $crate::cpu::Isa::Baseline => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

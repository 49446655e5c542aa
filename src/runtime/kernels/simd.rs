//! Each hot loop is written once over slices, so that the compiler can vectorise it, and compiled
//! three times — AVX-512, AVX2+FMA and the x86-64 baseline — with the variant picked at run time
//! (`multiversion!`): the `.so` ships to clusters whose CPUs we do not know, so it cannot be built for
//! one `target-cpu`. The AVX-512 and AVX2 variants fuse each multiply-add (one FMA instruction); the
//! baseline's does as its caller asks ([`BaselineMultiplyAdd`]). Clamps take the vector instructions'
//! rule ([`clamp`]). So a program that asks for fused multiply-adds gets the same bits from every
//! variant (int8's promise, tests/int8_identity.rs).

/// How a kernel's baseline variant multiplies and adds (the AVX2 and AVX-512 variants always fuse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BaselineMultiplyAdd {
    /// Fused, by libm's correctly rounded `fmaf`: the bits the vector variants give, but a call per
    /// multiply-add (f32 models ran 7× slower on the baseline path, Zen 5 capped; slower still on a CPU
    /// without FMA, where `fmaf` is software). An int8 program asks for it, so that its rows are the
    /// same bits on every CPU.
    Fused,
    /// A product, then a sum, each rounded: what f32 programs run, whose rows differ between
    /// instruction sets by rounding anyway.
    Separate,
}

/// `a·b + c`, fused or not: the baseline variant's choice, made a type so that each loop compiles
/// with its own.
pub(crate) trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

pub(crate) struct Fused;
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

pub(crate) struct Separate;
impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// `x` clamped to `low..=high` as AVX's `max_ps(x, low)` then `min_ps(·, high)` clamp it, which
/// every kernel's intrinsics use: equal values (+0 against −0) give the bound, unlike
/// `f32::max`/`min`, which may give either. One rule, so that a portable kernel stores the bits
/// an intrinsics kernel stores.
#[inline(always)]
pub(crate) fn clamp(x: f32, low: f32, high: f32) -> f32 {
    let above = if x > low { x } else { low };
    if above < high { above } else { high }
}

/// Defines `fn $name(args)` (with the visibility given) that runs `$body` compiled for AVX-512 or
/// AVX2+FMA when the CPU has them, else for the x86-64 baseline. In the form whose first argument is
/// `multiply_add`, the function takes a [`BaselineMultiplyAdd`] first and `$body` is generic over
/// [`MulAdd`]: [`Fused`] in the vector variants, the one asked for on the baseline.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident(multiply_add, $($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)] // the choice of multiply-add comes on top of the kernel's own
        $vis fn $name(multiply_add: $crate::runtime::kernels::simd::BaselineMultiplyAdd, $($arg: $ty),*) {
            use $crate::runtime::kernels::simd::{BaselineMultiplyAdd, Fused, Separate};
            #[cfg(target_arch = "x86_64")]
            {
                /// # Safety
                /// The CPU has AVX-512 F and VL, AVX2 and FMA (`Isa::Avx512`).
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body::<Fused>($($arg),*)
                }
                /// # Safety
                /// The CPU has AVX2 and FMA (`Isa::Avx2Fma` or wider).
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body::<Fused>($($arg),*)
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
            match multiply_add {
                BaselineMultiplyAdd::Fused => $body::<Fused>($($arg),*),
                BaselineMultiplyAdd::Separate => $body::<Separate>($($arg),*),
            }
        }
    };
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
                    // SAFETY: as in the form above.
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

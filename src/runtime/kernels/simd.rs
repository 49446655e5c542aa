//! Each hot loop is written once over slices, so that the compiler can vectorise it, and compiled
//! three times — AVX-512, AVX2+FMA and the x86-64 baseline — with the variant picked at run time
//! (`multiversion!`): the `.so` ships to clusters whose CPUs we do not know, so it cannot be built for
//! one `target-cpu`.

/// `a·b + c`, fused where the CPU has FMA (where it has not, `f32::mul_add` would be a libm call).
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

pub(crate) struct Unfused;
impl MulAdd for Unfused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Defines `pub fn $name(args)` that runs `$body::<$crate::runtime::kernels::simd::Fused>` under AVX-512 or AVX2+FMA when the CPU has
/// them, else `$body::<$crate::runtime::kernels::simd::Unfused>` on the baseline instruction set.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                /// # Safety
                /// The CPU has AVX-512 F and VL, AVX2 and FMA (`Isa::Avx512`).
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body::<$crate::runtime::kernels::simd::Fused>($($arg),*)
                }
                /// # Safety
                /// The CPU has AVX2 and FMA (`Isa::Avx2Fma` or wider).
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body::<$crate::runtime::kernels::simd::Fused>($($arg),*)
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
            $body::<$crate::runtime::kernels::simd::Unfused>($($arg),*)
        }
    };
}
pub(crate) use multiversion;

//! What this CPU can run: probed once per process, capped by `IMGFEAT_MAX_ISA`, and asked by every
//! part that picks a code path by instruction set (the kernels, the packed and int8 products, the
//! resize, the Hamming scan), so that one cap moves them all together.

use std::sync::OnceLock;

/// The widest vector instruction set the kernels use on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// The x86-64 baseline (SSE2), or another architecture.
    Baseline,
    /// AVX2 with FMA.
    Avx2Fma,
    /// AVX-512 F and VL, with AVX2 and FMA.
    Avx512,
}

/// What this process runs on, detected once ([`features`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuFeatures {
    /// The instruction set of the f32 kernels, the packed product and the resize.
    pub isa: Isa,
    /// AVX-512 BW and VNNI under [`Isa::Avx512`]: the int8 products' AVX-512 VNNI kernels
    /// (`"precision": "int8"`; without them its AVX-VNNI, AVX2 or portable kernels run, with the same
    /// results).
    pub int8_products: bool,
    /// AVX-VNNI (256-bit `vpdpbusd`) under [`Isa::Avx2Fma`] or wider: int8's products on a CPU without
    /// AVX-512 VNNI (the same results).
    pub avx_vnni_products: bool,
    /// AVX-512 BF16 under [`Isa::Avx512`]: the bf16 products (`"precision": "bf16"`).
    pub bf16_products: bool,
    /// AVX-512 VPOPCNTDQ under [`Isa::Avx512`]: the Hamming scan counts eight codes' bits at once.
    pub vector_popcount: bool,
    /// The POPCNT instruction (not in the x86-64 baseline).
    pub popcount: bool,
}

/// Caps the instruction set, to run on this CPU the path another CPU would take: `avx2` runs what a
/// CPU without AVX-512 runs (bf16 then falls back to f32; int8 runs its AVX-VNNI or AVX2 kernels,
/// with the same rows), `baseline` the x86-64 baseline kernels.
/// Read once; an unknown value is ignored with a warning.
pub const MAX_ISA_VARIABLE: &str = "IMGFEAT_MAX_ISA";

/// This CPU's features, under the `IMGFEAT_MAX_ISA` cap; probed on the first call.
pub fn features() -> &'static CpuFeatures {
    static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
    FEATURES.get_or_init(|| {
        let cap = match std::env::var(MAX_ISA_VARIABLE).as_deref() {
            Err(_) | Ok("") | Ok("avx512") => Isa::Avx512,
            Ok("avx2") => Isa::Avx2Fma,
            Ok("baseline") => Isa::Baseline,
            Ok(other) => {
                log::warn!("{MAX_ISA_VARIABLE}={other:?} is not avx512, avx2 or baseline; ignored");
                Isa::Avx512
            }
        };
        let detected = probe();
        let isa = detected.isa.min(cap);
        CpuFeatures {
            isa,
            int8_products: detected.int8_products && isa == Isa::Avx512,
            avx_vnni_products: detected.avx_vnni_products && isa >= Isa::Avx2Fma,
            bf16_products: detected.bf16_products && isa == Isa::Avx512,
            vector_popcount: detected.vector_popcount && isa == Isa::Avx512,
            popcount: detected.popcount && isa > Isa::Baseline,
        }
    })
}

/// The instruction set of the kernels: `features().isa`.
pub fn isa() -> Isa {
    features().isa
}

#[cfg(target_arch = "x86_64")]
fn probe() -> CpuFeatures {
    use std::arch::is_x86_feature_detected as has;
    // Everything the AVX-512 variants are compiled with (`multiversion!`, the intrinsics kernels).
    let avx2 = has!("avx2") && has!("fma");
    let isa = if avx2 && has!("avx512f") && has!("avx512vl") {
        Isa::Avx512
    } else if avx2 {
        Isa::Avx2Fma
    } else {
        Isa::Baseline
    };
    CpuFeatures {
        isa,
        int8_products: isa == Isa::Avx512 && has!("avx512bw") && has!("avx512vnni"),
        avx_vnni_products: avx2 && has!("avxvnni"),
        bf16_products: isa == Isa::Avx512 && has!("avx512bf16"),
        vector_popcount: isa == Isa::Avx512 && has!("avx512vpopcntdq") && has!("popcnt"),
        popcount: has!("popcnt"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn probe() -> CpuFeatures {
    CpuFeatures { isa: Isa::Baseline, int8_products: false, avx_vnni_products: false, bf16_products: false, vector_popcount: false, popcount: false }
}

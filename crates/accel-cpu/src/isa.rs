//! Instruction-set selection, made once per process. `ACCEL_CPU_ISA=portable|avx2|avx512`
//! caps it (a level the CPU lacks is never chosen) so tests can check every path against the
//! others on one machine.

use std::sync::OnceLock;

/// Kernel families, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust the compiler vectorizes for the baseline target (SSE2 on x86-64, NEON on
    /// aarch64).
    Portable,
    /// x86-64 with AVX2 and FMA.
    Avx2Fma,
    /// x86-64 with AVX-512F (and AVX2, FMA).
    Avx512,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2Fma => "avx2+fma",
            Isa::Avx512 => "avx512f",
        }
    }

    fn from_env(v: &str) -> Option<Isa> {
        match v {
            "portable" => Some(Isa::Portable),
            "avx2" | "avx2+fma" => Some(Isa::Avx2Fma),
            "avx512" | "avx512f" => Some(Isa::Avx512),
            _ => None,
        }
    }
}

/// The best kernel family this CPU runs.
pub fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        if avx2 && std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if avx2 {
            return Isa::Avx2Fma;
        }
    }
    Isa::Portable
}

/// The ISA kernels use: detected, capped by `ACCEL_CPU_ISA` when it names a level.
pub fn active() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let best = detect();
        match std::env::var("ACCEL_CPU_ISA")
            .ok()
            .as_deref()
            .and_then(Isa::from_env)
        {
            Some(cap) => cap.min(best),
            None => best,
        }
    })
}

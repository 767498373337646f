//! Does this binary's CUDA code run on the GPU it was given? Checked once when a CUDA device is
//! opened, so a mismatch is one clear sentence at start-up instead of a kernel-launch error in
//! the first job.
//!
//! candle's kernels are PTX compiled for `CUDA_COMPUTE_CAP`: from 9.0 on, for the architecture
//! specific target (`sm_90a`, cudaforge picks the `a` suffix), which only that exact GPU
//! generation runs; below 9.0, plain PTX that the driver also JIT-compiles for newer GPUs.
//! flash-attention v2 needs Ampere (8.0) or newer.

use std::fmt;

/// A CUDA compute capability as `major * 10 + minor` (9.0 -> 90, 8.6 -> 86).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ComputeCap(pub u32);

impl fmt::Display for ComputeCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 / 10, self.0 % 10)
    }
}

impl ComputeCap {
    /// What the build compiled for: `CUDA_COMPUTE_CAP`, or the GPU that nvidia-smi reported, as
    /// read by `build.rs`. `None` for a build without CUDA, or one whose cap could not be read.
    pub fn compiled() -> Option<ComputeCap> {
        parse(option_env!("HEADSHOT_CUDA_COMPUTE_CAP")?)
    }
}

/// `"90"`, `"9.0"`, `"sm_90a"` -> 90.
pub(crate) fn parse(text: &str) -> Option<ComputeCap> {
    let digits: String = text
        .trim()
        .trim_start_matches("sm_")
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok().map(ComputeCap)
}

/// `Err` with the sentence to print when code compiled for `compiled` cannot run on `runtime`.
pub fn check(
    compiled: ComputeCap,
    runtime: ComputeCap,
    gpu: &str,
    flash_attn: bool,
) -> Result<(), String> {
    let rebuild = format!("rebuild with CUDA_COMPUTE_CAP={}", runtime.0);
    if compiled.0 >= 90 && runtime != compiled {
        return Err(format!(
            "this binary was built for compute capability {compiled} (architecture-specific \
             sm_{}a code, which runs on that GPU generation only), but {gpu} has {runtime}; {rebuild}",
            compiled.0
        ));
    }
    if runtime < compiled {
        return Err(format!(
            "this binary was built for compute capability {compiled}, but {gpu} has {runtime}, \
             which cannot run it; {rebuild}"
        ));
    }
    if flash_attn && runtime.0 < 80 {
        return Err(format!(
            "this binary uses flash-attention, which needs compute capability 8.0 or newer, but \
             {gpu} has {runtime}; build without the `flash-attn` feature"
        ));
    }
    Ok(())
}

/// Checks CUDA device `ordinal` against what was compiled (a no-op in builds without CUDA).
#[cfg(feature = "cuda")]
pub(crate) fn check_device(device: &candle_core::Device, ordinal: usize) -> Result<(), String> {
    let candle_core::Device::Cuda(cuda) = device else {
        return Ok(());
    };
    let context = cuda.cuda_stream().context().clone();
    let (major, minor) = context
        .compute_capability()
        .map_err(|e| format!("cannot read the compute capability of cuda:{ordinal}: {e}"))?;
    let runtime = ComputeCap((major * 10 + minor) as u32);
    let name = context
        .name()
        .unwrap_or_else(|_| "an unnamed GPU".to_string());
    let gpu = format!("cuda:{ordinal} ({name})");
    match ComputeCap::compiled() {
        Some(compiled) => {
            check(compiled, runtime, &gpu, cfg!(feature = "flash-attn"))?;
            tracing::info!(%gpu, %runtime, %compiled, "CUDA device matches the build");
        }
        None => tracing::warn!(
            %gpu,
            %runtime,
            "the compute capability this binary was built for is unknown; not checked"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spellings_of_a_compute_cap() {
        assert_eq!(parse("90"), Some(ComputeCap(90)));
        assert_eq!(parse("9.0"), Some(ComputeCap(90)));
        assert_eq!(parse("sm_90a"), Some(ComputeCap(90)));
        assert_eq!(parse(" 86 "), Some(ComputeCap(86)));
        assert_eq!(parse("none"), None);
        assert_eq!(ComputeCap(86).to_string(), "8.6");
    }

    #[test]
    fn arch_specific_builds_run_on_their_generation_only() {
        let h200 = ComputeCap(90);
        assert!(check(ComputeCap(90), h200, "cuda:0", true).is_ok());
        let err = check(ComputeCap(90), ComputeCap(100), "cuda:0 (B200)", false).unwrap_err();
        assert!(err.contains("built for compute capability 9.0"), "{err}");
        assert!(err.contains("CUDA_COMPUTE_CAP=100"), "{err}");
        assert!(check(ComputeCap(90), ComputeCap(89), "cuda:0", false).is_err());
    }

    #[test]
    fn plain_ptx_runs_on_newer_gpus_not_older_ones() {
        assert!(check(ComputeCap(80), ComputeCap(86), "cuda:0", true).is_ok());
        assert!(check(ComputeCap(80), ComputeCap(90), "cuda:0", false).is_ok());
        let err = check(ComputeCap(86), ComputeCap(75), "cuda:1 (T4)", false).unwrap_err();
        assert!(err.contains("cuda:1 (T4) has 7.5"), "{err}");
    }

    #[test]
    fn flash_attention_needs_ampere() {
        assert!(check(ComputeCap(75), ComputeCap(75), "cuda:0", false).is_ok());
        let err = check(ComputeCap(75), ComputeCap(75), "cuda:0", true).unwrap_err();
        assert!(err.contains("flash-attention"), "{err}");
    }
}

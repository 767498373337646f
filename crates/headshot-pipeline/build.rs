//! Records the CUDA compute capability this build compiles candle's kernels for, the way
//! candle-kernels' build reads it (`CUDA_COMPUTE_CAP`, else nvidia-smi), so that start-up can
//! compare it with the GPU it is given (src/compute_cap.rs).

fn main() {
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let cap = std::env::var("CUDA_COMPUTE_CAP").ok().or_else(|| {
        let out = std::process::Command::new("nvidia-smi")
            .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        Some(text.lines().next()?.trim().to_string()).filter(|_| out.status.success())
    });
    if let Some(cap) = cap {
        println!("cargo::rustc-env=HEADSHOT_CUDA_COMPUTE_CAP={cap}");
    }
}

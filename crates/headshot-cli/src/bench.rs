//! `headshot bench`: timings of the whole job (several step counts, a tall size, two samples),
//! the VAE decode and batches of concurrent jobs, on one device. Each measurement is one JSON
//! line on stdout, written as soon as it is taken (with its start and end time, so an outside
//! GPU-memory sampler can attribute peaks), and nothing new starts after `--budget-secs`.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use candle_core::{DType, Tensor};
use clap::Args;
use headshot_core::{JobSettings, PreparedFace, RgbImage};
use headshot_pipeline::{DTypeSpec, DeviceSpec, Pipeline, PipelineConfig, RenderOptions};
use serde_json::{json, Value};

#[derive(Args)]
pub struct BenchArgs {
    /// Model set manifest (e.g. the one `headshot random-models` writes).
    #[arg(long, env = "HEADSHOT_MODELS")]
    pub models: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    #[arg(long, default_value = "f16")]
    pub dtype: DTypeSpec,
    /// Width and height of the square jobs (the tall job is this wide and 1.5x as high).
    #[arg(long, default_value_t = 512)]
    pub size: u32,
    /// Step counts of the whole-job runs (the UNet step is derived from the first and last).
    #[arg(long, value_delimiter = ',', default_value = "21,31,41")]
    pub steps: Vec<u32>,
    /// Numbers of concurrent jobs rendered together (one UNet batch each).
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    pub concurrency: Vec<usize>,
    /// Timed runs per measurement (after one warm-up job).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// No new measurement starts after this many seconds from the start.
    #[arg(long, default_value_t = 120.0)]
    pub budget_secs: f64,
}

pub const PROMPT: &str = "pretty woman";
pub const NEGATIVE_PROMPT: &str = "anime, cartoon, drawing, big nose, long nose, fat, ugly, big lips, big mouth, face proportion mismatch, unrealistic, monochrome, lowres, bad anatomy, worst quality, low quality, blurry";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn emit(record: Value) {
    println!("{record}");
}

/// A fixed face: a deterministic unit-length id embedding and a smooth 224 px crop.
fn bench_face() -> PreparedFace {
    let raw: Vec<f32> = (0..512)
        .map(|i| (i * 7919 % 512) as f32 / 256.0 - 1.0)
        .collect();
    let norm = raw.iter().map(|v| v * v).sum::<f32>().sqrt();
    let pixels = (0..224 * 224)
        .flat_map(|i| {
            let (y, x) = (i / 224, i % 224);
            [(x + y) as u8, (2 * y % 256) as u8, (255 - x) as u8]
        })
        .collect();
    PreparedFace {
        id_embedding: raw.iter().map(|v| v / norm).collect(),
        aligned_224: RgbImage {
            width: 224,
            height: 224,
            pixels,
        },
        faces_found: 1,
        more_aligned_224: Vec::new(),
    }
}

fn request(width: u32, height: u32, steps: u32, samples: u32, seed: u64) -> JobSettings {
    JobSettings {
        prompt: PROMPT.into(),
        negative_prompt: NEGATIVE_PROMPT.into(),
        width,
        height,
        num_inference_steps: steps,
        guidance_scale: 7.5,
        s_scale: 1.0,
        samples,
        seed,
        safety_checker: None,
        face_index: 0,
        candidates: 0,
        model: Default::default(),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Statistics of the final images: finite values and a spread that is not a constant image.
fn image_stats(images: &Tensor) -> Result<(bool, f64)> {
    let flat = images.to_dtype(DType::F32)?.flatten_all()?;
    let values = flat.to_vec1::<f32>()?;
    let finite = values.iter().all(|v| v.is_finite());
    let mean = values.iter().map(|v| *v as f64).sum::<f64>() / values.len() as f64;
    let var = values
        .iter()
        .map(|v| (*v as f64 - mean).powi(2))
        .sum::<f64>()
        / values.len() as f64;
    Ok((finite, var.sqrt()))
}

struct Bench<'a> {
    pipeline: &'a Pipeline,
    face: PreparedFace,
    started: Instant,
    budget: f64,
    repeats: usize,
}

impl Bench<'_> {
    fn over_budget(&self, what: &str) -> bool {
        let over = self.started.elapsed().as_secs_f64() > self.budget;
        if over {
            emit(json!({"kind": "skipped", "what": what, "reason": "time budget spent"}));
        }
        over
    }

    /// Renders `jobs` copies of `req` as one batch, `repeats` times.
    fn jobs(
        &self,
        what: &str,
        req: &JobSettings,
        jobs: usize,
        repeats: usize,
    ) -> Result<Option<f64>> {
        if self.over_budget(what) {
            return Ok(None);
        }
        let reqs: Vec<JobSettings> = (0..jobs)
            .map(|i| JobSettings {
                seed: req.seed + i as u64,
                ..req.clone()
            })
            .collect();
        let batch: Vec<(&JobSettings, &PreparedFace)> =
            reqs.iter().map(|r| (r, &self.face)).collect();
        let t_start = now();
        let mut times = Vec::new();
        // Timed as served: no trace.
        for _ in 0..repeats.max(1) {
            let t = Instant::now();
            self.pipeline
                .render_batch(&batch, &RenderOptions::default())?;
            times.push(t.elapsed().as_secs_f64());
        }
        // The float image of one job, untimed, to see that the dtype kept it finite.
        let traced = self
            .pipeline
            .render_batch(&batch[..1], &RenderOptions::traced())?;
        let trace = traced[0].trace.as_ref().context("a traced render")?;
        let stats = image_stats(&trace.image)?;
        let seconds = median(times.clone());
        emit(json!({
            "kind": "job", "what": what, "width": req.width, "height": req.height,
            "steps": req.num_inference_steps, "samples": req.samples, "jobs": jobs,
            "seconds": seconds, "runs": times, "jobs_per_s": jobs as f64 / seconds,
            "image_finite": stats.0, "image_std": stats.1,
            "t_start": t_start, "t_end": now(),
        }));
        Ok(Some(seconds))
    }

    fn vae_decode(&self, size: u32) -> Result<()> {
        if self.over_budget("vae_decode") {
            return Ok(());
        }
        let cell = (size / 8) as usize;
        let device = self.pipeline.device();
        let latents = Tensor::randn(0f32, 1f32, (1, 4, cell, cell), device)?
            .to_dtype(self.pipeline.dtype())?;
        self.pipeline.decode_latents(&latents)?;
        device.synchronize()?;
        let t_start = now();
        let mut times = Vec::new();
        for _ in 0..self.repeats.max(1) * 2 {
            let t = Instant::now();
            self.pipeline.decode_latents(&latents)?;
            device.synchronize()?;
            times.push(t.elapsed().as_secs_f64());
        }
        emit(json!({
            "kind": "vae_decode", "what": "vae_decode", "width": size, "height": size,
            "seconds": median(times.clone()), "runs": times, "t_start": t_start, "t_end": now(),
        }));
        Ok(())
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let started = Instant::now();
    let mut config = PipelineConfig::new(&args.models);
    config.device = args.device;
    config.dtype = args.dtype;
    config.load_face_analyzer = false;
    config.load_safety_checker = false;
    config.resolve.allow_download = false;
    config.resolve.progress = false;
    let most = args.concurrency.iter().copied().max().unwrap_or(1).max(2);
    config.limits.max_batch_images = most;
    config.limits.max_steps = config
        .limits
        .max_steps
        .max(args.steps.iter().copied().max().unwrap_or(1));
    let t_start = now();
    let pipeline = Pipeline::load(&config)?;
    emit(json!({
        "kind": "load", "what": "load", "device": args.device.to_string(), "dtype": args.dtype.to_string(),
        "seconds": started.elapsed().as_secs_f64(), "t_start": t_start, "t_end": now(),
    }));
    let bench = Bench {
        pipeline: &pipeline,
        face: bench_face(),
        started,
        budget: args.budget_secs,
        repeats: args.repeats,
    };
    let s = args.size;
    let first = args.steps.first().copied().unwrap_or(21);
    // Warm-up (kernel compilation, cuDNN plans, allocator): not reported as a timing.
    bench.jobs("warmup", &request(s, s, first, 1, 0), 1, 1)?;
    // One job first: its memory window is the single-job peak.
    let mut by_steps = Vec::new();
    for &steps in &args.steps {
        let t = bench.jobs(
            &format!("job_{s}x{s}_{steps}"),
            &request(s, s, steps, 1, 1),
            1,
            args.repeats,
        )?;
        by_steps.push((steps, t));
    }
    if let (Some((lo, Some(t_lo))), Some((hi, Some(t_hi)))) = (by_steps.first(), by_steps.last()) {
        if hi > lo {
            emit(json!({
                "kind": "unet_step", "what": "unet_step",
                "seconds": (t_hi - t_lo) / f64::from(hi - lo),
                "derived_from": format!("(job {hi} steps - job {lo} steps) / {}", hi - lo),
                "batch": 2,
            }));
        }
    }
    bench.vae_decode(s)?;
    let tall = s * 3 / 2;
    bench.jobs(
        &format!("job_{s}x{tall}_{first}"),
        &request(s, tall, first, 1, 2),
        1,
        args.repeats,
    )?;
    bench.jobs(
        &format!("job_{s}x{s}_{first}_samples2"),
        &request(s, s, first, 2, 3),
        1,
        args.repeats,
    )?;
    for &n in &args.concurrency {
        bench.jobs(
            &format!("concurrent_{n}"),
            &request(s, s, first, 1, 4),
            n,
            1,
        )?;
    }
    emit(json!({"kind": "done", "seconds": started.elapsed().as_secs_f64()}));
    Ok(())
}

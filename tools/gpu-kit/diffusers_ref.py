#!/usr/bin/env python3
"""diffusers' side of the GPU kit (run by check.py on the GPU box; needs torch, diffusers, peft).
Loads a model set the way tools/fixtures/gen_goldens.py does (StableDiffusionPipeline + the
demo's DDIM scheduler + load_ip_adapter for FaceID-PlusV2, CLIP features set on the projection)
and prints one JSON line per measurement, in the same shape as `headshot parity` / `headshot bench`.

  parity: the committed e2e goldens on the device in f16/bf16 (diffusers' own low-precision error)
  bench:  the random full-size set: whole jobs, UNet step, VAE decode, concurrent jobs (batched)
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

NEGATIVE_PROMPT = (
    "anime, cartoon, drawing, big nose, long nose, fat, ugly, big lips, big mouth, face proportion "
    "mismatch, unrealistic, monochrome, lowres, bad anatomy, worst quality, low quality, blurry"
)
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def emit(record):
    print(json.dumps(record), flush=True)


def demo_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1)


class Set:
    """A model set on one device: pipeline with the adapter, and the CLIP image encoder."""

    def __init__(self, sd15, vae, image_encoder, adapter_dir, adapter_file, device, dtype):
        from diffusers import AutoencoderKL, StableDiffusionPipeline
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        self.device, self.dtype = device, dtype
        self.pipe = StableDiffusionPipeline.from_pretrained(
            sd15, vae=AutoencoderKL.from_pretrained(vae, torch_dtype=dtype), safety_checker=None,
            requires_safety_checker=False, torch_dtype=dtype)
        self.pipe.scheduler = demo_scheduler()
        self.pipe.load_ip_adapter(str(adapter_dir), subfolder=None, weight_name=adapter_file, image_encoder_folder=None)
        self.pipe.set_ip_adapter_scale(1.0)
        self.pipe.set_progress_bar_config(disable=True)
        self.pipe.to(device)
        self.encoder = CLIPVisionModelWithProjection.from_pretrained(image_encoder, torch_dtype=dtype).to(device).eval()
        self.processor = CLIPImageProcessor()

    def clip_features(self, face_png):
        from PIL import Image

        px = self.processor(images=Image.open(face_png).convert("RGB"), return_tensors="pt").pixel_values
        px = torch.cat([px, torch.zeros_like(px)]).to(self.device, self.dtype)
        with torch.no_grad():
            hs = self.encoder(px, output_hidden_states=True).hidden_states[-2]
        return hs[0:1], hs[1:2]

    def run(self, prompt, negative, id_embeds, cond, uncond, s_scale, guidance, width, height, n, steps, latents):
        """One call of the pipeline for n images (diffusers' layout: [uncond x n, cond x n])."""
        cfg = guidance > 1.0
        proj = self.pipe.unet.encoder_hid_proj.image_projection_layers[0]
        clip = torch.cat([uncond] * n + [cond] * n) if cfg else torch.cat([cond] * n)
        proj.clip_embeds = clip[:, None]
        proj.shortcut = True
        proj.shortcut_scale = s_scale
        e = id_embeds.to(self.device, self.dtype)
        ip = torch.cat([torch.zeros_like(e), e])[:, None] if cfg else e[:, None]
        with torch.no_grad():
            return self.pipe(prompt=prompt, negative_prompt=negative, ip_adapter_image_embeds=[ip],
                             num_inference_steps=steps, guidance_scale=guidance, width=width, height=height,
                             num_images_per_prompt=n, latents=latents, output_type="np").images


def read_golden(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def parity(args):
    kit = Path(args.kit)
    tiny = kit / "tests" / "fixtures" / "tiny"
    goldens = kit / "tests" / "fixtures" / "goldens"
    for dname in args.dtypes.split(","):
        dtype = DTYPES[dname]
        s = Set(tiny / "sd15", tiny / "vae-ft-mse", tiny / "image_encoder", tiny / "ip-adapter",
                "ip-adapter-faceid-plusv2_sd15.bin", args.device, dtype)
        cond, uncond = s.clip_features(goldens / "face_224.png")
        for case in args.cases.split(","):
            t, meta = read_golden(goldens / f"{case}.safetensors")
            started = time.perf_counter()
            image = s.run(meta["prompt"], meta["negative_prompt"] if meta["negative_prompt_given"] == "true" else None,
                          t["id_embeds"], cond, uncond, float(meta["s_scale"]), float(meta["guidance_scale"]),
                          int(meta["width"]), int(meta["height"]), int(meta["samples"]),
                          int(meta["num_inference_steps"]), t["latents"].to(args.device, dtype))
            seconds = time.perf_counter() - started
            ref = t["image"].float().numpy()
            diff = np.abs(image.astype(np.float32) - ref)
            emit({"kind": "parity", "case": case, "device": args.device, "dtype": dname,
                  "image_max_abs": float(diff.max()), "image_mean_abs": float(diff.mean()),
                  "finite": bool(np.isfinite(image).all()), "seconds": seconds})
        del s
        torch.cuda.empty_cache()


def bench(args):
    root = Path(args.set)
    dtype = DTYPES[args.dtype]
    started = time.time()
    t_start = time.time()
    s = Set(root / "sd15", root / "sd15" / "vae", root / "image_encoder", root / "ip-adapter",
            "ip-adapter-faceid-plusv2_sd15.safetensors", args.device, dtype)
    emit({"kind": "load", "what": "load", "seconds": time.time() - started, "t_start": t_start, "t_end": time.time()})
    cond, uncond = s.clip_features(Path(args.kit) / "tests" / "fixtures" / "goldens" / "face_224.png")
    gen = torch.Generator().manual_seed(0)
    e = torch.randn(1, 512, generator=gen)
    id_embeds = e / e.norm(dim=-1, keepdim=True)
    size = args.size
    steps = [int(x) for x in args.steps.split(",")]

    def over(what):
        if time.time() - started > args.budget_secs:
            emit({"kind": "skipped", "what": what, "reason": "time budget spent"})
            return True
        return False

    def job(what, width, height, n_steps, samples, repeats):
        if over(what):
            return None
        times = []
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        for _ in range(max(repeats, 1)):
            t = time.perf_counter()
            image = s.run("pretty woman", NEGATIVE_PROMPT, id_embeds, cond, uncond, 1.0, 7.5, width, height,
                          samples, n_steps, None)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        seconds = sorted(times)[len(times) // 2]
        emit({"kind": "job", "what": what, "width": width, "height": height, "steps": n_steps, "samples": samples,
              "seconds": seconds, "runs": times, "jobs_per_s": (samples if what.startswith("concurrent") else 1) / seconds,
              "image_finite": bool(np.isfinite(image).all()), "image_std": float(image.std()),
              "torch_max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
              "t_start": t0, "t_end": time.time()})
        return seconds

    first = steps[0]
    job("warmup", size, size, first, 1, 1)
    by_steps = [(n, job(f"job_{size}x{size}_{n}", size, size, n, 1, args.repeats)) for n in steps]
    (lo, t_lo), (hi, t_hi) = by_steps[0], by_steps[-1]
    if t_lo and t_hi and hi > lo:
        emit({"kind": "unet_step", "what": "unet_step", "seconds": (t_hi - t_lo) / (hi - lo),
              "derived_from": f"(job {hi} steps - job {lo} steps) / {hi - lo}", "batch": 2})
    if not over("unet_step_direct"):
        unet = s.pipe.unet
        lat = torch.randn(2, 4, size // 8, size // 8, device=args.device, dtype=dtype)
        ctx = torch.randn(2, 77, unet.config.cross_attention_dim, device=args.device, dtype=dtype)
        ip = torch.randn(2, 1, 512, device=args.device, dtype=dtype)
        proj = unet.encoder_hid_proj.image_projection_layers[0]
        proj.clip_embeds = torch.cat([uncond, cond])[:, None]
        times = []
        with torch.no_grad():
            for i in range(6):
                torch.cuda.synchronize()
                t = time.perf_counter()
                unet(lat, 941, encoder_hidden_states=ctx, added_cond_kwargs={"image_embeds": [ip]})
                torch.cuda.synchronize()
                if i:
                    times.append(time.perf_counter() - t)
        emit({"kind": "unet_step_direct", "what": "unet_step_direct", "seconds": sorted(times)[len(times) // 2],
              "runs": times, "batch": 2})
    if not over("vae_decode"):
        lat = torch.randn(1, 4, size // 8, size // 8, device=args.device, dtype=dtype)
        times = []
        t0 = time.time()
        with torch.no_grad():
            for i in range(max(args.repeats, 1) * 2 + 1):
                torch.cuda.synchronize()
                t = time.perf_counter()
                s.pipe.vae.decode(lat / s.pipe.vae.config.scaling_factor)
                torch.cuda.synchronize()
                if i:
                    times.append(time.perf_counter() - t)
        emit({"kind": "vae_decode", "what": "vae_decode", "width": size, "height": size,
              "seconds": sorted(times)[len(times) // 2], "runs": times, "t_start": t0, "t_end": time.time()})
    tall = size * 3 // 2
    job(f"job_{size}x{tall}_{first}", size, tall, first, 1, args.repeats)
    job(f"job_{size}x{size}_{first}_samples2", size, size, first, 2, args.repeats)
    for n in [int(x) for x in args.concurrency.split(",")]:
        # n jobs of one image each, batched the way diffusers can: one call with n images.
        job(f"concurrent_{n}", size, size, first, n, 1)
    emit({"kind": "done", "seconds": time.time() - started})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["parity", "bench"])
    ap.add_argument("--kit", required=True)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--cases", default="")
    ap.add_argument("--dtypes", default="f16,bf16")
    ap.add_argument("--set", help="the random set's folder (bench)")
    ap.add_argument("--dtype", default="f16")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", default="21,31,41")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-secs", type=float, default=90)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    (parity if args.mode == "parity" else bench)(args)


if __name__ == "__main__":
    sys.exit(main())

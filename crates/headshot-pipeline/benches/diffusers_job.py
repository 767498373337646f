"""Reference timing for benches/pipeline.rs: the same full job with diffusers on the tiny set.

21 DDIM steps with CFG, one sample, FaceID-PlusV2 (shortcut, s_scale 1), VAE decode, CPU f32,
from an id embedding + CLIP features (no face detection), like the Rust bench. Run with the
reference venv, e.g.:
    .venv/bin/python crates/headshot-pipeline/benches/diffusers_job.py --size 256 --threads 2
Prints the median wall time of --runs runs.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "tests" / "fixtures" / "tiny"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPVisionModelWithProjection

    vae = AutoencoderKL.from_pretrained(TINY / "vae-ft-mse")
    pipe = StableDiffusionPipeline.from_pretrained(
        TINY / "sd15", vae=vae, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    pipe.load_ip_adapter(str(TINY / "ip-adapter"), subfolder=None,
                         weight_name="ip-adapter-faceid-plusv2_sd15.bin", image_encoder_folder=None)
    pipe.set_progress_bar_config(disable=True)
    encoder = CLIPVisionModelWithProjection.from_pretrained(TINY / "image_encoder").eval()

    id_embeds = torch.nn.functional.normalize(torch.randn(1, 512), dim=-1)
    pixels = torch.randn(1, 3, 224, 224)

    def job():
        with torch.no_grad():
            feats = encoder(torch.cat([torch.zeros_like(pixels), pixels]), output_hidden_states=True).hidden_states[-2]
            proj = pipe.unet.encoder_hid_proj.image_projection_layers[0]
            proj.clip_embeds = feats[:, None]
            proj.shortcut = True
            proj.shortcut_scale = 1.0
            embeds = torch.cat([torch.zeros_like(id_embeds), id_embeds])[:, None]
            return pipe(prompt="pretty woman", negative_prompt="blurry, low quality",
                        ip_adapter_image_embeds=[embeds], num_inference_steps=21, guidance_scale=7.5,
                        width=args.size, height=args.size, output_type="np").images

    job()  # warm-up
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    print(f"diffusers tiny job {args.size}x{args.size} 21 steps CFG, {args.threads} threads: "
          f"median {statistics.median(times) * 1000:.0f} ms over {args.runs} runs")


if __name__ == "__main__":
    main()

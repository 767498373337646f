"""Reference timings for `cargo bench -p headshot-models --bench unet` and the VAE decode in
`--bench encoders`: the diffusers UNet step (plain, with the FaceID-PlusV2 adapter, and with a
user LoRA beside it: active, or loaded and switched off for a job without it), fusing and
unfusing that LoRA, and the VAE decoder on the tiny fixture set, CPU f32, same shapes as the
Rust benches.

    /path/to/venv/bin/python tools/bench/bench_unet_vae.py [--threads 2] [--runs 5]

Prints the median wall time per call. Needs the venv of tools/fixtures/requirements.txt.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_ms  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "fixtures" / "tiny"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", choices=["unet", "vae", "all"], default="all")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from diffusers import AutoencoderKL, StableDiffusionPipeline

    print(f"torch {torch.__version__}, {args.threads} threads, attention: "
          f"{'sdpa' if hasattr(torch.nn.functional, 'scaled_dot_product_attention') else 'classic'}")
    if args.only in ("unet", "all"):
        pipe = StableDiffusionPipeline.from_pretrained(
            TINY / "sd15", safety_checker=None, requires_safety_checker=False
        )
        unet = pipe.unet.eval()
        cross = unet.config.cross_attention_dim
        latents = torch.randn(2, unet.config.in_channels, 64, 64)
        text = torch.randn(2, 77, cross)
        t = torch.tensor(981)
        with torch.no_grad():
            ms = median_ms(lambda: unet(latents, t, encoder_hidden_states=text), args.runs)
        print(f"unet step plain 64x64 batch 2: median {ms:.0f} ms")

        pipe.load_ip_adapter(str(TINY / "ip-adapter"), subfolder=None,
                             weight_name="ip-adapter-faceid-plusv2_sd15.bin",
                             image_encoder_folder=None)
        unet = pipe.unet.eval()
        tokens = torch.randn(2, 1, 4, cross)
        # The Rust bench feeds the id tokens already projected; skip the projection layer here.
        unet.encoder_hid_proj = None
        unet.config.encoder_hid_dim_type = None
        text_and_ip = (text, [tokens])
        with torch.no_grad():
            ms = median_ms(lambda: unet(latents, t, encoder_hidden_states=text_and_ip), args.runs)
        print(f"unet step faceid adapter 64x64 batch 2: median {ms:.0f} ms")

        # The user LoRA as diffusers serves it: peft layers beside the adapter's own LoRA
        # (`faceid_0`), as tools/fixtures/gen_lora.py loads it for the LoRA golden.
        pipe.load_lora_weights(str(TINY / "loras"), weight_name="tiny-style.safetensors",
                               adapter_name="tiny-style")
        pipe.set_adapters(["faceid_0", "tiny-style"], adapter_weights=[1.0, 0.7])
        with torch.no_grad():
            ms = median_ms(lambda: unet(latents, t, encoder_hidden_states=text_and_ip), args.runs)
        print(f"unet step faceid adapter + user lora 0.7 (peft, unfused) 64x64 batch 2: median {ms:.0f} ms")
        # A job without the LoRA on the same pipeline: the layers stay, the adapter is off.
        pipe.set_adapters(["faceid_0"], adapter_weights=[1.0])
        with torch.no_grad():
            ms = median_ms(lambda: unet(latents, t, encoder_hidden_states=text_and_ip), args.runs)
        print(f"unet step faceid adapter, user lora loaded but off 64x64 batch 2: median {ms:.0f} ms")
        pipe.set_adapters(["faceid_0", "tiny-style"], adapter_weights=[1.0, 0.7])

        # Into the UNet only, as the Rust merge bench does (the text encoder is merged apart).
        def fuse_and_unfuse():
            pipe.fuse_lora(components=["unet"], adapter_names=["tiny-style"])
            pipe.unfuse_lora(components=["unet"])

        fuse_ms = median_ms(fuse_and_unfuse, args.runs)
        print(f"fuse + unfuse the user lora (unet): median {fuse_ms:.1f} ms")

    if args.only in ("vae", "all"):
        vae = AutoencoderKL.from_pretrained(TINY / "vae-ft-mse").eval()
        z = torch.randn(1, vae.config.latent_channels, 64, 64)
        with torch.no_grad():
            ms = median_ms(lambda: vae.decode(z).sample, args.runs)
        print(f"vae decode 64x64 latents (512x512) batch 1: median {ms:.0f} ms")


if __name__ == "__main__":
    main()

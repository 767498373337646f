"""torch on the shapes of `cargo bench -p headshot-models --bench kernels` (full-size SD1.5 at
64x64 latents, CFG batch 2, f32 CPU): SDPA self-attention (16 x 4096 x 40), a 320-channel 3x3
convolution, GroupNorm(32, 320) + SiLU.

    /path/to/venv/bin/python tools/bench/bench_kernels.py [--threads 2] [--runs 10]
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_ms  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    q, k, v = (torch.randn(2, 8, 4096, 40) for _ in range(3))
    x = torch.randn(2, 320, 64, 64)
    conv = torch.nn.Conv2d(320, 320, 3, padding=1).eval()
    norm = torch.nn.GroupNorm(32, 320, eps=1e-5).eval()
    with torch.no_grad():
        print(f"self_attention sdpa: {median_ms(lambda: F.scaled_dot_product_attention(q, k, v), args.runs):.1f} ms")
        print(f"conv3x3_320: {median_ms(lambda: conv(x), args.runs):.1f} ms")
        print(f"group_norm_silu_320: {median_ms(lambda: F.silu(norm(x)), args.runs):.1f} ms")


if __name__ == "__main__":
    main()

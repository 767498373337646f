"""Reference timings for `cargo bench -p headshot-pipeline --bench load`: diffusers loading the
tiny set from its folders (`StableDiffusionPipeline.from_pretrained`) against the same weights
from one LDM-layout file (`from_single_file`, config from the folder). Both then load the FaceID
adapter and the image encoder, as our `Pipeline::load` does, CPU f32, no safety checker.

    /path/to/venv/bin/python tools/bench/bench_single_file_load.py [--threads 2] [--runs 10]

The single-file checkpoints are written as tools/fixtures/gen_single_file.py writes them (into
/tmp/headshot-single-file). Prints the median wall time per load. Needs the venv of
tools/fixtures/requirements.txt.
"""

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tools" / "fixtures"))
from timing import median_ms  # noqa: E402

import gen_single_file as gsf  # noqa: E402
from common import IMAGE_ENCODER, IP_ADAPTER_DIR, IP_ADAPTER_FILE, SD15  # noqa: E402


def with_adapter(pipe):
    from transformers import CLIPVisionModelWithProjection

    pipe.load_ip_adapter(str(IP_ADAPTER_DIR), subfolder=None, weight_name=IP_ADAPTER_FILE.name,
                         image_encoder_folder=None)
    CLIPVisionModelWithProjection.from_pretrained(IMAGE_ENCODER)
    return pipe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging

    logging.set_verbosity_error()
    desc, parts = gsf.description(SD15)
    files = {}
    for name in ("fp32", "fp16"):
        files[name] = gsf.BUILD / f"{name}.safetensors"
        gsf.write_canonical(gsf.variant_tensors(desc, parts, gsf.VARIANTS[name]), files[name])

    def folder():
        pipe = StableDiffusionPipeline.from_pretrained(SD15, safety_checker=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return with_adapter(pipe)

    def single(name):
        return lambda: with_adapter(gsf.single_file_pipeline(files[name]))

    for label, fn in (("diffusers_folders", folder), ("single_file_fp32", single("fp32")),
                      ("single_file_fp16", single("fp16"))):
        print(f"{label}: {median_ms(fn, args.runs):.1f} ms (median of {args.runs})")


if __name__ == "__main__":
    main()

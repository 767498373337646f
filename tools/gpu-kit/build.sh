#!/usr/bin/env bash
# Builds the GPU kit on a CPU machine (a fresh clone is enough): one xz archive, at most 60 MiB,
# with everything tools/gpu-kit/check.sh needs on a GPU box that has a driver, Python and torch
# but no Rust and no network (README.md next to this file).
#   bash tools/gpu-kit/build.sh [ARCHIVE]   (default target/gpu-kit/headshot-gpu-kit.tar.xz)
# Env: CUDA_COMPUTE_CAP (default 90: H100/H200), HEADSHOT_CUDA_TOOLKIT (a filled toolkit folder,
# see tools/cuda-toolkit.sh), HEADSHOT_GPU_KIT_CASES (the e2e goldens to ship).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
archive="${1:-$root/target/gpu-kit/headshot-gpu-kit.tar.xz}"
limit=$((60 * 1024 * 1024))
started=$SECONDS
# Its own target folder: the release CUDA build must not invalidate the debug (test) build.
export CARGO_TARGET_DIR="${HEADSHOT_GPU_KIT_TARGET:-$root/target/gpu-kit}"
# The e2e goldens parity runs on the box (each ~1.5-2.9 MiB compressed; the size limit decides).
cases="${HEADSHOT_GPU_KIT_CASES:-e2e_s1_g7.5_512x512_n1_neg_21 e2e_s1_g1_512x512_n1_neg_21 e2e_s1_g5_512x512_n1_neg_31}"

# shellcheck source=../cuda-toolkit.sh
. tools/cuda-toolkit.sh --link
bash tools/fetch-test-assets.sh
# cudnn: candle's convolutions through cuDNN. flash-attn is left out: see README.md. No `download`
# (the box has no network): the CLI is then a few MiB smaller without hf-hub and its client.
cargo build --release --locked -p headshot-server -p headshot-cli --no-default-features --features cuda,cudnn
echo "build.sh: binaries built after $((SECONDS - started)) s" >&2

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
kit="$stage/headshot-gpu-kit"
assets="${HEADSHOT_TEST_ASSETS:-$root/target/test-assets}"
mkdir -p "$kit/bin" "$kit/models" "$kit/tools/gpu-kit" "$kit/target/test-assets" \
    "$kit/tests/fixtures/goldens" "$kit/tests/fixtures/tiny/sd15"
for bin in headshot headshot-server; do
    cp "$CARGO_TARGET_DIR/release/$bin" "$kit/bin/"
    strip "$kit/bin/$bin"
done
cp tools/gpu-kit/check.sh tools/gpu-kit/check.py tools/gpu-kit/diffusers_ref.py tools/gpu-kit/README.md "$kit/tools/gpu-kit/"
cp models/tiny.toml "$kit/models/"

# The tiny fixtures the goldens were made from (the base VAE and the tokenizers-library file
# are not used by the parity runs), and the chosen goldens with the face crop.
tiny=tests/fixtures/tiny
cp -r "$tiny/vae-ft-mse" "$tiny/image_encoder" "$tiny/ip-adapter" "$kit/$tiny/"
for part in model_index.json unet text_encoder tokenizer scheduler feature_extractor safety_checker; do
    cp -r "$tiny/sd15/$part" "$kit/$tiny/sd15/"
done
for case in $cases; do
    cp "tests/fixtures/goldens/$case.safetensors" "$kit/tests/fixtures/goldens/"
done
cp tests/fixtures/goldens/face_224.png tests/fixtures/goldens/tokenizer.safetensors "$kit/tests/fixtures/goldens/"
# 12 of the kit's MiB would be the tiny text encoder's random 49408-row token table; the goldens'
# prompts use a few dozen rows, so the kit keeps those and zeroes the rest (exact for parity).
python3 tools/gpu-kit/slim_text_encoder.py "$kit/$tiny/sd15/text_encoder/model.safetensors" \
    tests/fixtures/goldens/tokenizer.safetensors

# buffalo_s face models, a photo for the server's submits, the CPU ONNX Runtime.
cp "$assets/scrfd_500m_bnkps.onnx" "$assets/w600k_mbf.onnx" "$assets/yaoming.jpg" "$kit/target/test-assets/"
cp "$assets"/libonnxruntime.so* "$kit/target/test-assets/"

# Python packages the box lacks (it has torch, transformers, safetensors, numpy): diffusers and
# what it and peft (diffusers' LoRA path for the FaceID adapter) need beyond those. Unpacked (a
# wheel is a zip of the installed files), so xz compresses them better than the wheels' deflate.
# Two diffusers: 0.42.1 (needs huggingface_hub >= 1.32, transformers 5) and 0.35.2 (the goldens'
# version, for older hubs); check.sh takes the one the box's huggingface_hub fits.
wheels="$stage/wheels"
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any -d "$wheels" \
    diffusers==0.42.1 peft==0.21.2 accelerate==1.15.0 pillow==10.4.0 psutil==7.2.2 \
    importlib_metadata==10.2.0 zipp==4.1.2
# (pip takes one version of a name per call.)
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$wheels" diffusers==0.35.2
for wheel in "$wheels"/*.whl; do
    name="$(basename "$wheel" | cut -d- -f1-2 | tr 'A-Z' 'a-z')"
    mkdir -p "$kit/py/$name"
    python3 -m zipfile -e "$wheel" "$kit/py/$name"
done
for need in diffusers-0.42.1 diffusers-0.35.2 peft-0.21.2 accelerate-1.15.0 pillow-10.4.0; do
    [[ -d $kit/py/$need ]] || { echo "build.sh: the $need wheel did not download" >&2; exit 1; }
done

mkdir -p "$(dirname "$archive")"
# One solid xz stream with a dictionary larger than a binary: the second binary's CUDA kernels
# compress against the first's. Over the limit, the last golden case is left out and it packs
# again (the binaries' compressed size is known only here).
shipped=($cases)
while :; do
    echo "build.sh: compressing ($(du -sm "$kit" | cut -f1) MiB staged, goldens: ${shipped[*]})" >&2
    tar -C "$stage" --sort=name --owner=0 --group=0 --mtime=@0 -cf - headshot-gpu-kit \
        | xz -T1 --lzma2=preset=9e,dict=192MiB > "$archive"
    size=$(stat -c %s "$archive")
    ((size > limit && ${#shipped[@]} > 1)) || break
    last="${shipped[-1]}"
    echo "build.sh: $((size / 1048576)) MiB is over 60 MiB; leaving out $last" >&2
    rm "$kit/tests/fixtures/goldens/$last.safetensors"
    unset 'shipped[-1]'
done
printf 'build.sh: %s is %.1f MiB (limit 60 MiB), built in %d s\n' "$archive" "$(echo "$size / 1048576" | bc -l)" $((SECONDS - started))
if ((size > limit)); then
    echo "build.sh: the archive is over 60 MiB" >&2
    exit 1
fi

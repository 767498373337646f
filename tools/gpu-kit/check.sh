#!/usr/bin/env bash
# The GPU kit's one command (README.md next to this file). On the GPU box, in the unpacked kit:
#   bash tools/gpu-kit/check.sh                 # --device cuda:0, full-size set, ~5.5 minutes
# In CI / on a CPU machine, in a clone with the debug binaries built:
#   bash tools/gpu-kit/check.sh --device cpu    # tiny set, a minute or two
# Writes check.json and check.md into $OUT (if set) or ./gpu-kit-results. Every part has a time
# budget and the files are rewritten after each part, so a cut-short run leaves what it measured.
# Environment: PYTHON (default python3: on the box the one with torch), HEADSHOT_BIN_DIR (the
# folder with `headshot` and `headshot-server`; default: the kit's bin/, else target/debug).
set -euo pipefail
kit="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-python3}"
device="cuda:0"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --device) device="${args[$((i + 1))]}" ;;
        --device=*) device="${args[$i]#--device=}" ;;
    esac
done

if [[ $device != cpu ]]; then
    # Our binaries link against CUDA 13's cuBLAS/cuRAND/NVRTC/cuDNN: use the copies inside the
    # torch environment (site-packages/nvidia/*/lib); libcuda.so.1 comes with the driver.
    site="$("$python" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')"
    libs=""
    for d in "$site"/nvidia/*/lib; do
        [[ -d $d ]] && libs="$libs${libs:+:}$d"
    done
    [[ -n $libs ]] || { echo "check.sh: no nvidia/*/lib under $site (torch's CUDA libraries)" >&2; exit 2; }
    export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # The Python packages the box lacks (diffusers, peft, accelerate, ...), from the kit's wheels,
    # into a folder of the kit (nothing is installed into the box's environment).
    if [[ -d $kit/wheels ]]; then
        deps="$kit/.py-deps"
        if [[ ! -e $deps/.done ]]; then
            missing=()
            for wheel in "$kit"/wheels/*.whl; do
                module="$(basename "$wheel" | cut -d- -f1 | tr 'A-Z' 'a-z')"
                case "$module" in pillow) module=PIL ;; importlib_metadata) module=importlib_metadata ;; esac
                "$python" -c "import $module" 2>/dev/null || missing+=("$wheel")
            done
            if ((${#missing[@]})); then
                "$python" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
                    --target "$deps" "${missing[@]}"
            fi
            mkdir -p "$deps" && touch "$deps/.done"
        fi
        export PYTHONPATH="$deps${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
exec "$python" "$kit/tools/gpu-kit/check.py" --kit "$kit" "$@"

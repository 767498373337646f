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
    # The Python packages the box lacks (diffusers, peft, accelerate, ...), unpacked in the kit's
    # py/ folder: each goes on PYTHONPATH only when the box cannot import it already. diffusers
    # 0.42.1 needs huggingface_hub >= 1.32; with an older hub, 0.35.2 (the goldens' version).
    if [[ -d $kit/py ]]; then
        if "$python" -c 'import sys, huggingface_hub as h; v = tuple(int(x) for x in h.__version__.split(".")[:2]); sys.exit(v < (1, 32))' 2>/dev/null; then
            diffusers=diffusers-0.42.1
        else
            diffusers=diffusers-0.35.2
        fi
        extra=""
        for dir in "$kit"/py/*/; do
            dir="${dir%/}"
            name="$(basename "$dir")"
            case "${name%%-*}" in
                diffusers) [[ $name == "$diffusers" ]] || continue; module=diffusers ;;
                pillow) module=PIL ;;
                *) module="${name%%-*}" ;;
            esac
            # find_spec: present or not, without importing (peft and accelerate import torch).
            "$python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$module') is None)" 2>/dev/null \
                && [[ $module != diffusers ]] && continue
            extra="$extra${extra:+:}$dir"
        done
        export PYTHONPATH="$extra${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
exec "$python" "$kit/tools/gpu-kit/check.py" --kit "$kit" "$@"

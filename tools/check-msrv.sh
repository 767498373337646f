#!/usr/bin/env bash
# Keeps `rust-version` in Cargo.toml true: it must be at least the rust-version of every crate
# the lockfile resolves for Linux x86-64 with every feature on (cuda and flash-attn included),
# and the toolchain running the tests must not be older (cargo itself refuses that). CI runs
# this with the registries' toolchain, which is the one the tests compile with.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --locked --all-features \
    --filter-platform x86_64-unknown-linux-gnu | python3 -c '
import json, re, sys

def version(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3]) + (0,) * (3 - len(re.findall(r"\d+", text)[:3]))

meta = json.load(sys.stdin)
workspace = set(meta["workspace_members"])
used = {node["id"] for node in meta["resolve"]["nodes"]}
ours = {p["rust_version"] for p in meta["packages"] if p["id"] in workspace}
if len(ours) != 1 or None in ours:
    sys.exit(f"check-msrv: every workspace crate should take rust-version from the workspace, found {ours}")
declared = ours.pop()
newer = sorted(
    (version(p["rust_version"]), p["name"], p["version"], p["rust_version"])
    for p in meta["packages"]
    if p["id"] in used and p["id"] not in workspace and p.get("rust_version")
    and version(p["rust_version"]) > version(declared)
)
if newer:
    listed = ", ".join(f"{name} {v} needs {rv}" for _, name, v, rv in newer[-5:])
    sys.exit(f"check-msrv: rust-version = \"{declared}\" is not true: {listed}")
print(f"check-msrv: rust-version {declared} covers every dependency")
'

#!/usr/bin/env bash
# The main job on a built-in default: install, start 3 lab hosts, deploy examples/lab to them
# (evaluate, build, copy, switch with magic rollback), then show what every host runs.
# Run as root from a git clone. The lab keeps running afterwards: `nixherd lab down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
# Lab systems are built here from nothing: no binary cache has them, and asking an unreachable one
# (offline machines) costs seconds of retries per build.
export NIX_CONFIG="${NIX_CONFIG:-substituters =}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "lab up: 3 local hosts (sshd + their own Nix store), state in ./lab-state"
nixherd lab up -n 3 --dir lab-state

cd examples/lab
step "the fleet, read from inventory.toml without evaluating Nix"
nixherd nodes

step "apply: one evaluation, one build, then copy + switch per node in parallel"
nixherd apply switch --report ../../lab-state/report.json

step "status: what each host runs now, against the flake"
nixherd status

step "each host's service answers"
python3 - <<'PY'
import urllib.request
for node, url in [
    ("lab-1", "http://127.0.0.1:18201/"),
    ("lab-2", "http://127.0.0.1:18202/"),
    ("lab-3", "http://127.0.0.1:18203/db/db.conf"),
]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        body = " ".join(reply.read().decode().split())
    print(f"{node}: {url} -> {body[:110]}")
PY

step "a no-op redeploy: every node up to date, nothing copied"
nixherd apply switch

printf '\nThe JSON report is lab-state/report.json (its shape: docs/json.md). Stop the lab with: nixherd lab down --dir lab-state\n'

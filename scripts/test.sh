#!/usr/bin/env bash
# Install everything, then run the whole suite: lint, types, unit, nix and lab tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
ruff check src tests bench scripts
ruff format --check src tests bench scripts
mypy
# No import circle, no module over 500 lines (src/nixherd).
python3 scripts/check-architecture.py
# The suite's in-process `nodes`/`show` runs keep their parse cache out of the user's ~/.cache,
# and every run its logs out of ~/.local/state.
cache_dir=$(mktemp -d)
state_dir=$(mktemp -d)
trap 'rm -rf "$cache_dir" "$state_dir"' EXIT
export NIXHERD_CACHE_DIR="$cache_dir"
export NIXHERD_STATE_DIR="$state_dir"
# pytest exits 5 when it collected nothing: that is a failure here, never a silent pass
# (set -e stops on any non-zero exit).
pytest "$@"

#!/usr/bin/env bash
# Benchmark `nixherd nodes --on @TAG --json` on a 10,000-node inventory against the same listing
# computed by Nix alone; see bench/README.md. Options go to nodes_vs_nix.py (--nodes, --runs, ...).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python bench/inventory/nodes_vs_nix.py "$@"

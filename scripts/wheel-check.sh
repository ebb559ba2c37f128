#!/usr/bin/env bash
# nixherd as a user installs it, on a machine that has nothing of it but a clone to build from:
#
# 1. the system packages (scripts/install.sh --system-only: nix, sshd, ...; no venv);
# 2. `python -m build` in a venv of its own: the sdist, then the wheel built from the sdist;
# 3. the wheel installed into a NEW venv (not editable), and nothing else of the clone;
# 4. with that installed nixherd, from a copy of examples/lab outside the clone whose flake takes
#    the installed Nix library as its input (docs/nix-library.md): `lab up` (3 hosts), `apply`,
#    `status --exit-code`, each service answers, a no-op redeploy, `lab down`.
#
# Step 4 runs in a mount namespace of its own with an empty, read-only tmpfs over the clone, so
# whatever nixherd still read from the source tree would fail there instead of going unnoticed.
#
# Run as root on Debian 12 from a clone: `bash scripts/wheel-check.sh`. CI runs it on a pristine
# root (.ci/run, ../shared/tools/fresh-machine). Uses the lab's default ports (2201-2203, and
# 18201-18203 for the services); the work directory (venvs, wheel, lab state) is left in /tmp.
set -euo pipefail

step() { printf '\n\033[1m== wheel-check: %s\033[0m\n' "$*"; }

if [ "${1:-}" = --deploy ]; then
  # Step 4, inside the private mount namespace: $2 the clone (hidden now), $3 the work directory.
  repo=$2 work=$3
  mount -t tmpfs -o ro,mode=0555 nixherd-source-hidden "$repo"
  [ -z "$(ls -A "$repo")" ] || { echo "wheel-check: the clone is still visible" >&2; exit 1; }
  cd "$work"
  export PATH="$work/venv/bin:$PATH"
  # Lab systems are built here from nothing: no binary cache has them.
  export NIX_CONFIG="${NIX_CONFIG:-substituters =}"

  step "the installed nixherd"
  command -v nixherd
  nixherd --version
  library=$(nixherd --version | sed -n 's/^nixherd [^ ]* (Nix library: \(.*\))$/\1/p')
  case $library in
    "$work"/venv/lib/python3*/site-packages/nixherd/nix) ;;
    *) echo "wheel-check: the Nix library is not the installed one: '$library'" >&2; exit 1 ;;
  esac
  test -f "$library/lib.nix" && test -f "$library/flake.nix"

  step "examples/lab, its flake taking the installed library as input"
  fleet=$work/fleet/examples/lab
  cat >"$fleet/flake.nix" <<EOF
{
  description = "examples/lab with the Nix library of an installed nixherd";
  inputs.nixherd.url = "path:$library";
  outputs = { self, nixherd }:
    nixherd.lib.mkFleet {
      inventory = ./inventory.toml;
      root = ./.;
      inherit (nixherd.lib.lab) mkSystem;
    };
}
EOF
  cat "$fleet/flake.nix"

  step "lab up: 3 hosts"
  lab=$work/fleet/lab-state
  trap 'nixherd lab down --dir "$lab" || true' EXIT
  nixherd lab up -n 3 --dir "$lab"

  cd "$fleet"
  step "apply switch"
  nixherd apply switch --report "$work/report.json"
  step "status"
  nixherd status --exit-code
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
  step "a no-op redeploy"
  nixherd apply switch

  step "lab down"
  trap - EXIT
  nixherd lab down --dir "$lab"
  exit 0
fi

[ $# -eq 0 ] || { echo "usage: wheel-check.sh" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "wheel-check: run as root (the lab needs it)" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
# Under /tmp: a lab host keeps the machine's /tmp, where its own /var, /run, /nix and /etc would
# hide a lab directory below them.
work=$(mktemp -d /tmp/nixherd-wheel.XXXXXX)
echo "wheel-check: work directory $work"

step "system packages (scripts/install.sh --system-only)"
bash "$repo/scripts/install.sh" --system-only

step "python -m build: the sdist, then the wheel from it"
python3 -m venv "$work/build"
"$work/build/bin/python" -m pip install -q --disable-pip-version-check build
(cd "$repo" && "$work/build/bin/python" -m build --outdir "$work/dist" .) >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; exit 1; }
ls -l "$work/dist"
wheels=("$work/dist"/nixherd-*-py3-none-any.whl)
[ ${#wheels[@]} -eq 1 ] && [ -f "${wheels[0]}" ] || { echo "wheel-check: no single wheel built" >&2; exit 1; }

step "pip install the wheel into a new venv"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check "${wheels[0]}"
"$work/venv/bin/python" -m pip show --files nixherd | grep -E '^(Name|Version|Location|Editable)|nixherd/nix/'

mkdir -p "$work/fleet/examples"
cp -r "$repo/examples/lab" "$work/fleet/examples/lab"

# The clone is hidden only in this namespace (private propagation: nothing reaches the machine's).
cd /
exec unshare --mount --propagation private bash "$repo/scripts/wheel-check.sh" --deploy "$repo" "$work"

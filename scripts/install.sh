#!/usr/bin/env bash
# Install what nixherd and its lab need on Debian 12 (bookworm), run as root, and a venv in .venv.
#
# What it installs (apt, without recommends, only what is missing):
#   nix-bin             Nix 2.8 (the deployer's nix; each lab host runs its own nix-daemon)
#   nix-setup-systemd   Debian's Nix setup: the `nixbld` group and build users and
#                       /etc/nix/nix.conf. nix-bin alone has neither, and every build then fails
#                       with "the group 'nixbld' specified in 'build-users-group' does not exist".
#                       It pulls in systemd, which lab hosts will boot as their pid 1.
#   openssh-server, openssh-client, sudo, util-linux, procps, iproute2, git
#   zsh, fish           the tests run `nixherd completion zsh|fish`'s scripts in these shells
#   groff-base          the tests render the man page (docs/nixherd.1) and want no warning
#   nginx-light         the lab's binary cache over HTTP (nixherd.lab.cacheserver starts its own
#                       nginx by pid, on 127.0.0.1; on a machine running systemd, Debian's package
#                       also enables its own nginx.service on port 80)
#   chromium            headless, for the test suite only: it renders `nixherd report --html`'s
#                       page (tests/unit/browserkit.py); nixherd itself never starts a browser
#   python3, python3-venv (when the machine has no Python 3.11+ with venv)
# and then nixherd with its dev and bench extras into .venv (pip, from PyPI).
#
# A second run changes nothing: apt is skipped when every package is there, pip when the venv
# already holds this pyproject.toml's install (a stamp in .venv records its hash).
#
#   --system-only   the apt part only, no .venv: what a machine needs to run a nixherd installed
#                   from its package (scripts/wheel-check.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
system_only=0
case "${1:-}" in
  "") ;;
  --system-only) system_only=1 ;;
  *) echo "usage: install.sh [--system-only]" >&2; exit 2 ;;
esac

APT_PACKAGES=(nix-bin nix-setup-systemd openssh-server openssh-client sudo util-linux procps
  iproute2 git zsh fish groff-base chromium nginx-light)

PY=${PYTHON:-python3}
python_ok() {
  "$PY" -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' 2>/dev/null
}
if ! python_ok; then
  APT_PACKAGES+=(python3 python3-venv)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "install.sh: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install.sh: apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! python_ok; then
  echo "install.sh: nixherd needs Python 3.11 or newer with venv as $PY" >&2
  exit 1
fi
if ! getent group nixbld >/dev/null; then
  echo "install.sh: nix-setup-systemd is installed but the nixbld group is missing" >&2
  exit 1
fi
if ((system_only)); then
  exit 0
fi

stamp=.venv/.nixherd-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
  && .venv/bin/python -c 'import nixherd' 2>/dev/null; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  rm -rf .venv
  "$PY" -m venv .venv
fi
echo "install.sh: pip install -e .[dev,bench] into .venv" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,bench]"
echo "$want" >"$stamp"

"""The number parsers of every command-line option (argparse `type=`), one set with their bounds.

A number that passes here is one the core can compute with: finite, in range, no `nan` slipping
through comparisons (every comparison with nan is false) and no `1e300` overflowing a deadline.
A bad one is refused while parsing: argparse names the option, prints the message, exits 2.

Numbers are plain decimal text: `int()`/`float()` alone would also take `nan`, `inf`, `1_000`
and non-ASCII digits.
"""

from __future__ import annotations

import argparse
import math
import re

MAX_SECONDS = 7 * 24 * 3600  # a week: any longer wait is a mistake, and deadlines stay finite
SECONDS_RULE = f"0 < S <= {MAX_SECONDS}"
# Nodes worked on at once: each holds an ssh ControlMaster and a few pipes (file descriptors);
# 0 (all) is the way to ask for more.
MAX_PARALLEL = 1000
MAX_NODES = 1_000_000  # more than an inventory can hold (64 MiB)
MAX_PORT = 65535
# Nix's max-jobs: builds at once on this machine (0: only on --builders). More than any machine
# runs; Nix itself takes any unsigned int.
MAX_JOBS = 65535

_INTEGER = re.compile(r"[+-]?[0-9]+").fullmatch
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?").fullmatch


def _integer(text: str, low: int, high: int, rule: str) -> int:
    text = text.strip()
    if _INTEGER(text) is not None:
        value = int(text)
        if low <= value <= high:
            return value
    raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")


def seconds(text: str) -> float:
    """A duration in seconds: 0 < S <= MAX_SECONDS (`1.5`, `90`, `1e3`)."""
    stripped = text.strip()
    if _DECIMAL(stripped) is not None:
        value = float(stripped)
        if math.isfinite(value) and 0 < value <= MAX_SECONDS:
            return value
    raise argparse.ArgumentTypeError(
        f"must be a number of seconds, {SECONDS_RULE}, got {stripped!r}"
    )


def parallel(text: str) -> int:
    """How many nodes at once: 0 (all) .. MAX_PARALLEL."""
    return _integer(text, 0, MAX_PARALLEL, f"an integer 0..{MAX_PARALLEL} (0: all)")


def count(text: str) -> int:
    """A number of nodes (`--canary`): 0..MAX_NODES."""
    return _integer(text, 0, MAX_NODES, f"an integer 0..{MAX_NODES}")


def hosts(text: str) -> int:
    """A number of lab hosts (`lab up -n`): 1..MAX_PORT (each listens on a port of its own)."""
    return _integer(text, 1, MAX_PORT, f"an integer 1..{MAX_PORT}")


def port(text: str) -> int:
    """A TCP port: 1..MAX_PORT."""
    return _integer(text, 1, MAX_PORT, f"a TCP port 1..{MAX_PORT}")


def port_or_false(text: str) -> int | bool:
    """An inventory's port: 1..MAX_PORT, or `false` (ssh decides, docs/inventory.md)."""
    if text.strip() == "false":
        return False
    return _integer(text, 1, MAX_PORT, f"a TCP port 1..{MAX_PORT} or false")


def max_jobs(text: str) -> str:
    """Nix's `--max-jobs`: `auto` (a job per core) or 0..MAX_JOBS, as Nix's own text."""
    stripped = text.strip()
    if stripped == "auto":
        return stripped
    return str(_integer(stripped, 0, MAX_JOBS, f"'auto' or an integer 0..{MAX_JOBS}"))

"""One small typed function per nix operation, asking nix for machine-readable output.

Speaks the subset of the CLI that Debian's Nix 2.8, current Nix (2.18+) and Lix all accept, and
parses both JSON shapes where they differ.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from nixherd import process

EXPERIMENTAL = ("--extra-experimental-features", "nix-command flakes")


def nix_argv(*args: str) -> list[str]:
    """The argv of a `nix` subcommand with the experimental features it needs switched on."""
    return ["nix", *EXPERIMENTAL, *args]


def eval_json(
    installable: str,
    *,
    apply: str | None = None,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> Any:
    """`nix eval --json INSTALLABLE [--apply F]`, decoded."""
    argv = nix_argv("eval", "--json", installable, *extra)
    if apply is not None:
        argv += ["--apply", apply]
    result = process.run(argv, env=env, timeout=timeout, what="nix eval")
    return json.loads(result.stdout)


def eval_expr_json(
    expr: str,
    *,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> Any:
    """`nix eval --json --impure --expr EXPR`, decoded (for expressions built by nixherd)."""
    argv = nix_argv("eval", "--json", "--impure", "--expr", expr, *extra)
    result = process.run(argv, env=env, timeout=timeout, what="nix eval")
    return json.loads(result.stdout)


def nix_string(value: str) -> str:
    """A Nix string literal holding `value` exactly (for expressions nixherd builds)."""
    return json.dumps(value).replace("${", "\\${")

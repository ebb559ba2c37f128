"""One small typed function per nix operation, asking nix for machine-readable output.

Speaks the subset of the CLI that Debian's Nix 2.8, current Nix (2.18+) and Lix all accept, and
parses both JSON shapes where they differ.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from nixherd.run import process

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


# --- building, realising and copying (the deploy pipeline's nix operations) ---
#
# Builds go through `nix-store --realise` rather than `nix build`: Nix 2.8 builds a bare `.drv`
# installable while 2.15+ needs `drv^*` (which 2.8 rejects); `nix-store --realise DRV` means the
# same everywhere, Lix included.


def realise_argv(paths: Sequence[str], *, keep_going: bool = True) -> list[str]:
    """`nix-store --realise` of derivations (or store paths), local or on a node."""
    return ["nix-store", "--realise", *(["--keep-going"] if keep_going else []), *paths]


def realise(
    drvs: Sequence[str],
    *,
    keep_going: bool = True,
    env: Mapping[str, str] | None = None,
    on_line: process.LineCallback | None = None,
    timeout: float | None = None,
) -> list[str]:
    """Build every derivation in ONE nix process; returns the output paths it printed.

    With `keep_going`, one failing derivation does not stop the others; the CommandError it
    raises still leaves every buildable output built (ask `invalid_paths` which are missing).
    """
    result = process.run(
        realise_argv(drvs, keep_going=keep_going),
        env=env,
        on_line=on_line,
        timeout=timeout,
        what="nix-store --realise",
    )
    return [line for line in result.stdout.splitlines() if line.startswith("/")]


def invalid_paths(paths: Sequence[str], *, env: Mapping[str, str] | None = None) -> set[str]:
    """Which of `paths` are not valid in the local store (one process for all)."""
    if not paths:
        return set()
    result = process.run(
        ["nix-store", "--check-validity", "--print-invalid", *paths],
        env=env,
        what="nix-store --check-validity",
    )
    return {line.strip() for line in result.stdout.splitlines() if line.strip()}


def add_root_argv(root: str, path: str) -> list[str]:
    return ["nix-store", "--realise", "--add-root", root, "--indirect", path]


def add_root(root: str, path: str, *, env: Mapping[str, str] | None = None) -> None:
    """Keep `path` alive: an (indirect) GC root at `root`, replacing an older one."""
    process.run(add_root_argv(root, path), env=env, what="nix-store --add-root")


def copy_argv(
    paths: Sequence[str],
    *,
    to: str,
    derivation: bool = False,
    substitute_on_destination: bool = False,
) -> list[str]:
    """`nix copy --to URI PATHS`: the closure of PATHS (of the .drv files with `derivation`)."""
    argv = nix_argv("copy", "--to", to)
    if derivation:
        argv.append("--derivation")
    if substitute_on_destination:
        argv.append("--substitute-on-destination")
    return [*argv, *paths]


def copy(
    paths: Sequence[str],
    *,
    to: str,
    env: Mapping[str, str] | None = None,
    derivation: bool = False,
    substitute_on_destination: bool = False,
    on_line: process.LineCallback | None = None,
    timeout: float | None = None,
    node: str | None = None,
) -> None:
    """Copy closures to another store (a node's, through `ssh://` and NIX_SSHOPTS in `env`)."""
    process.run(
        copy_argv(
            paths,
            to=to,
            derivation=derivation,
            substitute_on_destination=substitute_on_destination,
        ),
        env=env,
        on_line=on_line,
        timeout=timeout,
        what="nix copy",
        node=node,
    )


# --- closures (diff) ---


def path_info_argv(paths: Sequence[str], *, store: str | None = None) -> list[str]:
    """`nix path-info -r --json PATHS`: every path of the closures, with its NAR size."""
    argv = nix_argv("path-info", "--recursive", "--json")
    if store is not None:
        argv += ["--store", store]
    return [*argv, *paths]


def parse_path_info(text: str) -> dict[str, int]:
    """Store path -> NAR size from `nix path-info --json`, in either shape.

    Up to 2.18 it is a list of objects carrying `path`; from 2.19 on an object keyed by path
    (a path that is not valid maps to null there).
    """
    data = json.loads(text)
    sizes: dict[str, int] = {}
    if isinstance(data, list):
        for entry in data:
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                sizes[entry["path"]] = int(entry.get("narSize") or 0)
    elif isinstance(data, dict):
        for path, entry in data.items():
            if isinstance(entry, dict):
                sizes[path] = int(entry.get("narSize") or 0)
    else:
        raise ValueError("nix path-info --json: neither a list nor an object")
    return sizes


def closure_sizes(
    paths: Sequence[str],
    *,
    store: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    node: str | None = None,
) -> dict[str, int]:
    """The closure of `paths` (in the local store, or `store` such as `ssh://...`), with sizes."""
    result = process.run(
        path_info_argv(paths, store=store),
        env=env,
        timeout=timeout,
        what="nix path-info",
        node=node,
    )
    return parse_path_info(result.stdout)

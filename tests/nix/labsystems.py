"""Lab systems (nix/lab.nix) built or evaluated from module expressions, for the Nix tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nixherd.run import nix, process

LAB = Path(__file__).resolve().parents[2] / "nix" / "lab.nix"


def system_expr(modules: str, special: str = "{ }") -> str:
    return (
        f"let lab = import {LAB}; inherit (lab) lib; in "
        f"lab.mkSystem {{ specialArgs = {special}; modules = [ {modules} ]; }}"
    )


def config(modules: str, special: str = "{ }") -> Any:
    """The merged config, without the toplevel (a derivation)."""
    expr = f'removeAttrs ({system_expr(modules, special)}).config [ "system" ]'
    return nix.eval_expr_json(expr)


def build(modules: str, special: str = "{ }") -> Path:
    expr = f"({system_expr(modules, special)}).config.system.build.toplevel"
    result = process.run(
        nix.nix_argv(
            "build",
            "--impure",
            "--no-link",
            "--json",
            "--option",
            "substituters",
            "",
            "--expr",
            expr,
        ),
        what="nix build",
    )
    return Path(json.loads(result.stdout)[0]["outputs"]["out"])

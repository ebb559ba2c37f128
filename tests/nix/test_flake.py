"""The project's own flake: no inputs (it evaluates offline), `lib.mkFleet` usable from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nixfleet import REPO, STUB_SYSTEM

from nixherd.run import nix, process

pytestmark = pytest.mark.nix


def test_flake_has_no_inputs() -> None:
    lock = json.loads((REPO / "flake.lock").read_text())
    assert lock["nodes"] == {"root": {}}
    metadata = json.loads(
        process.run(nix.nix_argv("flake", "metadata", "--json", str(REPO))).stdout
    )
    assert metadata["locks"]["nodes"] == {"root": {}}


def test_lib_from_the_flake(tmp_path: Path) -> None:
    assert nix.eval_json(f"{REPO}#lib", apply="builtins.attrNames") == [
        "deepMerge",
        "lab",
        "mkFleet",
        "resolve",
    ]
    (tmp_path / "inventory.toml").write_text(
        '[roles.web]\n[[roles.web.targets]]\nhost = "192.0.2.1"\n'
    )
    expr = f"""
      let
        nixherd = builtins.getFlake {nix.nix_string(str(REPO))};
        fleet = nixherd.lib.mkFleet {{
          inventory = {nix.nix_string(str(tmp_path / "inventory.toml"))};
          root = {nix.nix_string(str(tmp_path))};
          mkSystem = import {nix.nix_string(str(STUB_SYSTEM))};
        }};
      in builtins.attrNames fleet.colmena ++ builtins.attrNames fleet.nixosConfigurations
    """
    assert nix.eval_expr_json(expr) == ["meta", "web-192-0-2-1", "web-192-0-2-1"]
    # Without flakes: the same attrset from nix/default.nix.
    plain = f"builtins.attrNames (import {nix.nix_string(str(REPO / 'nix'))})"
    assert nix.eval_expr_json(plain) == ["deepMerge", "lab", "mkFleet", "resolve"]

"""Test helpers: temporary fleets as `path:` flakes, evaluated by the real nix through a stand-in
mkSystem (tests/nix/stub_system.nix), since nixpkgs cannot be fetched here."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nixherd.run import nix

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "nix" / "lib.nix"
LAB = REPO / "nix" / "lab.nix"
STUB_SYSTEM = Path(__file__).with_name("stub_system.nix")

# `args` is spliced into the mkFleet call: the stand-in mkSystem, stub colmena/deploy-rs inputs...
FLAKE = """{
  outputs = { self }:
    (import ./nixherd/lib.nix).mkFleet {
      inventory = ./inventory.toml;
      root = ./.;
      %(args)s
    };
}
"""


@dataclass(frozen=True)
class Fleet:
    """A fleet flake on disk: inventory.toml, its modules, and a copy of the library."""

    root: Path

    @property
    def ref(self) -> str:
        return f"path:{self.root}"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.toml"

    def eval(self, attr: str, apply: str | None = None) -> Any:
        return nix.eval_json(f"{self.ref}#{attr}", apply=apply)

    def outputs(self) -> list[str]:
        """The names of the flake's outputs."""
        flake = f"builtins.getFlake {nix.nix_string(self.ref)}"
        names: list[str] = nix.eval_expr_json(f"builtins.attrNames ({flake}).outputs")
        return names


STUB_MK_SYSTEM = "mkSystem = import ./nixherd/stub_system.nix;"
LAB_MK_SYSTEM = "(import ./nixherd/lab.nix).mkSystem"


def write_fleet(
    root: Path, inventory: str, files: Mapping[str, str] | None = None, args: str = ""
) -> Fleet:
    """Write a fleet flake in `root` (files: path -> text; args: mkFleet arguments, default the
    stand-in mkSystem)."""
    (root / "nixherd").mkdir(parents=True, exist_ok=True)
    shutil.copy(LIB, root / "nixherd" / "lib.nix")
    shutil.copy(STUB_SYSTEM, root / "nixherd" / "stub_system.nix")
    shutil.copy(LAB, root / "nixherd" / "lab.nix")
    shutil.copy(LAB.parent / "modules.nix", root / "nixherd" / "modules.nix")
    # lab.nix imports its units, activation and switch programs from nix/lab/.
    shutil.copytree(LAB.parent / "lab", root / "nixherd" / "lab", dirs_exist_ok=True)
    (root / "flake.nix").write_text(FLAKE % {"args": args or STUB_MK_SYSTEM})
    (root / "inventory.toml").write_text(inventory)
    for name, text in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return Fleet(root)

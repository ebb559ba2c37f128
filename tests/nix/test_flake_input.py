"""The Nix library of an installed nixherd as a fleet's flake input (docs/nix-library.md):

    inputs.nixherd.url = "path:<the directory `nixherd --version` names>";

gives the same `lib` as the repository's flake, and mkFleet works from it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from nixfleet import REPO
from wheelkit import build_dists, install_wheel

from nixherd.run import nix

pytestmark = pytest.mark.nix


@pytest.fixture(scope="module")
def installed_library(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The library directory of nixherd installed from its wheel, as `--version` reports it."""
    work = tmp_path_factory.mktemp("wheel")
    site = install_wheel(build_dists(work).wheel, work / "site-packages")
    code = "import sys; sys.path.insert(0, sys.argv[1]); from nixherd.package import nix_library; "
    code += "print(nix_library())"
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(site)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert out.startswith(str(site)), out
    return out


def test_the_installed_library_is_a_flake_input(installed_library: str, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "inventory.toml").write_text(
        '[roles.web]\n[[roles.web.targets]]\nhost = "192.0.2.1"\n\n[nodes.db]\nhost = "192.0.2.2"\n'
    )
    (fleet / "flake.nix").write_text(
        "{\n"
        f"  inputs.nixherd.url = {nix.nix_string('path:' + installed_library)};\n"
        "  outputs = { self, nixherd }: nixherd.lib.mkFleet {\n"
        "    inventory = ./inventory.toml; root = ./.; inherit (nixherd.lib.lab) mkSystem;\n"
        "  } // { inherit (nixherd) lib; };\n"
        "}\n"
    )
    ref = f"path:{fleet}"
    names = nix.eval_json(f"{ref}#nixosConfigurations", apply="builtins.attrNames")
    assert names == ["db", "web-192-0-2-1"]
    # The lab's mkSystem from the installed library builds a real system's derivation.
    drv = nix.eval_json(f"{ref}#nixosConfigurations.db.config.system.build.toplevel.drvPath")
    assert str(drv).startswith("/nix/store/") and str(drv).endswith(".drv")
    # The same library as the repository's own flake.
    attrs = "builtins.attrNames"
    assert nix.eval_json(f"{ref}#lib", apply=attrs) == nix.eval_json(f"{REPO}#lib", apply=attrs)
    # The input is locked like any other: an upgraded nixherd is picked up by updating the lock.
    lock = (fleet / "flake.lock").read_text()
    assert f'"path": "{installed_library}"' in lock

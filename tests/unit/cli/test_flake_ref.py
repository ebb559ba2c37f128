"""The flake a command evaluates: --flake, then $NIXHERD_FLAKE, then the inventory's directory."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from nixherd.cli import runs
from nixherd.fleet.evaluate import FlakeError


def _args(tmp_path: Path, **kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    runs.add_flake(parser)
    args = parser.parse_args([])
    args.inventory = str(tmp_path / "fleet" / "inventory.toml")
    for key, value in kw.items():
        setattr(args, key, value)
    return args


def test_default_is_the_directory_of_the_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NIXHERD_FLAKE", raising=False)
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "flake.nix").write_text("{ outputs = _: { }; }\n")
    monkeypatch.chdir(tmp_path)  # the current directory is NOT the fleet
    assert runs.flake_ref(_args(tmp_path, flake=None)) == str(tmp_path / "fleet")


def test_explicit_flake_wins(tmp_path: Path) -> None:
    assert runs.flake_ref(_args(tmp_path, flake="git+file:///srv/fleet")) == (
        "git+file:///srv/fleet"
    )


def test_env_is_the_default_of_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIXHERD_FLAKE", "/srv/other")
    parser = argparse.ArgumentParser()
    runs.add_flake(parser)
    assert parser.parse_args([]).flake == "/srv/other"


def test_no_flake_beside_the_inventory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "fleet").mkdir()
    with pytest.raises(FlakeError, match=r"no flake\.nix next to the inventory"):
        runs.flake_ref(_args(tmp_path, flake=None))

"""fleet.eval_nodes against the real nix: one process for a healthy fleet, per-node errors else."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from nixfleet import Fleet, write_fleet

from nixherd.errors import CommandError
from nixherd.fleet import evaluate as fleet_mod
from nixherd.run import nix, process

# Nix's hint stays in the message: nixherd passes --show-trace on (tests/nix/test_nix_flags.py).
HINT = "\n(use '--show-trace' to show detailed location information)"

pytestmark = pytest.mark.nix

INVENTORY = """
[roles.app]
modules = ["app.nix"]

[[roles.app.targets]]
host = "10.0.1.1"

[[roles.app.targets]]
host = "10.0.1.2"

[nodes."db.1"]
host = "10.0.2.1"
modules = ["db.nix"]
"""

MODULES = {
    "app.nix": "{ node, ... }: { services.app.host = node.host; }",
    "db.nix": "{ ... }: { services.db.enable = true; }",
}


def count_evals(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the installable of every `nix eval` made (nix still runs for real)."""
    calls: list[str] = []
    real = nix.eval_json

    def counting(installable: str, **kwargs: Any) -> Any:
        calls.append(installable)
        return real(installable, **kwargs)

    monkeypatch.setattr(nix, "eval_json", counting)
    return calls


def make(tmp_path: Path, files: dict[str, str] | None = None, inventory: str = INVENTORY) -> Fleet:
    return write_fleet(tmp_path / "fleet", inventory, {**MODULES, **(files or {})})


def test_healthy_fleet_in_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = make(tmp_path)
    calls = count_evals(monkeypatch)
    names = ["db.1", "app-10-0-1-2", "app-10-0-1-1"]
    results = fleet_mod.eval_nodes(fleet.ref, names)
    assert len(calls) == 1
    assert list(results) == names
    for name, result in results.items():
        assert result.ok, result
        assert result.error is None
        assert result.drv_path is not None and result.drv_path.endswith(f"-nixos-system-{name}.drv")
        assert result.out_path is not None and result.out_path.startswith("/nix/store/")
        assert result.out_path.endswith(f"-nixos-system-{name}")
        assert Path(result.drv_path).exists()  # instantiated: ready for one `nix build`
    # The same paths as evaluating the node alone: nothing is mixed up between nodes.
    alone = fleet.eval("nixosConfigurations.app-10-0-1-2.config.system.build.toplevel.outPath")
    assert results["app-10-0-1-2"].out_path == alone
    assert results["app-10-0-1-1"].out_path != alone


def test_caught_error_is_explained_per_node(tmp_path: Path) -> None:
    broken = {"db.nix": '{ node, ... }: { services.db.enable = throw "db is broken"; }'}
    fleet = make(tmp_path, broken)
    results = fleet_mod.eval_nodes(fleet.ref, ["app-10-0-1-1", "db.1"])
    assert results["app-10-0-1-1"].ok
    db = results["db.1"]
    assert not db.ok
    assert db.drv_path is None
    assert db.error == "db is broken" + HINT


def test_missing_module_is_reported_for_its_node(tmp_path: Path) -> None:
    inventory = INVENTORY + 'modules = ["db.nix", "missing/extra.nix"]\n'
    inventory = inventory.replace('modules = ["db.nix"]\n', "", 1)
    fleet = make(tmp_path, inventory=inventory)
    results = fleet_mod.eval_nodes(fleet.ref, ["db.1", "app-10-0-1-1"])
    assert results["app-10-0-1-1"].ok
    error = results["db.1"].error
    assert error is not None
    assert "node 'db.1': module 'missing/extra.nix' not found" in error


def test_uncatchable_error_is_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A missing attribute aborts the whole nix process: tryEval cannot catch it.
    broken = {"db.nix": "{ config, ... }: { services.db.port = config.services.nope.port; }"}
    fleet = make(tmp_path, broken)
    calls = count_evals(monkeypatch)
    results = fleet_mod.eval_nodes(fleet.ref, ["app-10-0-1-1", "app-10-0-1-2", "db.1"])
    assert results["app-10-0-1-1"].ok
    assert results["app-10-0-1-2"].ok
    error = results["db.1"].error
    assert error is not None
    assert "attribute 'nope' missing" in error
    assert not error.startswith("error:")
    assert error.endswith(HINT)
    # whole batch, the flake probe, then halves: [app-1] and [app-2, db.1], then [app-2], [db.1].
    assert len(calls) <= 6


def test_unknown_node(tmp_path: Path) -> None:
    fleet = make(tmp_path)
    odd = 'x"${throw "injected"}\\'
    results = fleet_mod.eval_nodes(fleet.ref, ["app-10-0-1-1", "ghost", odd])
    assert results["app-10-0-1-1"].ok
    assert results["ghost"].error == "no nixosConfigurations.ghost in the flake"
    # A name is only ever a string to Nix, never code.
    assert results[odd].error == f"no nixosConfigurations.{odd} in the flake"


def test_broken_flake_raises(tmp_path: Path) -> None:
    fleet = make(tmp_path)
    (fleet.root / "flake.nix").write_text("{ outputs = { self }: { nixosConfigurations = ; }; }")
    with pytest.raises(fleet_mod.FlakeError) as info:
        fleet_mod.eval_nodes(fleet.ref, ["app-10-0-1-1", "db.1"])
    assert "cannot evaluate" in str(info.value)
    assert "syntax error" in str(info.value)


def test_timeout_is_not_mistaken_for_a_node_error(tmp_path: Path) -> None:
    # Minutes of work in small steps (no stack overflow, little memory); killed after 2 s.
    slow = (
        "{ ... }: { x = builtins.foldl' (a: i: a + builtins.length (builtins.genList (x: x + i)"
        " 1000)) 0 (builtins.genList (x: x) 1000000); }"
    )
    fleet = make(tmp_path, {"db.nix": slow})
    with pytest.raises(CommandError) as info:
        fleet_mod.eval_nodes(fleet.ref, ["db.1", "app-10-0-1-1"], timeout=2)
    assert info.value.returncode is None


def test_diagnoses_are_rationed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = {"app.nix": '{ node, ... }: { x = throw "app ${node.host} is broken"; }'}
    fleet = make(tmp_path, broken)
    calls = count_evals(monkeypatch)
    names = ["app-10-0-1-1", "app-10-0-1-2", "db.1"]
    results = fleet_mod.eval_nodes(fleet.ref, names, max_diagnoses=1)
    assert len(calls) == 2  # the batch, then one explanation
    assert results["db.1"].ok
    assert results["app-10-0-1-1"].error == "app 10.0.1.1 is broken" + HINT
    error = results["app-10-0-1-2"].error
    assert error is not None
    prefix = "evaluation failed; to see why: "
    assert error.startswith(prefix)
    # The command given is one that works, and shows the message.
    shown = process.run(shlex.split(error.removeprefix(prefix)), check=False)
    assert shown.returncode == 1
    assert "app 10.0.1.2 is broken" in shown.stderr


def test_unisolated_batch_fails_as_a_whole(tmp_path: Path) -> None:
    broken = {"db.nix": "{ config, ... }: { services.db.port = config.services.nope.port; }"}
    fleet = make(tmp_path, broken)
    results = fleet_mod.eval_nodes(fleet.ref, ["app-10-0-1-1", "db.1"], max_diagnoses=0)
    for result in results.values():
        assert result.error is not None
        assert result.error.startswith("evaluated with 1 other node, one failed (not narrowed")
        assert "attribute 'nope' missing" in result.error

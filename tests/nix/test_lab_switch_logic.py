"""The decisions of the lab's switch-to-configuration (nix/lab/switch.py), without a host: unit
files parsed as systemd reads them, compared and acted on as nixpkgs' switch-to-configuration-ng
does (pkgs/by-name/sw/switch-to-configuration-ng/src/src/main.rs: parse_systemd_ini,
compare_units, handle_modified_unit). On a host, tests/lab/test_lab_system.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SWITCH = Path(__file__).resolve().parents[2] / "nix" / "lab" / "switch.py"


@pytest.fixture(scope="module")
def stc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lab_switch", SWITCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # No __pycache__ beside it: nix/ is the Nix library users install (package data).
    writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes
    return module


def info(stc: ModuleType, *texts: str) -> Any:
    parsed: dict[str, dict[str, list[str]]] = {}
    for text in texts:
        stc.parse_ini(parsed, text)
    return parsed


def test_unit_files_parse_as_systemd_reads_them(stc: ModuleType) -> None:
    base = (
        "[Unit]\nAfter=a.service\nAfter=b.service\n# a comment\n"
        "[Service]\nExecStart=/bin/x\nExecStop=/bin/x \\\n  --flag=1\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    dropin = "[Service]\nExecStart=\nExecStart=/bin/y\nEnvironment=A=1\n"
    assert info(stc, base, dropin) == {
        "Unit": {"After": ["a.service", "b.service"]},
        "Service": {
            "ExecStart": ["/bin/y"],
            "ExecStop": ["/bin/x --flag=1"],
            "Environment": ["A=1"],
        },
    }


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        ("[Service]\nExecStart=/a\n", "[Service]\nExecStart=/a\n", "equal"),
        # Only keys that never matter to a running unit: still equal.
        ("[Unit]\nDescription=a\n[Service]\nExecStart=/a\n", "[Service]\nExecStart=/a\n", "equal"),
        ("[Unit]\nDescription=a\n", "[Unit]\nDescription=b\n", "equal"),
        ("[Unit]\nX-Reload-Triggers=/1\n", "[Unit]\nX-Reload-Triggers=/2\n", "reload"),
        (
            "[Service]\nExecStart=/a\n",
            "[Unit]\nX-Reload-Triggers=/2\n[Service]\nExecStart=/a\n",
            "reload",
        ),
        ("[Unit]\nX-Restart-Triggers=/1\n", "[Unit]\nX-Restart-Triggers=/2\n", "restart"),
        ("[Service]\nExecStart=/a\n", "[Service]\nExecStart=/b\n", "restart"),
        ("[Service]\nExecStart=/a\n", "[Service]\nExecStart=/a\nUser=x\n", "restart"),
        (
            "[Service]\nExecStart=/a\n",
            "[Unit]\nAfter=x.service\n[Service]\nExecStart=/a\n",
            "restart",
        ),
        ("[Mount]\nOptions=ro\n", "[Mount]\nOptions=rw\n", "reload"),
    ],
)
def test_units_compare_as_ng_does(stc: ModuleType, current: str, new: str, expected: str) -> None:
    assert stc.compare_units(info(stc, current), info(stc, new)) == expected


class FakeUnit:
    def __init__(self, name: str) -> None:
        self.name = name
        self.base = name


@pytest.mark.parametrize(
    ("service", "verdict"),
    [
        ("", {"stop": {"u.service"}, "start": {"u.service"}}),
        ("X-ReloadIfChanged=true\n", {"reload": {"u.service"}}),
        ("X-RestartIfChanged=false\n", {"skip": {"u.service"}}),
        ("X-ReloadIfChanged=true\nX-RestartIfChanged=false\n", {"reload": {"u.service"}}),
        ("X-StopIfChanged=false\n", {"restart": {"u.service"}}),
    ],
)
def test_a_changed_unit_is_handled_by_its_keys(
    stc: ModuleType, service: str, verdict: dict[str, set[str]]
) -> None:
    plan = stc.Plan(dry=True)
    plan.start, plan.restart, plan.reload = set(), set(), set()  # none left by a previous run
    plan.modified(FakeUnit("u.service"), info(stc, f"[Service]\nExecStart=/a\n{service}"), {})
    got = {
        kind: getattr(plan, kind)
        for kind in ("stop", "start", "restart", "reload", "skip")
        if getattr(plan, kind)
    }
    assert got == verdict


def test_refuse_manual_stop_is_skipped(stc: ModuleType) -> None:
    plan = stc.Plan(dry=True)
    plan.start, plan.restart, plan.reload = set(), set(), set()
    plan.modified(FakeUnit("u.service"), info(stc, "[Unit]\nRefuseManualStop=yes\n"), {})
    assert plan.skip == {"u.service"} and not plan.stop

"""reboot.py with a fake `process.run`: the request, what the wait says, the bound, the old
ControlMaster dropped, and the system the node must come back on."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nixherd.errors import CommandError
from nixherd.node import reboot as reboot_mod
from nixherd.node.probe import SCRIPT
from nixherd.run import process
from nixherd.run.process import Result
from nixherd.run.ssh import Connection, Target

TOP = "/nix/store/" + "a" * 32 + "-system"
OLD = "/nix/store/" + "b" * 32 + "-system"


@dataclass
class Node:
    """A node that answers its probe with `boots[i]` on the i-th probe (None: unreachable)."""

    boots: list[str | None]
    runs: str = TOP
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], **_kw: Any) -> Result:
        args = list(argv)
        self.calls.append(args)
        if "-O" in args:
            return Result(tuple(args), 0, "", "")
        words = shlex.split(args[-1])
        if words[:3] == ["sh", "-c", SCRIPT]:
            boot = self.boots.pop(0) if len(self.boots) > 1 else self.boots[0]
            if boot is None:
                raise CommandError(tuple(args), 255, "ssh: connect: Connection refused")
            bid, _, start = boot.partition("/")
            pid1 = "1 (init) S " + " ".join(["0"] * 18 + [start, "0"])
            out = f"current={self.runs}\nbooted={self.runs}\nboot_id={bid}\npid1={pid1}\n"
            return Result(tuple(args), 0, out, "")
        return Result(tuple(args), 0, "", "")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def conn(tmp_path: Path) -> Connection:
    return Connection(Target(node="web-1", host="192.0.2.10"), control_dir=str(tmp_path))


def run(tmp_path: Path, **kw: Any) -> tuple[list[str], Any]:
    lines: list[str] = []
    clock = Clock()
    c = conn(tmp_path)
    Path(c.control_path).touch()  # the deploy's master, from before the reboot
    state = reboot_mod.reboot(
        c, before="k/100", on_line=lines.append, sleep=clock.sleep, clock=clock, **kw
    )
    return lines, state


def test_the_wait_says_what_it_waits_for_and_what_came_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Node(["k/100", None, "k/200"])
    monkeypatch.setattr(process, "run", node)
    lines, state = run(tmp_path, expect=TOP, timeout=300)
    assert lines[0] == "waiting for web-1 to come back (boot k/100, up to 300 s)"
    assert lines[1].startswith("web-1 back up after 3.0 s (boot k/200); running " + TOP)
    assert state.boot == "k/200"
    # The old boot's master is stopped before the first poll; the polls never ride it.
    exits = [i for i, a in enumerate(node.calls) if "-O" in a]
    assert exits == [1] and node.calls[1][-3:] == ["exit", "--", "root@192.0.2.10"]
    assert all("ControlPath=none" in a for a in node.calls[2:])


def test_the_wait_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = Node(["k/100"])
    monkeypatch.setattr(process, "run", node)
    with pytest.raises(reboot_mod.RebootError, match=r"web-1 did not come back within 5 s"):
        run(tmp_path, expect=TOP, timeout=5)


def test_coming_back_on_another_system_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Node(["k/200"], runs=OLD)
    monkeypatch.setattr(process, "run", node)
    with pytest.raises(reboot_mod.RebootError, match=f"web-1 runs {OLD}, expected {TOP}"):
        run(tmp_path, expect=TOP, timeout=60)

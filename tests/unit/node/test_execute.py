"""execute.py: the remote command is quoted once, per-node exit codes, failures isolated."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import connkit
import pytest

from nixherd.errors import CommandError, UsageError
from nixherd.events import Event, LogLine, Outcome
from nixherd.fleet.commands import exec_everywhere
from nixherd.run import process
from nixherd.run.process import Result

HOSTILE = ["echo", "$(touch /tmp/pwned)", "a;b", "it's", '"q"', "`id`", "x\ny", "-oProxyCommand=z"]


@dataclass(frozen=True)
class FakeNode(connkit.FakeNode):
    host: str = "192.0.2.20"
    user: str = "deploy"
    port: int = 2200
    ssh_options: tuple[str, ...] = ("ServerAliveInterval=7",)


def test_argv_reaches_the_remote_shell_as_the_same_words(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, ...]] = []

    def fake(argv: Sequence[str], **kw: Any) -> Result:
        seen.append(tuple(argv))
        kw["on_line"]("hello")
        return Result(tuple(argv), 0, "hello\n", "")

    monkeypatch.setattr(process, "run", fake)
    events: list[Event] = []
    report = exec_everywhere([FakeNode("a", ssh_config="/c")], HOSTILE, emit=events.append)
    (argv,) = seen
    dash = argv.index("--")
    assert argv[dash + 1] == "deploy@192.0.2.20"
    assert len(argv) == dash + 3  # one word for the whole remote command
    assert shlex.split(argv[-1]) == HOSTILE  # what the remote shell will see, exactly
    assert "ControlPath=none" in argv  # a single command: no master
    assert list(argv[argv.index("ServerAliveInterval=7") - 1 :][:2]) == [
        "-o",
        "ServerAliveInterval=7",
    ]
    assert report.nodes[0].outcome is Outcome.OK and report.nodes[0].exit_code == 0
    assert LogLine("a", "hello") in events


def test_sudo_wraps_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, ...]] = []

    def fake(argv: Sequence[str], **_kw: Any) -> Result:
        seen.append(tuple(argv))
        return Result(tuple(argv), 0, "", "")

    monkeypatch.setattr(process, "run", fake)
    exec_everywhere([FakeNode("a")], ["id", "-u"], elevate=True)
    assert shlex.split(seen[0][-1]) == ["sudo", "-n", "--", "id", "-u"]


def test_exit_codes_per_node(monkeypatch: pytest.MonkeyPatch) -> None:
    codes = {"a": 0, "b": 3, "c": 255}

    def fake(argv: Sequence[str], **kw: Any) -> Result:
        code = codes[kw["node"]]
        if kw["node"] == "c":
            raise CommandError(tuple(argv), 127, "no ssh", node="c")
        return Result(tuple(argv), code, f"out {code}\n", "")

    monkeypatch.setattr(process, "run", fake)
    report = exec_everywhere([FakeNode(n) for n in "abc"], ["false"], parallel=0)
    by = {r.node: r for r in report.nodes}
    assert by["a"].outcome is Outcome.OK
    assert by["b"].outcome is Outcome.FAILED and by["b"].exit_code == 3
    assert by["b"].error is not None and by["b"].error.message == "exited with 3"
    assert by["c"].outcome is Outcome.FAILED and by["c"].exit_code is None
    assert [r.node for r in report.failed] == ["b", "c"]


def test_no_command_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        exec_everywhere([FakeNode("a")], [])

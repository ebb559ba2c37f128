"""Shared fakes of the unit tests: a Connection that runs the 'remote' argv on this machine,
for the keys and data tests, a fleet node (FakeNode), the problems an inventory gets, and a
call that must not wait on a FIFO.

The remote scripts run for real, against a temp dir, with no ssh in between (the lab tests do
the same over real ssh).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nixherd.errors import InventoryError
from nixherd.inventory import loads
from nixherd.inventory.entries import HealthCheck, Key
from nixherd.inventory.model import target_of
from nixherd.run import process
from nixherd.run.process import LineCallback, Result
from nixherd.run.ssh import Connection, Target

T = TypeVar("T")


@dataclass(frozen=True)
class FakeNode:
    """A fleet node (fleet.plan.DeployNode) with only the fields reaching it needs; its target is
    built as `Node.target` builds it. A test file subclasses it to change the defaults."""

    name: str
    host: str = "192.0.2.10"
    user: str = "root"
    port: int = 22
    ssh_options: tuple[str, ...] = ()
    host_key_policy: str = "strict"
    ssh_config: str | None = None
    checks: Mapping[str, HealthCheck] = field(default_factory=dict)
    keys: Mapping[str, Key] = field(default_factory=dict)

    @property
    def target(self) -> Target:
        return target_of(self)


class LocalConnection(Connection):
    """Runs the 'remote' argv locally and records every call (argv and stdin)."""

    def __init__(self, control_dir: str) -> None:
        super().__init__(Target(node="n1", host="127.0.0.1"), control_dir=control_dir)
        self.calls: list[tuple[list[str], bytes | None]] = []
        self.modes: list[tuple[bool, bool]] = []  # (elevate, multiplex) of each call

    def run(
        self,
        remote: Sequence[str],
        *,
        elevate: bool = False,
        multiplex: bool = True,
        input: bytes | str | None = None,
        timeout: float | None = None,
        check: bool = True,
        on_line: LineCallback | None = None,
        what: str | None = None,
    ) -> Result:
        data = input.encode() if isinstance(input, str) else input
        self.calls.append((list(remote), data))
        self.modes.append((elevate, multiplex))
        return process.run(
            remote, input=input, timeout=timeout, check=check, on_line=on_line, what=what
        )


def problems(text: str | bytes) -> list[str]:
    """The problems `loads` finds in an inventory (it must find some), as their messages."""
    with pytest.raises(InventoryError) as caught:
        loads(text)
    return [str(p) for p in caught.value.problems]


def unblocked(fifo: Path, call: Callable[[], T], blocked: str) -> T:
    """What `call()` returns, run in a thread: if it still waits after 10 s (opening `fifo`), a
    writer releases it, so that the test ends, and the test fails with `blocked`."""
    found: list[T] = []
    worker = threading.Thread(target=lambda: found.append(call()))
    worker.start()
    worker.join(10)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        pytest.fail(blocked)
    [result] = found
    return result


# The remote scripts' shells: Debian's sh is dash, NixOS's is bash in POSIX mode.
SHELLS = (("dash",), ("bash",), ("bash", "--posix"))


class ShellConnection(LocalConnection):
    """Runs the remote `sh -c SCRIPT` with the given shell, and can hold a write's stdin after
    its first half until `between` (run with the temp file's path) returns."""

    def __init__(self, control_dir: str, shell: tuple[str, ...]) -> None:
        super().__init__(control_dir)
        self.shell = shell
        self.between: Callable[[str], None] | None = None
        self.path_first: str | None = None  # a directory of tools shadowing the real ones

    def run(self, remote: Any, **kwargs: Any) -> process.Result:
        argv = [*self.shell, *remote[1:]] if remote[0] == "sh" else list(remote)
        if self.path_first is not None:
            argv = ["env", f"PATH={self.path_first}:{os.environ['PATH']}", *argv]
        data = kwargs.get("input")
        if self.between is None or not data:
            return super().run(argv, **kwargs)
        return self._held(argv, bytes(data), str(remote[4]), self.between)  # sh -c S sh DEST

    def _held(
        self, argv: list[str], data: bytes, dest: str, between: Callable[[str], None]
    ) -> process.Result:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdin is not None
        half = len(data) // 2
        proc.stdin.write(data[:half])
        proc.stdin.flush()
        directory = os.path.dirname(dest)
        deadline = time.monotonic() + 10
        while not (names := [n for n in os.listdir(directory) if n.startswith(".nixherd")]):
            assert time.monotonic() < deadline, "no temp file appeared"
            time.sleep(0.01)
        between(os.path.join(directory, names[0]))
        out, err = proc.communicate(data[half:], timeout=30)
        return process.Result(tuple(argv), proc.returncode, out.decode(), err.decode())

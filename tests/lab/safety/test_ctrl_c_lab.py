"""Ctrl-C on a real terminal while an activation hangs, and --activation-timeout, on lab hosts.

`nixherd apply` runs on a pseudo-terminal of its own (it is the session leader and the
terminal's foreground process group, as in a user's shell), and the test types Ctrl-C into the
terminal: the kernel's line discipline turns the byte 0x03 into SIGINT for that process group,
exactly as a keyboard does. The activation hangs on purpose (`lab.fail.hang`: the new system is
already running, and a helper that ignores SIGTERM never lets the switch end).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import jsonkit
import pytest
from safetykit import (
    Fleet,
    HostPool,
    activation_status,
    by_node,
    cmdline,
    deployed_pair,
    deployed_single,
    descendants,
    host_pool,
    out,
    wait_for,
)

pytestmark = [pytest.mark.lab, pytest.mark.nix]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\r")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostPool]:
    yield from host_pool(tmp_path_factory, "ctrl-c-lab", 6)


class Terminal:
    """A process running on a pseudo-terminal, and everything it wrote there."""

    def __init__(self, pid: int, master: int) -> None:
        self.pid = pid
        self.master = master
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self.code: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # Read all the time: a full terminal buffer would block the program's writes.
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                if self.code is not None:
                    return
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the program is gone and the terminal closed
                return
            if not data:
                return
            with self._lock:
                self._chunks.append(data)

    def text(self) -> str:
        """What the program wrote, without colours and cursor moves, lines joined by spaces
        (a long line may be wrapped by the terminal's width)."""
        with self._lock:
            raw = b"".join(self._chunks).decode(errors="replace")
        return " ".join(_ANSI.sub("", raw).split())

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def poll(self) -> int | None:
        if self.code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout}s:\n{self.text()}")
            time.sleep(0.02)
        assert self.code is not None
        return self.code


@contextlib.contextmanager
def on_terminal(argv: Sequence[str], cwd: Path) -> Iterator[Terminal]:
    """Run argv on a new pseudo-terminal (wide, so a message is not wrapped mid-word); killed
    (by its pid) if still running when the test is done."""
    pid, master = pty.fork()
    if pid == 0:  # the child: session leader, the terminal is its controlling one
        try:
            os.chdir(cwd)
            env = dict(os.environ, TERM="xterm-256color", COLUMNS="250")
            os.execvpe(argv[0], list(argv), env)
        finally:
            os._exit(127)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
    term = Terminal(pid, master)
    try:
        yield term
    finally:
        if term.poll() is None:
            os.kill(pid, signal.SIGKILL)
            term.wait(30)
        os.close(master)


def hanging_run(fleet: Fleet) -> tuple[str, Path]:
    """Make alpha's next system hang on activation and build it; its previous system and the
    path for the report of the run a test starts."""
    before = fleet.current("alpha")
    assert before is not None
    fleet.write({**fleet_nodes(fleet), "alpha": {"vars": {"version": "2", "fail": {"hang": True}}}})
    built = fleet.nixherd("build")
    assert built.returncode == 0, out(built)
    return before, fleet.report_path()


def fleet_nodes(fleet: Fleet) -> dict[str, dict[str, dict[str, str]]]:
    return {name: {"vars": {"version": "1"}} for name in fleet.hosts}


def built_system(fleet: Fleet) -> str:
    """The store path of alpha's new (hanging) system."""
    built = fleet.nixherd("build", "--on", "alpha")
    assert built.returncode == 0, out(built)
    return built.stdout.split()[-1]


def leftovers(fleet: Fleet, host: str, system: str) -> list[str]:
    """Processes of the host still running the hanging system's switch (or its helper)."""
    supervisor = fleet.lab.status(host).pid
    assert supervisor is not None
    found = []
    for pid in descendants(supervisor):
        argv = cmdline(pid)
        if any(system in word for word in argv) or argv[:2] == ["sleep", "3600"]:
            found.append(" ".join(argv))
    return found


def activation_log(fleet: Fleet, host: str) -> str:
    script = 'd=$(ls -1dt /run/nixherd/act-* | head -n 1) && cat "$d/log"'
    return fleet.lab.sh(host, script, check=False).stdout


def wait_for_hang(fleet: Fleet, host: str, term: Terminal) -> None:
    def hanging() -> bool:
        assert term.poll() is None, term.text()
        return activation_status(fleet.lab, host) == "activating" and (
            fleet.current("alpha") or ""
        ).endswith("-alpha-2")

    wait_for(hanging, timeout=180, interval=0.1, what="the activation to hang")
    time.sleep(1)  # hung for good, not merely under way


def test_ctrl_c_twice_on_a_terminal_aborts_the_hanging_activation_and_rolls_it_back(
    hosts: HostPool, tmp_path: Path
) -> None:
    fleet = deployed_pair(hosts, tmp_path)
    host = fleet.hosts["alpha"]
    bravo_before = fleet.current("bravo")
    v1, report = hanging_run(fleet)
    nodes_before = {"alpha": built_system(fleet)}
    argv = fleet.argv("apply", "switch", "--parallel", "1", "--report", str(report))
    with on_terminal(argv, fleet.dir) as term:
        wait_for_hang(fleet, host, term)

        # First press: said at once, naming the node in flight and its stage; nothing stops.
        term.type(b"\x03")
        pressed = time.monotonic()
        first = "Ctrl-C: no new node starts; in flight: alpha (activate)"
        wait_for(lambda: first in term.text(), timeout=5, interval=0.02, what="the first notice")
        assert time.monotonic() - pressed < 2, term.text()
        time.sleep(3)
        assert term.poll() is None, term.text()  # the activation in flight goes on
        assert activation_status(fleet.lab, host) == "activating"

        # Second press: the activation is aborted, the node rolls back, exit 130 in seconds.
        term.type(b"\x03")
        pressed = time.monotonic()
        code = term.wait(timeout=60)
        took = time.monotonic() - pressed
        text = term.text()
    assert code == 130, text
    assert took < 15, (took, text)
    assert "Ctrl-C again: aborting the nodes in flight: alpha (activate)" in text
    assert fleet.current("alpha") == v1  # back on the previous system
    assert fleet.profile("alpha") == v1
    assert activation_status(fleet.lab, host) == "rolled-back aborted"
    # The hanging switch is gone, whole (its helper ignores SIGTERM): stopped, not signalled.
    assert leftovers(fleet, host, nodes_before["alpha"]) == [], activation_log(fleet, host)
    data = jsonkit.document(report.read_text(), "apply")
    assert data["interrupted"] is True
    nodes = by_node(data)
    assert nodes["alpha"]["result"] == "rolled back", nodes["alpha"]
    assert nodes["alpha"]["rolled_back"] is True
    assert "aborted by the deployer" in nodes["alpha"]["error"]["message"]
    assert nodes["bravo"]["result"] == "not attempted"
    assert fleet.current("bravo") == bravo_before
    # The summary reports each node's state.
    assert re.search(r"alpha rolled back .*aborted by the deployer", text), text
    assert re.search(r"bravo not attempted .*interrupted", text), text
    # The node is free again: the lock went with the rollback.
    fleet.write(fleet_nodes(fleet))
    result, _ = fleet.apply("switch")
    assert result.ok, out(result)


def test_a_single_ctrl_c_lets_the_activation_in_flight_run_its_course(
    hosts: HostPool, tmp_path: Path
) -> None:
    fleet, host = deployed_single(hosts, tmp_path)
    v1, report = hanging_run(fleet)
    argv = fleet.argv("apply", "switch", "--activation-timeout", "8", "--report", str(report))
    with on_terminal(argv, fleet.dir) as term:
        wait_for_hang(fleet, host, term)
        term.type(b"\x03")
        wait_for(
            lambda: "Ctrl-C: no new node starts; in flight: alpha (activate)" in term.text(),
            timeout=5,
            interval=0.02,
            what="the notice",
        )
        # One press never aborts: the switch runs into its own timeout and is undone by it.
        code = term.wait(timeout=120)
    assert code == 130, term.text()
    node = by_node(jsonkit.document(report.read_text(), "apply"))["alpha"]
    assert node["result"] == "rolled back", node
    assert "activation timed out" in node["error"]["message"]
    assert fleet.current("alpha") == v1


def test_activation_timeout_stops_a_hanging_switch_and_rolls_the_node_back(
    hosts: HostPool, tmp_path: Path
) -> None:
    fleet, host = deployed_single(hosts, tmp_path)
    v1, _ = hanging_run(fleet)
    result, data = fleet.apply("switch", "--activation-timeout", "5")
    assert result.returncode == 1, out(result)
    node = by_node(data)["alpha"]
    assert node["result"] == "rolled back", node
    assert node["rolled_back"] is True
    assert node["rollback_reason"] == "activation timed out"
    assert data["options"]["activation_timeout"] == 5
    # About 5 s of switch, then its stop (TERM, 2 s, KILL) and the previous system's activation.
    assert 5 <= node["seconds"]["activate"] < 20, node["seconds"]
    assert fleet.current("alpha") == v1
    assert fleet.profile("alpha") == v1
    assert activation_status(fleet.lab, host).startswith("rolled-back")

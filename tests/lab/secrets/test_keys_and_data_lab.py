"""Keys and runtime data on real lab hosts, through `nixherd keys upload` / `data diff|push` run as
a process: content, owner, group and mode on the node; secret bytes in no argv, env, log, report
or store; unchanged keys and files not sent again; reloads, restore on a failed reload, and a
vars edit reaching only its node. Lab-1 logs in as root, lab-2 as `deploy` (through sudo).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from labkit import LabFactory, LabHosts, files_holding, new_store_paths, store_paths
from secretskit import LabInventory, explain

pytestmark = [pytest.mark.lab]

NODES = ("lab-1", "lab-2")


@pytest.fixture(scope="module")
def lab(lab_hosts: LabFactory) -> LabHosts:
    return lab_hosts(2)


@dataclass
class Fleet(LabInventory):
    """An inventory for lab-1 and lab-2 in a temp dir, and `nixherd` run on it as a process."""

    # A directory of this test's own on every host (tests share the session's lab hosts).
    area: str = field(default_factory=lambda: f"/run/nh-h6-{secrets.token_hex(4)}")

    def remote(self, name: str, script: str, *args: str) -> str:
        return self.lab.ssh(name, "sh", "-c", script, "sh", *args).stdout

    def stat(self, name: str, path: str) -> str:
        """Owner, group, mode, inode and mtime (with nanoseconds) of a file on a host."""
        return self.remote(name, 'stat -c "%U %G %a %i %y" -- "$1"', path).strip()

    def lines(self, name: str, path: str) -> list[str]:
        return self.remote(name, 'cat -- "$1" 2>/dev/null || true', path).splitlines()


@pytest.fixture
def fleet(tmp_path: Path, lab: LabHosts) -> Iterator[Fleet]:
    f = Fleet(tmp_path, lab)
    yield f
    for name in NODES:
        lab.ssh(name, "rm", "-rf", "--", f.area, check=False)


class ProcScanner(threading.Thread):
    """Reads every process's argv and environment over and over, looking for some bytes."""

    def __init__(self, needle: bytes, markers: tuple[bytes, ...]) -> None:
        super().__init__(daemon=True)
        self.needle = needle
        self.markers = markers  # argv fragments whose sighting proves the scan saw the run
        self.leaks: list[str] = []
        self.seen: set[bytes] = set()
        self.scans = 0
        self.stop = threading.Event()

    def run(self) -> None:
        me = str(os.getpid())
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid == me:
                    continue
                for what in ("cmdline", "environ"):
                    try:
                        with open(f"/proc/{pid}/{what}", "rb") as handle:
                            blob = handle.read()
                    except OSError:
                        continue  # gone already, or a kernel thread
                    if self.needle in blob:
                        self.leaks.append(f"{pid} {what}: {blob[:200]!r}")
                    if what == "cmdline":
                        self.seen.update(m for m in self.markers if m in blob)
            self.scans += 1


def test_keys_arrive_with_owner_and_mode_and_leak_nowhere(fleet: Fleet) -> None:
    secret = f"nh-secret-{secrets.token_hex(16)}"
    second = f"nh-secret-{secrets.token_hex(16)}"
    (fleet.root / "secret.txt").write_text(secret + "\n")
    (fleet.root / "secrets").mkdir()
    (fleet.root / "secrets" / "lab-2.key").write_text(second)
    token = f"{fleet.area}/keys/token"
    fleet.write(
        {
            "lab-1": {
                "keys": {
                    # A slow secret command (as sops is), run in the inventory's directory.
                    "token": {
                        "command": ["sh", "-c", "sleep 1; cat secret.txt"],
                        "dest": token,
                        "user": "nobody",
                        "group": "nogroup",
                        "mode": "0440",
                    }
                }
            },
            "lab-2": {
                "keys": {"token": {"file": "secrets/lab-2.key", "dest": token, "user": "deploy"}}
            },
        }
    )
    before = store_paths()
    scanner = ProcScanner(secret.encode(), (b"sleep 1; cat secret.txt", token.encode()))
    scanner.start()
    try:
        result, report = fleet.run("keys", "upload")
    finally:
        scanner.stop.set()
        scanner.join()
    assert result.returncode == 0, explain(result)
    assert report["nodes"]["lab-1"] == {"outcome": "ok", "sent": ["token"], "unchanged": []}
    assert report["nodes"]["lab-2"]["sent"] == ["token"]

    # On the nodes: the content, owner, group and mode asked for.
    assert fleet.remote("lab-1", 'cat -- "$1"', token) == secret + "\n"
    assert fleet.stat("lab-1", token).split()[:3] == ["nobody", "nogroup", "440"]
    assert fleet.remote("lab-2", 'cat -- "$1"', token) == second
    assert fleet.stat("lab-2", token).split()[:3] == ["deploy", "root", "400"]

    # The scan ran all along (it saw the secret command and the upload) and never saw the bytes.
    assert scanner.scans > 10
    assert b"sleep 1; cat secret.txt" in scanner.seen
    assert scanner.leaks == []
    # Not in the output, the report or any log.
    assert secret not in result.stdout + result.stderr
    assert second not in result.stdout + result.stderr
    lab_dir = fleet.lab.dir
    for host in NODES:
        logs = os.path.join(lab_dir, "hosts", host, "log")
        assert files_holding(logs, secret.encode()) == []
        # Not in any host's Nix store (the whole private /nix of the host, DB included).
        nix_dir = os.path.join(lab_dir, "hosts", host, "nix")
        assert files_holding(nix_dir, secret.encode()) == []
        assert files_holding(nix_dir, second.encode()) == []
    # Not in the deployer's store: nothing the run added to it holds the bytes.
    for path in new_store_paths(before):
        assert files_holding(path, secret.encode()) == [], path


def test_unchanged_keys_are_not_sent_again(fleet: Fleet) -> None:
    (fleet.root / "k").write_text("same bytes")
    dest = f"{fleet.area}/k"
    fleet.write(
        {name: {"keys": {"k": {"file": "k", "dest": dest, "mode": "0400"}}} for name in NODES}
    )
    result, report = fleet.run("keys", "upload")
    assert result.returncode == 0, explain(result)
    first = {name: fleet.stat(name, dest) for name in NODES}
    time.sleep(0.05)  # a rewrite would get a visibly newer mtime

    result, report = fleet.run("keys", "upload")
    assert result.returncode == 0, explain(result)
    for name in NODES:
        assert report["nodes"][name] == {"outcome": "up to date", "sent": [], "unchanged": ["k"]}
        # Same inode, same mtime: the file was not rewritten.
        assert fleet.stat(name, dest) == first[name]

    # Only the mode changes on lab-2: that key is sent again there, and only there.
    fleet.write(
        {
            "lab-1": {"keys": {"k": {"file": "k", "dest": dest, "mode": "0400"}}},
            "lab-2": {"keys": {"k": {"file": "k", "dest": dest, "mode": "0600"}}},
        }
    )
    result, report = fleet.run("keys", "upload")
    assert result.returncode == 0, explain(result)
    assert report["nodes"]["lab-1"]["sent"] == []
    assert report["nodes"]["lab-2"]["sent"] == ["k"]
    assert fleet.stat("lab-2", dest).split()[2] == "600"


def test_a_missing_source_fails_its_node_only_and_touches_nothing(fleet: Fleet) -> None:
    (fleet.root / "ok").write_text("fine")
    fleet.write(
        {
            "lab-1": {
                "keys": {
                    "a": {"file": "ok", "dest": f"{fleet.area}/a"},
                    "b": {"file": "missing", "dest": f"{fleet.area}/b"},
                }
            },
            "lab-2": {"keys": {"a": {"file": "ok", "dest": f"{fleet.area}/a"}}},
        }
    )
    result, report = fleet.run("keys", "upload")
    assert result.returncode == 1, explain(result)
    assert report["nodes"]["lab-1"]["outcome"] == "failed"
    assert "key 'b': cannot read" in report["nodes"]["lab-1"]["error"]
    assert report["nodes"]["lab-2"]["sent"] == ["a"]
    # lab-1 was not touched at all: not even its good key went out.
    assert fleet.remote("lab-1", 'test -e "$1" && echo yes || echo no', fleet.area) == "no\n"


def data_node(fleet: Fleet, domains: dict[str, str], reload: list[str] | None = None) -> Any:
    area = fleet.area
    return {
        "vars": {"domains": domains, "greeting": "hello"},
        "data": {
            "backends": {
                "path": f"{area}/app/backends.json",
                "source": "domains",
                "reload": reload or ["sh", "-c", f"echo reloaded >> {area}/reloads"],
            },
            "motd": {
                "path": f"{area}/app/motd",
                "format": "text",
                "template": "{vars.greeting} from {name}\n",
                "mode": "0640",
            },
        },
    }


def test_data_push_writes_reloads_and_edits_reach_their_node_only(fleet: Fleet) -> None:
    backends = f"{fleet.area}/app/backends.json"
    reloads = f"{fleet.area}/reloads"
    fleet.write({name: data_node(fleet, {"a.example": f"{name}:80"}) for name in NODES})

    result, report = fleet.run("data", "diff")
    assert result.returncode == 0, explain(result)
    for name in NODES:
        files = {f["name"]: f for f in report["nodes"][name]["files"]}
        assert files["backends"]["changed"] and not files["backends"]["exists"]

    result, report = fleet.run("data", "push")
    assert result.returncode == 0, explain(result)
    for name in NODES:
        assert report["nodes"][name]["changed"] == ["backends", "motd"]
        assert json.loads(fleet.remote(name, 'cat -- "$1"', backends)) == {
            "a.example": f"{name}:80"
        }
        assert fleet.remote(name, 'cat -- "$1"', f"{fleet.area}/app/motd") == f"hello from {name}\n"
        assert fleet.stat(name, f"{fleet.area}/app/motd").split()[:3] == ["root", "root", "640"]
        # The two files share nothing but one reload command each: backends has it, motd none.
        assert fleet.lines(name, reloads) == ["reloaded"]
    first = {name: fleet.stat(name, backends) for name in NODES}

    # Nothing changed: nothing sent, no reload.
    result, report = fleet.run("data", "push")
    assert result.returncode == 0, explain(result)
    for name in NODES:
        assert report["nodes"][name]["outcome"] == "up to date"
        assert fleet.lines(name, reloads) == ["reloaded"]
        assert fleet.stat(name, backends) == first[name]

    # Edit lab-2's vars only: diff and push show and change lab-2 alone.
    fleet.write(
        {
            "lab-1": data_node(fleet, {"a.example": "lab-1:80"}),
            "lab-2": data_node(fleet, {"a.example": "lab-2:8080"}),
        }
    )
    result, report = fleet.run("data", "diff")
    assert result.returncode == 0, explain(result)
    assert report["nodes"]["lab-1"]["outcome"] == "up to date"
    (changed,) = [f for f in report["nodes"]["lab-2"]["files"] if f["changed"]]
    assert '-  "a.example": "lab-2:80"' in changed["diff"]
    assert '+  "a.example": "lab-2:8080"' in changed["diff"]

    result, report = fleet.run("data", "push")
    assert result.returncode == 0, explain(result)
    assert report["nodes"]["lab-1"] == {
        "outcome": "up to date",
        "changed": [],
        "unchanged": ["backends", "motd"],
        "reloads": [],
    }
    assert report["nodes"]["lab-2"]["changed"] == ["backends"]
    assert fleet.stat("lab-1", backends) == first["lab-1"]
    assert fleet.lines("lab-1", reloads) == ["reloaded"]
    assert fleet.lines("lab-2", reloads) == ["reloaded", "reloaded"]
    assert json.loads(fleet.remote("lab-2", 'cat -- "$1"', backends)) == {"a.example": "lab-2:8080"}
    # The previous file is kept beside it.
    previous = fleet.remote("lab-2", 'cat -- "$1"', backends + ".nixherd-prev")
    assert json.loads(previous) == {"a.example": "lab-2:80"}


def test_a_failing_reload_restores_the_previous_file(fleet: Fleet) -> None:
    backends = f"{fleet.area}/app/backends.json"
    # The "service" accepts a config only if it names a good backend.
    check = ["sh", "-c", f"echo reloaded >> {fleet.area}/reloads; grep -q good {backends}"]
    fleet.write({name: data_node(fleet, {"a.example": "good:80"}, check) for name in NODES})
    result, _ = fleet.run("data", "push")
    assert result.returncode == 0, explain(result)
    good = {name: fleet.remote(name, 'cat -- "$1"', backends) for name in NODES}

    fleet.write(
        {
            "lab-1": data_node(fleet, {"a.example": "good:80"}, check),
            "lab-2": data_node(fleet, {"a.example": "bad:80"}, check),
        }
    )
    result, report = fleet.run("data", "push")
    assert result.returncode == 1, explain(result)
    assert report["nodes"]["lab-1"]["outcome"] == "up to date"
    assert report["nodes"]["lab-2"]["outcome"] == "failed"
    assert "restored the previous" in report["nodes"]["lab-2"]["error"]
    # The node is back on the file that worked; the reload ran for the bad one, then the old.
    assert fleet.remote("lab-2", 'cat -- "$1"', backends) == good["lab-2"]
    assert fleet.lines("lab-2", f"{fleet.area}/reloads") == ["reloaded"] * 3
    assert fleet.lines("lab-1", f"{fleet.area}/reloads") == ["reloaded"]


def test_a_data_reload_through_systemctl_reaches_the_unit(fleet: Fleet) -> None:
    # A service unit on each host (systemd-run: no lab system needed) whose ExecReload sends
    # SIGHUP, as most units' do; the data file's reload is `systemctl reload UNIT`.
    unit = f"nh-app-{secrets.token_hex(4)}"
    reloads = f"{fleet.area}/reloads"
    backends = f"{fleet.area}/app/backends.json"
    for name in NODES:
        fleet.remote(
            name,
            'mkdir -p "$2" && systemd-run --unit="$1" --collect --quiet '
            "-p 'ExecReload=/bin/kill -HUP $MAINPID' -- "
            "sh -c \"trap 'echo reloaded >> $2/reloads' HUP; while :; do sleep 0.1; done\"",
            unit,
            fleet.area,
        )
    try:
        reload = ["systemctl", "reload", unit]
        fleet.write({name: data_node(fleet, {"a.example": f"{name}:80"}, reload) for name in NODES})
        result, report = fleet.run("data", "push")
        assert result.returncode == 0, explain(result)
        for name in NODES:
            assert report["nodes"][name]["changed"] == ["backends", "motd"]
            wait = 'for i in $(seq 50); do test -s "$1" && break; sleep 0.1; done; cat "$1"'
            assert fleet.remote(name, wait, reloads).splitlines() == ["reloaded"]
        # The unit stopped: `systemctl reload` fails, and the previous file comes back.
        good = fleet.remote("lab-1", 'cat -- "$1"', backends)
        fleet.remote("lab-1", 'systemctl stop "$1"', unit)
        fleet.write(
            {
                "lab-1": data_node(fleet, {"a.example": "lab-1:8080"}, reload),
                "lab-2": data_node(fleet, {"a.example": "lab-2:80"}, reload),
            }
        )
        result, report = fleet.run("data", "push")
        assert result.returncode == 1, explain(result)
        assert report["nodes"]["lab-1"]["outcome"] == "failed"
        assert "restored the previous" in report["nodes"]["lab-1"]["error"]
        assert fleet.remote("lab-1", 'cat -- "$1"', backends) == good
    finally:
        for name in NODES:
            fleet.remote(name, 'systemctl stop "$1" 2>/dev/null || true', unit)

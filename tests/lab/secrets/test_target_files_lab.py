"""Files on the target against a hostile owner of their directory, on real lab hosts.

The lab's `deploy` user plays an application user owning the directory a key or data file goes
to (its home, say). Whatever that user does there, nixherd, as root, must never follow a symlink
the user placed (no root-owned file changes hands, is overwritten or read back), must refuse a
directory where a file belongs, must replace (not follow) a symlink at the file's own name, and a
reload that hangs is killed with its whole session and the previous file restored.

The race is made deterministic with an `ssh` wrapper on the deployer's PATH: it forwards the
first MiB of a command's stdin, then waits for the test, which meanwhile swaps the half-written
temp file for a symlink (as `deploy`, on the node), then lets the rest through.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from labkit import LabFactory, LabHosts
from secretskit import USERS, LabInventory, by_name, explain

from nixherd.inventory.entries import DataFile
from nixherd.inventory.parse_entries import build_data
from nixherd.node import data as data_mod
from nixherd.node.data import DataError, push_node
from nixherd.run import process
from nixherd.run.process import Result
from nixherd.run.ssh import Connection, Target

pytestmark = [pytest.mark.lab]

GATE_BYTES = 1 << 20


@pytest.fixture(scope="module")
def lab(lab_hosts: LabFactory) -> LabHosts:
    return lab_hosts(2)


@dataclass
class Node:
    """What `data.push_node` needs of a node."""

    name: str
    vars: Mapping[str, Any]
    data: Mapping[str, DataFile] = field(default_factory=dict)


@dataclass
class Area(LabInventory):
    """A directory of this test on the lab hosts: `home` owned by deploy, the rest by root."""

    dir: str = field(default_factory=lambda: f"/run/nh-t8-{secrets.token_hex(4)}")

    @property
    def home(self) -> str:
        return f"{self.dir}/home"

    def sh(self, node: str, script: str, *args: str, user: str = "root") -> str:
        return self.lab.ssh(node, "sh", "-c", script, "sh", *args, user=user).stdout

    def setup(self, node: str) -> None:
        """`home` owned by deploy; `victim` a root-only file; `private` a root-only dir."""
        self.sh(
            node,
            'set -e; umask 022; mkdir -p "$1/home" "$1/private"; chown deploy "$1/home"; '
            'chmod 700 "$1/private"; echo private > "$1/private/secret"; '
            'printf "victim\\n" > "$1/victim"; chmod 600 "$1/victim" "$1/private/secret"',
            self.dir,
        )

    def stat(self, node: str, path: str) -> str:
        """Type, owner, group, mode of a path (not following a symlink)."""
        return self.sh(node, 'stat -c "%F %U %G %a" -- "$1"', path).strip()

    def cat(self, node: str, path: str) -> str:
        return self.sh(node, 'cat -- "$1"', path)


@pytest.fixture
def area(tmp_path: Path, lab: LabHosts) -> Iterator[Area]:
    a = Area(tmp_path, lab)
    for node in USERS:
        a.setup(node)
    yield a
    for node in USERS:
        lab.ssh(node, "rm", "-rf", "--", a.dir, check=False)


# An ssh that holds a command's stdin after the first GATE_BYTES until the test says go.
WRAPPER = """\
import os, subprocess, sys, time
gate = {gate!r}
proc = subprocess.Popen([{ssh!r}, *sys.argv[1:]], stdin=subprocess.PIPE)
sent, held = 0, False
while chunk := os.read(0, 65536):
    if not held and sent + len(chunk) > {limit}:
        head = {limit} - sent
        proc.stdin.write(chunk[:head])
        proc.stdin.flush()
        open(os.path.join(gate, "held"), "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(gate, "go")) and time.monotonic() < deadline:
            time.sleep(0.01)
        chunk, held = chunk[head:], True
    proc.stdin.write(chunk)
    sent += len(chunk)
proc.stdin.close()
sys.exit(proc.wait())
"""


def gated_path(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose `ssh` is the gate wrapper, and the gate directory."""
    gate = tmp_path / "gate"
    bin_dir = tmp_path / "bin"
    gate.mkdir()
    bin_dir.mkdir()
    real = shutil.which("ssh")
    assert real is not None
    wrapper = bin_dir / "ssh"
    body = WRAPPER.format(gate=str(gate), ssh=real, limit=GATE_BYTES)
    wrapper.write_text(f"#!{sys.executable}\n{body}")
    wrapper.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}, gate


def wait_for(what: str, check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["key", "data"])
def test_a_temp_file_swapped_mid_stream_hands_nothing_to_the_dir_owner(
    area: Area, kind: str
) -> None:
    node = "lab-1"
    dest = f"{area.home}/secret"
    payload = secrets.token_hex(GATE_BYTES)  # 2 MiB: the gate holds the second half
    if kind == "key":
        (area.root / "big.key").write_text(payload)
        entry: dict[str, Any] = {
            "keys": {"app": {"file": "big.key", "dest": dest, "user": "deploy"}}
        }
        args = ("keys", "upload")
    else:
        entry = {
            "vars": {"blob": payload},
            "data": {"app": {"path": dest, "format": "text", "template": "{vars.blob}"}},
        }
        args = ("data", "push")
    area.write({node: entry})
    env, gate = gated_path(area.root)
    proc = subprocess.Popen(
        area.argv(*args),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for("the write to be held mid-stream", (gate / "held").exists)

        def temp_name() -> str:
            names = area.sh(node, 'ls -A -- "$1"', area.home).split()
            return next((n for n in names if n.startswith(".nixherd")), "")

        tmp = wait_for("the temp file on the node", temp_name)
        # The owner of the directory swaps the half-written temp file for a symlink to a file
        # only root may touch.
        area.sh(
            node,
            'cd -- "$1" && mv -- "$2" "$2.mine" && ln -s ../victim "$2"',
            area.home,
            tmp,
            user="deploy",
        )
        (gate / "go").touch()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = Result(tuple(area.argv(*args)), proc.returncode, out, err)
    # The victim kept its owner, mode and bytes; the run failed and said why.
    assert area.stat(node, f"{area.dir}/victim") == "regular file root root 600"
    assert area.cat(node, f"{area.dir}/victim") == "victim\n"
    assert result.returncode == 1, explain(result)
    report = by_name(out, " ".join(args))
    error = report["nodes"][node]["error"]
    assert "replaced while it was written" in error, error
    assert payload[:64] not in out + err
    # Nothing of ours is left at the temp name, and no key was installed at dest.
    assert area.sh(node, 'test -e "$1" || test -L "$1" && echo yes || echo no', dest) == "no\n"


def test_key_dest_that_is_a_directory_or_a_symlink(area: Area) -> None:
    node = "lab-1"
    (area.root / "k").write_text("key-bytes")
    area.sh(
        node,
        'set -e; cd -- "$1"; mkdir -p keys/adir keys/target; ln -s target keys/link',
        area.dir,
    )
    # A directory at dest: refused, nothing put inside it.
    area.write({node: {"keys": {"k": {"file": "k", "dest": f"{area.dir}/keys/adir"}}}})
    for _ in range(2):
        result, report = area.run("keys", "upload")
        assert result.returncode == 1, explain(result)
        assert "is a directory" in report["nodes"][node]["error"]
    assert area.sh(node, 'ls -A -- "$1"', f"{area.dir}/keys/adir") == ""

    # A symlink to a directory at dest: the link is replaced by the key, never followed.
    area.write({node: {"keys": {"k": {"file": "k", "dest": f"{area.dir}/keys/link"}}}})
    result, report = area.run("keys", "upload")
    assert result.returncode == 0, explain(result)
    assert report["nodes"][node]["sent"] == ["k"]
    assert area.stat(node, f"{area.dir}/keys/link") == "regular file root root 400"
    assert area.cat(node, f"{area.dir}/keys/link") == "key-bytes"
    assert area.sh(node, 'ls -A -- "$1"', f"{area.dir}/keys/target") == ""
    result, report = area.run("keys", "upload")
    assert report["nodes"][node]["unchanged"] == ["k"], explain(result)

    # A directory on the way that deploy turned into a symlink to a root-only directory: the
    # key would land in it (and be chowned to deploy there). Refused; the file there is intact.
    area.sh(node, 'ln -s ../private "$1/home/app"', area.dir, user="deploy")
    dest = f"{area.home}/app/secret"
    area.write({node: {"keys": {"k": {"file": "k", "dest": dest, "user": "deploy"}}}})
    result, report = area.run("keys", "upload")
    assert result.returncode == 1, explain(result)
    assert "symlink" in report["nodes"][node]["error"]
    assert area.stat(node, f"{area.dir}/private/secret") == "regular file root root 600"
    assert area.cat(node, f"{area.dir}/private/secret") == "private\n"
    assert area.sh(node, 'ls -A -- "$1"', f"{area.dir}/private") == "secret\n"


def test_data_diff_never_reads_through_a_symlink(area: Area) -> None:
    nodes = {}
    for node in USERS:
        # deploy points its data file at a root-only file, and a directory at a root-only one.
        area.sh(
            node,
            'cd -- "$1" && ln -s ../victim conf.json && ln -s ../private sub',
            area.home,
            user="deploy",
        )
        nodes[node] = {
            "vars": {"x": {"a": 1}},
            "data": {
                "conf": {"path": f"{area.home}/conf.json", "source": "x"},
                "deep": {"path": f"{area.home}/sub/secret", "source": "x"},
            },
        }
    area.write(nodes)
    result, report = area.run("data", "diff")
    assert result.returncode == 0, explain(result)
    # Neither the root-only file's bytes nor the root-only directory's file came back.
    assert "victim" not in result.stdout + result.stderr
    assert "private" not in result.stdout + result.stderr
    for node in USERS:
        files = {f["name"]: f for f in report["nodes"][node]["files"]}
        assert files["conf"]["state"] == "symlink", files
        assert files["conf"]["changed"] and files["conf"]["diff"].startswith("--- /dev/null")
        assert files["deep"]["state"] == "unsafe", files
        assert "symlink" in files["deep"]["note"]
    # In text mode, the symlink is named as such.
    text = process.run(area.argv("data", "diff")[:-1], check=False, timeout=120)
    assert "is a symlink" in text.stdout, explain(text)
    assert "victim" not in text.stdout + text.stderr


def test_data_push_replaces_a_symlink_and_refuses_a_directory(area: Area) -> None:
    node = "lab-2"  # through sudo
    rendered = '{\n  "a": 1\n}\n'
    # A root-owned file holding exactly the rendered bytes, mode and owner: through the link the
    # file would look unchanged. The link must still be replaced (and kept as the backup).
    area.sh(
        node,
        'set -e; cd -- "$1"; printf "%s" "$2" > same; chmod 644 same',
        area.dir,
        rendered,
    )
    area.sh(node, 'ln -s ../same "$1/conf.json"', area.home, user="deploy")
    area.write(
        {
            node: {
                "vars": {"x": {"a": 1}},
                "data": {"conf": {"path": f"{area.home}/conf.json", "source": "x"}},
            }
        }
    )
    result, report = area.run("data", "push")
    assert result.returncode == 0, explain(result)
    assert report["nodes"][node]["changed"] == ["conf"]
    assert area.stat(node, f"{area.home}/conf.json") == "regular file root root 644"
    assert area.cat(node, f"{area.home}/conf.json") == rendered
    # The backup is the link itself (not a copy of what it pointed to); `same` is untouched.
    assert area.stat(node, f"{area.home}/conf.json.nixherd-prev").startswith("symbolic link")
    assert area.stat(node, f"{area.dir}/same") == "regular file root root 644"

    # A directory where the file belongs: refused, nothing moved into it.
    area.sh(node, 'mkdir -- "$1/conf.d"', area.home, user="deploy")
    area.write(
        {
            node: {
                "vars": {"x": {"a": 2}},
                "data": {"d": {"path": f"{area.home}/conf.d", "source": "x"}},
            }
        }
    )
    result, report = area.run("data", "push")
    assert result.returncode == 1, explain(result)
    assert "is a directory" in report["nodes"][node]["error"]
    assert area.sh(node, 'ls -A -- "$1"', f"{area.home}/conf.d") == ""


def test_a_hanging_reload_is_killed_with_its_session_and_the_file_restored(
    area: Area, lab: LabHosts, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = "lab-2"  # through sudo
    path = f"{area.dir}/app.json"
    pids = f"{area.dir}/pids"
    area.sh(node, 'printf "old\\n" > "$1"', path)
    # The reload records its pid, starts a sleeper in a process group of its own (same session:
    # killing the reload's group alone would miss it), and hangs.
    reload = [
        "sh",
        "-c",
        'echo $$ >> "$1"; set -m; sleep 300 & echo $! >> "$1"; wait',
        "reload",
        pids,
    ]
    monkeypatch.setattr(data_mod, "RELOAD_TIMEOUT", 2.0)
    spec = {"path": path, "source": "x", "reload": reload}
    conn = Connection(
        Target(node, node, user="deploy", port=lab.port(node), ssh_config=lab.ssh_config)
    )
    started = time.monotonic()
    try:
        with pytest.raises(DataError) as caught:
            app = build_data("app", spec)
            push_node(conn, Node(node, {"x": {"a": 1}}, {"app": app}), emit=lambda _e: None)
        took = time.monotonic() - started
        message = str(caught.value)
        assert "timed out" in message and "restored the previous" in message, message
        assert took < 30, took
        assert area.cat(node, path) == "old\n"
        left = area.sh(node, 'cat -- "$1"', pids).split()
        assert len(left) == 2, left

        def gone() -> bool:
            alive = area.sh(node, 'for p do test -d "/proc/$p" && echo "$p"; done; true', *left)
            return alive == ""

        wait_for("the reload's processes to be gone", gone, timeout=10)
    finally:
        conn.close()
        # Stop exactly what the reload started if it outlived the test (the bug this tests).
        lab.ssh(
            node,
            "sh",
            "-c",
            'test -f "$1" && for p in $(cat -- "$1"); do kill -9 "$p" 2>/dev/null; done; true',
            "sh",
            pids,
            check=False,
        )

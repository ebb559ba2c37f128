"""Keys during `nixherd apply` on real lab hosts: pre-activation keys land before the switch,
post-activation ones after it, `--no-keys` sends none, a missing source fails its node before
anything on it changes, and the secret is in no report, log or store the deploy made.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonkit
import pytest
import rtoml
from labkit import LabFactory, LabHosts, files_holding, fleet_flake, new_store_paths, store_paths

from nixherd.run import process
from nixherd.run.process import Result

pytestmark = [pytest.mark.lab, pytest.mark.nix]

_versions = itertools.count(1)
ROLE = "{ node, ... }: { lab.version = node.vars.version; }\n"


@pytest.fixture(scope="module")
def lab(lab_hosts: LabFactory) -> Iterator[LabHosts]:
    # Unreachable substituters would cost every build seconds of retries.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NIX_CONFIG", "substituters =")
        yield lab_hosts(2)


@dataclass
class Fleet:
    """A `path:` flake with the lab's mkSystem and an inventory for lab-1 (root) and lab-2
    (deploy, through sudo), each node with keys."""

    dir: Path
    lab: LabHosts
    area: str

    @property
    def secrets(self) -> Path:
        """Key files of the test, beside the flake (never inside it)."""
        path = self.dir.parent / "secrets"
        path.mkdir(exist_ok=True)
        return path

    def write(self, keys: dict[str, dict[str, Any]]) -> str:
        version = f"h6-{next(_versions)}-{os.getpid()}-{secrets.token_hex(3)}"
        nodes = {
            name: {
                "role": "app",
                "host": "127.0.0.1",
                "port": self.lab.port(name),
                "user": user,
                "keys": keys.get(name, {}),
            }
            for name, user in (("lab-1", "root"), ("lab-2", "deploy"))
        }
        doc = {
            "defaults": {"ssh_config": self.lab.ssh_config, "vars": {"version": version}},
            "roles": {"app": {"modules": ["app.nix"]}},
            "nodes": nodes,
        }
        (self.dir / "inventory.toml").write_text(rtoml.dumps(doc))
        return version

    def apply(self, *args: str) -> tuple[Result, dict[str, Any]]:
        report = self.dir / f"report-{next(_versions)}.json"
        result = process.run(
            [
                sys.executable,
                "-m",
                "nixherd",
                "-i",
                str(self.dir / "inventory.toml"),
                "apply",
                "switch",
                "--flake",
                f"path:{self.dir}",
                "--report",
                str(report),
                *args,
            ],
            cwd=str(self.dir),
            check=False,
            timeout=600,
        )
        data: dict[str, Any] = (
            jsonkit.document(report.read_text(), "apply") if report.exists() else {}
        )
        return result, data

    def remote(self, name: str, script: str, *args: str) -> str:
        return self.lab.ssh(name, "sh", "-c", script, "sh", *args).stdout


@pytest.fixture
def fleet(tmp_path: Path, lab: LabHosts) -> Iterator[Fleet]:
    root = tmp_path / "fleet"
    fleet_flake(root, {"app.nix": ROLE})
    f = Fleet(root, lab, f"/run/nh-h6-{secrets.token_hex(4)}")
    yield f
    for name in ("lab-1", "lab-2"):
        lab.ssh(name, "rm", "-rf", "--", f.area, check=False)


def outcome(report: dict[str, Any], name: str) -> str:
    node = next(n for n in report["nodes"] if n["node"] == name)
    return str(node["result"])


def explain(result: Result) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


# mtime of the key (a file) and of /run/current-system (the link activation replaces), in ns.
_TIMES = 'stat -c %.9Y -- "$1"; stat -c %.9Y /run/current-system'


def test_apply_uploads_keys_around_activation(fleet: Fleet) -> None:
    secret = f"nh-secret-{secrets.token_hex(16)}"
    # Outside the flake: a path: flake copies its whole directory into the store.
    (fleet.secrets / "pre").write_text(secret)
    (fleet.secrets / "post").write_text("post " + secret)
    pre, post = f"{fleet.area}/pre", f"{fleet.area}/post"
    keys = {
        "pre": {"file": "../secrets/pre", "dest": pre, "user": "nobody"},
        "post": {"file": "../secrets/post", "dest": post, "upload": "post-activation"},
    }
    before = store_paths()
    version = fleet.write({"lab-1": keys, "lab-2": keys})
    result, report = fleet.apply()
    assert result.returncode == 0, explain(result)
    for name in ("lab-1", "lab-2"):
        assert outcome(report, name) == "ok"
        assert fleet.remote(name, "nixos-version").strip() == version
        assert fleet.remote(name, 'cat -- "$1"', pre) == secret
        assert fleet.remote(name, 'cat -- "$1"', post) == "post " + secret
        key_pre, switched = map(float, fleet.remote(name, _TIMES, pre).split())
        key_post, _ = map(float, fleet.remote(name, _TIMES, post).split())
        assert key_pre <= switched <= key_post
    # Not in the output, the report, the run's logs or anything the build put in the store.
    assert secret not in result.stdout + result.stderr
    assert secret not in json.dumps(report)
    assert files_holding(str(fleet.dir), secret.encode()) == []
    for path in new_store_paths(before):
        assert files_holding(path, secret.encode()) == [], path


def test_a_key_file_inside_a_path_flake_is_refused_before_evaluation(fleet: Fleet) -> None:
    secret = f"nh-secret-{secrets.token_hex(16)}"
    (fleet.dir / "token").write_text(secret)
    before = store_paths()
    fleet.write({"lab-1": {"token": {"file": "token", "dest": f"{fleet.area}/token"}}})
    result, _report = fleet.apply()
    assert result.returncode == 2, explain(result)
    assert "lab-1: key 'token'" in result.stderr and "world-readable Nix store" in result.stderr
    # Nothing was evaluated, so the flake (and the secret in it) never reached the store.
    for path in new_store_paths(before):
        assert files_holding(path, secret.encode()) == [], path
    assert fleet.remote("lab-1", 'test -e "$1" && echo yes || echo no', fleet.area) == "no\n"


def test_no_keys_sends_none_and_a_missing_source_fails_before_the_switch(fleet: Fleet) -> None:
    (fleet.secrets / "k").write_text("v")
    dest = f"{fleet.area}/k"
    fleet.write({"lab-1": {"k": {"file": "../secrets/k", "dest": dest}}})
    result, report = fleet.apply("--no-keys")
    assert result.returncode == 0, explain(result)
    assert fleet.remote("lab-1", 'test -e "$1" && echo yes || echo no', dest) == "no\n"

    running = fleet.remote("lab-1", "readlink /run/current-system")
    version = fleet.write(
        {
            "lab-1": {
                "k": {"file": "../secrets/k", "dest": dest},
                "gone": {"file": "../secrets/nope", "dest": f"{fleet.area}/gone"},
            },
            "lab-2": {"k": {"file": "../secrets/k", "dest": dest}},
        }
    )
    result, report = fleet.apply()
    assert result.returncode == 1, explain(result)
    assert outcome(report, "lab-1") == "failed"
    assert outcome(report, "lab-2") == "ok"
    # lab-1 kept its system and got no key; lab-2 went on.
    assert fleet.remote("lab-1", "readlink /run/current-system") == running
    assert fleet.remote("lab-1", 'test -e "$1" && echo yes || echo no', dest) == "no\n"
    assert fleet.remote("lab-2", "nixos-version").strip() == version
    assert fleet.remote("lab-2", 'cat -- "$1"', dest) == "v"

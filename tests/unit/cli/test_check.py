"""`nixherd check`: ok with counts, or every problem on its own line and exit 2, also for
generated hostile inventories (never a traceback)."""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jsonkit
import pytest
from hypothesis import given, settings

from nixherd.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inventory"))
from inventory_strategies import broken, encoded

ROOT = Path(__file__).resolve().parents[3]
SEED = ROOT / "examples" / "seed-fleet" / "inventory.toml"


@pytest.fixture(autouse=True, scope="module")
def _private_parse_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The commands' parse cache goes to a temporary directory, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NIXHERD_CACHE_DIR", str(tmp_path_factory.mktemp("parse-cache")))
        yield


def test_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-i", str(SEED), "check"]) == 0
    assert capsys.readouterr() == ("6 nodes, 2 roles: ok\n", "")
    assert main(["-i", str(SEED), "check", "--on", "@batch-vps"]) == 0
    assert capsys.readouterr().out == "6 nodes, 2 roles (3 selected): ok\n"


def test_singular(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "one.toml"
    path.write_text("[roles.r]\n[nodes.a]\nrole = 'r'\n")
    assert main(["-i", str(path), "check"]) == 0
    assert capsys.readouterr().out == "1 node, 1 role: ok\n"


BROKEN = """\
[defaults]
port = 0

[roles.web]
tags = ["a b"]

[[roles.web.targets]]
host = "10.0.0.1"

[[roles.web.targets]]
host = "10.0.0.1"

[nodes.web-1]
prot = 22
port = 70000
role = "wbe"
"""


def test_every_problem_on_its_own_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("inventory.toml").write_text(BROKEN)
    assert main(["check"]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "inventory.toml: defaults.port: must be 1..65535, got 0",
        "inventory.toml: roles.web.tags[0]: must be a tag matching [A-Za-z0-9][A-Za-z0-9_.-]* "
        '(at most 63 characters), got "a b"',
        'inventory.toml: roles.web.targets[1]: node name "web-10-0-0-1" is already used by '
        "roles.web.targets[0]",
        "inventory.toml: nodes.web-1.prot: unknown field (did you mean port?)",
        "inventory.toml: nodes.web-1.port: must be 1..65535, got 70000",
        'inventory.toml: nodes.web-1.role: unknown role "wbe" (did you mean web?)',
    ]
    assert err == "nixherd: error: 6 problems found\n"


def test_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text(BROKEN)
    assert main(["-i", str(path), "check", "--json"]) == 2
    result = jsonkit.document(capsys.readouterr().out, "check")
    assert result["ok"] is False
    assert result["problems"][0] == {
        "file": str(path),
        "path": "defaults.port",
        "message": "must be 1..65535, got 0",
    }
    assert len(result["problems"]) == 6

    assert main(["-i", str(SEED), "check", "--json", "--on", "nixos-ws"]) == 0
    assert jsonkit.document(capsys.readouterr().out, "check") == {
        "ok": True,
        "nodes": 6,
        "roles": 2,
        "selected": ["nixos-ws"],
        "problems": [],
        "eval": None,
    }


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["-i", str(tmp_path / "nope.toml"), "check"]) == 2
    out, err = capsys.readouterr()
    assert out == f"{tmp_path / 'nope.toml'}: no such file\n"
    assert err == "nixherd: error: 1 problem found\n"


@settings(max_examples=60, deadline=None)
@given(broken())
def test_hostile_inventories_through_the_cli(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inventory.toml"
        path.write_bytes(encoded(text))
        for command in (["check"], ["nodes"], ["nodes", "--json"], ["show", "x"]):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(["-i", str(path), *command])
            assert code == 2, (command, err.getvalue())
            assert "Traceback" not in err.getvalue()
            assert "internal error" not in err.getvalue()
            assert err.getvalue().startswith("nixherd: error: ")


def test_entry_point_refuses_what_would_only_break_at_run_time(tmp_path: Path) -> None:
    """Through the installed `nixherd`: check entries that used to pass and then fail mid-apply
    (after the switch) or write over each other, one of each class; exit 2, every one named."""
    from nixherd.run import process

    path = tmp_path / "inventory.toml"
    path.write_text(
        """
[nodes.a]
host = "::1"
[nodes.a.checks.slow]
command = ["true"]
interval = 1e10
[nodes.a.checks.url]
http = "http://[zz/"
[nodes.a.checks.port]
tcp = "{host}:{port}"
[nodes.b]
host = "0:0:0:0:0:0:0:1"
[nodes.c.keys.one]
env = "K"
dest = "/run/keys/a"
[nodes.c.keys.two]
env = "K"
dest = "/run/keys//a"
"""
    )
    entry = Path(sys.executable).with_name("nixherd")
    result = process.run([str(entry), "-i", str(path), "check"], check=False, timeout=60)
    assert result.returncode == 2
    assert result.stdout.splitlines() == [
        f"{path}: nodes.a.checks.slow.interval: must be 0..3600 seconds, got 10000000000.0",
        f"{path}: nodes.a.checks.url.http: not a valid URL: Invalid IPv6 URL",
        f"{path}: nodes.a.checks.port.tcp: unknown placeholder {{port}} (only {{host}} and "
        "{node} are filled in)",
        f'{path}: nodes.b: host "0:0:0:0:0:0:0:1" (port from ssh) is already used by node a',
        f"{path}: nodes.c: keys.two and keys.one both write /run/keys/a",
    ]
    assert result.stderr == "nixherd: error: 5 problems found\n"

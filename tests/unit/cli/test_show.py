"""`nixherd show NODE`: every resolved value with its origin, as text and as JSON."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jsonkit
import pytest

from nixherd.cli import main

INVENTORY = """
[defaults]
user = "deploy"
tags = ["fleet"]

[roles.web]
modules = ["web.nix"]
tags = ["http"]
vars = { nginx = { enable = true, workers = 2 } }

[[roles.web.targets]]
host = "10.0.0.1"
tags = ["eu"]
vars = { nginx = { workers = 8 }, domains = ["a.example.com"] }
ssh_options = ["ProxyJump=jump"]

[nodes.solo]
"""


@pytest.fixture(autouse=True, scope="module")
def _private_parse_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The commands' parse cache goes to a temporary directory, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NIXHERD_CACHE_DIR", str(tmp_path_factory.mktemp("parse-cache")))
        yield


@pytest.fixture
def inventory(tmp_path: Path) -> str:
    path = tmp_path / "inventory.toml"
    path.write_text(INVENTORY)
    return str(path)


def test_text(capsys: pytest.CaptureFixture[str], inventory: str) -> None:
    assert main(["-i", inventory, "show", "web-10-0-0-1"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == (
        "web-10-0-0-1 (roles.web.targets[0])\n"
        "FIELD            VALUE                        ORIGIN\n"
        "name             web-10-0-0-1                 target\n"
        "role             web                          target\n"
        "host             10.0.0.1                     target\n"
        "user             deploy                       defaults\n"
        "port             -                            default\n"
        "system           x86_64-linux                 default\n"
        "tags             fleet                        defaults\n"
        "                 http                         role\n"
        "                 eu                           target\n"
        "modules          web.nix                      role\n"
        "vars             nginx.enable = true          role\n"
        "                 nginx.workers = 8            target\n"
        '                 domains = ["a.example.com"]  target\n'
        "config           {}\n"
        "ssh_options      ProxyJump=jump               target\n"
        "host_key_policy  strict                       default\n"
        "keys             {}\n"
        "data             {}\n"
        "checks           {}\n"
        "cache            {}\n"
    )


def test_a_bare_node(capsys: pytest.CaptureFixture[str], inventory: str) -> None:
    assert main(["-i", inventory, "show", "solo"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows[:3] == [
        ["name", "solo", "node"],
        ["role", "-", "default"],
        ["host", "solo", "default"],
    ]
    assert ["modules", "[]"] in rows and ["vars", "{}"] in rows


def test_json(capsys: pytest.CaptureFixture[str], inventory: str) -> None:
    assert main(["-i", inventory, "show", "web-10-0-0-1", "--json"]) == 0
    shown = jsonkit.document(capsys.readouterr().out, "show")
    assert shown["source"] == "roles.web.targets[0]"
    assert shown["node"]["vars"] == {
        "nginx": {"enable": True, "workers": 8},
        "domains": ["a.example.com"],
    }
    assert shown["origins"]["vars"] == {
        "nginx": {"enable": "role", "workers": "target"},
        "domains": "target",
    }
    assert shown["origins"]["tags"] == ["defaults", "role", "target"]
    assert shown["origins"]["port"] == "default"
    assert set(shown["node"]) == set(shown["origins"])


def test_unknown_node_suggests_close_names(
    capsys: pytest.CaptureFixture[str], inventory: str
) -> None:
    assert main(["-i", inventory, "show", "web-10-0-0-2"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        'nixherd: error: no node named "web-10-0-0-2" in the inventory '
        "(did you mean web-10-0-0-1?)\n"
    )
    assert main(["-i", inventory, "show", "zzz"]) == 2
    assert capsys.readouterr().err == 'nixherd: error: no node named "zzz" in the inventory\n'

"""The user's ssh config is honoured (issue 15): what the inventory does not set is left to ssh
(its config file, then its defaults), the user's `ssh_options` beat nixherd's own defaults, and the
opt-in to record new host keys is spelled one way. The lab proves the same on real hosts
(tests/lab/test_ssh_config_lab.py)."""

from __future__ import annotations

import itertools
import shlex

import pytest

from nixherd.errors import InventoryError
from nixherd.inventory import loads
from nixherd.run import process
from nixherd.run.process import Result
from nixherd.run.ssh import BASE_OPTIONS, Connection, Elevation, Target
from nixherd.sshrules import OVERRIDABLE


def _values(opts: list[str], key: str) -> list[str]:
    return [
        b.split("=", 1)[1]
        for a, b in itertools.pairwise(opts)
        if a == "-o" and b.split("=", 1)[0].lower() == key.lower()
    ]


def _conn(target: Target) -> Connection:
    return Connection(target, control_dir="/tmp/nh-test")


def test_a_port_the_inventory_does_not_set_is_left_to_ssh() -> None:
    # Before: `-p 22` always, so `Port 2222` in the ssh config never counted.
    node = loads('[nodes.web-1]\nhost = "web-1"\n').nodes["web-1"]
    assert node.port is None
    for opts in (_conn(node.target).argv(["true"]), _conn(node.target).nix_sshopts().split()):
        assert "-p" not in opts
    assert _conn(node.target).argv(["true"])[-2] == "root@web-1"


def test_a_port_the_inventory_sets_is_passed_and_beats_the_config() -> None:
    node = loads("[defaults]\nport = 2201\n[nodes.a]\n").nodes["a"]
    argv = _conn(node.target).argv(["true"])
    assert argv[argv.index("-p") + 1] == "2201"
    # `port = false` on a layer gives the port back to ssh for that node.
    text = "[defaults]\nport = 2201\n[nodes.a]\nport = false\n[nodes.b]\n"
    nodes = loads(text).nodes
    assert nodes["a"].port is None and nodes["b"].port == 2201
    assert "-p" not in _conn(nodes["a"].target).argv(["true"])


def test_user_false_leaves_the_login_to_ssh() -> None:
    nodes = loads("[defaults]\nuser = false\n[nodes.a]\n[nodes.b]\nuser = 'deploy'\n").nodes
    assert nodes["a"].user is None and nodes["b"].user == "deploy"
    a = _conn(nodes["a"].target)
    assert a.argv(["true"])[-2] == "a"  # no `user@`: ssh's config (User), else the login name
    assert a.store_uri() == "ssh://a"
    assert _conn(nodes["b"].target).argv(["true"])[-2] == "deploy@b"
    # The built-in default stays root, as Colmena's targetUser.
    assert loads("[nodes.c]\n").nodes["c"].user == "root"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[nodes.a]\nuser = true\n", "nodes.a.user: must be a string or false, got boolean true"),
        ("[nodes.a]\nport = true\n", "nodes.a.port: must be an integer or false, got boolean true"),
        ("[nodes.a]\nport = 0\n", "nodes.a.port: must be 1..65535, got 0"),
    ],
)
def test_false_is_the_only_non_value(text: str, message: str) -> None:
    with pytest.raises(InventoryError) as info:
        loads(text)
    assert [p.path + ": " + p.message for p in info.value.problems] == [message]


def test_the_users_ssh_options_beat_nixherds_defaults() -> None:
    # ssh keeps the first value of an option: the user's must come before nixherd's own.
    target = Target(node="n", host="h", options=("ConnectTimeout=3", "ServerAliveInterval=30"))
    for opts in (_conn(target).argv(["true"]), _conn(target).nix_sshopts().split()):
        assert _values(opts, "ConnectTimeout")[0] == "3"
        assert _values(opts, "ServerAliveInterval")[0] == "30"
        assert _values(opts, "ServerAliveCountMax") == ["3"]  # nixherd's, not overridden
        # ...and host-key checking stays the first of all, nothing can come before it.
        first = opts.index("-o")
        assert opts[first + 1] == "StrictHostKeyChecking=yes"


def test_overridable_options_are_exactly_the_base_options_but_batchmode() -> None:
    keys = {option.split("=", 1)[0].lower() for option in BASE_OPTIONS}
    assert OVERRIDABLE | {"batchmode"} == keys


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            "StrictHostKeyChecking=accept-new",
            'StrictHostKeyChecking may not be set: use host_key_policy = "accept-new"',
        ),
        (
            "StrictHostKeyChecking=no",
            'StrictHostKeyChecking may not be set: use host_key_policy = "accept-new"',
        ),
        ("BatchMode=no", "BatchMode may not be set: nixherd never prompts"),
    ],
)
def test_refused_options_point_at_the_right_setting(option: str, message: str) -> None:
    with pytest.raises(InventoryError) as info:
        loads(f"[nodes.a]\nssh_options = [{option!r}]\n")
    (problem,) = info.value.problems
    assert problem.path == "nodes.a.ssh_options[0]"
    assert problem.message.startswith(message)


def _fake_ssh_g(monkeypatch: pytest.MonkeyPatch, out: str) -> list[list[str]]:
    calls: list[list[str]] = []

    def run(argv: list[str], **_: object) -> Result:
        calls.append(list(argv))
        return Result(tuple(argv), 0, out, "")

    monkeypatch.setattr(process, "run", run)
    return calls


def test_sudo_when_ssh_config_names_a_user_other_than_root(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_ssh_g(monkeypatch, "user deploy\nhostname 127.0.0.1\nport 2222\n")
    c = _conn(Target(node="n", host="alias", user=None, ssh_config="/lab/cfg", options=("A=b",)))
    assert c.elevation is Elevation.SUDO
    assert shlex.split(c.argv(["id"], elevate=True)[-1]) == ["sudo", "-n", "--", "id"]
    # `ssh -G` with the node's own config and options, asked once per connection.
    assert len(calls) == 1
    (argv,) = calls
    assert argv[:2] == ["ssh", "-G"] and argv[-2:] == ["--", "alias"]
    assert argv[argv.index("-F") + 1] == "/lab/cfg" and "A=b" in argv


def test_no_sudo_when_ssh_config_logs_in_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ssh_g(monkeypatch, "user root\nhostname h\nport 22\n")
    c = _conn(Target(node="n", host="alias", user=None))
    assert c.elevation is Elevation.NONE
    assert shlex.split(c.argv(["id"], elevate=True)[-1]) == ["id"]


def test_a_known_user_never_asks_ssh(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_ssh_g(monkeypatch, "")
    assert _conn(Target(node="n", host="h", user="deploy")).elevation is Elevation.SUDO
    assert _conn(Target(node="n", host="h")).elevation is Elevation.NONE
    assert calls == []


def test_describe_copes_with_ssh_deciding() -> None:
    assert Target(node="n", host="h", port=2222).describe() == "root@h port 2222"
    assert Target(node="n", host="alias", user=None).describe() == "alias (port from ssh)"


def test_nodes_shows_what_ssh_decides_without_asking_it() -> None:
    from nixherd.inventory.model import Node

    node = loads("[defaults]\nuser = false\n[nodes.a]\n").nodes["a"]
    assert isinstance(node, Node)
    assert node.summary()["port"] is None and node.summary()["user"] is None

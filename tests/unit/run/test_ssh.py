"""ssh.py: argv built at the one quoting boundary, unsafe values refused, NIX_SSHOPTS."""

from __future__ import annotations

import itertools
import shlex

import pytest

from nixherd.errors import InventoryError, UsageError
from nixherd.inventory import loads
from nixherd.run.ssh import Connection, Elevation, Target


def conn(**kw: object) -> Connection:
    fields: dict[str, object] = {"node": "web-1", "host": "203.0.113.7"}
    fields.update(kw)
    return Connection(Target(**fields), control_dir="/tmp/nh-test")  # type: ignore[arg-type]


def test_argv_shape_and_single_quoting() -> None:
    c = conn(user="deploy", port=2222, ssh_config="/etc/lab/ssh_config")
    argv = c.argv(["echo", "a b", "$(touch /tmp/pwned)", "x;y"])
    assert argv[:3] == ["ssh", "-T", "-x"]
    assert argv[argv.index("-F") + 1] == "/etc/lab/ssh_config"
    assert argv[argv.index("-p") + 1] == "2222"
    dash = argv.index("--")
    assert argv[dash + 1] == "deploy@203.0.113.7"
    assert len(argv) == dash + 3
    # The remote shell sees exactly the words we meant, nothing expanded.
    assert shlex.split(argv[-1]) == ["echo", "a b", "$(touch /tmp/pwned)", "x;y"]


def _values(opts: list[str], key: str) -> list[str]:
    """The values given to `-o key=...` in an ssh argv, in order."""
    return [
        b.split("=", 1)[1]
        for a, b in itertools.pairwise(opts)
        if a == "-o" and b.split("=", 1)[0] == key
    ]


def test_host_keys_are_verified_whatever_the_ssh_config_says() -> None:
    # ssh takes the first value it obtains and the command line comes before any config file:
    # `-o StrictHostKeyChecking=yes` in argv beats `StrictHostKeyChecking no` in an ssh_config.
    c = conn(ssh_config="/lab/ssh_config")
    for opts in (c.argv(["true"]), c.argv(["true"], multiplex=False), c.nix_sshopts().split()):
        assert _values(opts, "StrictHostKeyChecking") == ["yes"]
    assert "BatchMode=yes" in c.argv(["true"])


def test_accept_new_only_when_the_inventory_opts_in() -> None:
    c = conn(host_key_policy="accept-new")
    for opts in (c.argv(["true"]), c.nix_sshopts().split()):
        assert _values(opts, "StrictHostKeyChecking") == ["accept-new"]


@pytest.mark.parametrize("policy", ["no", "off", "yes", "ask", "", "accept-new ", "Strict"])
def test_other_host_key_policies_are_refused(policy: str) -> None:
    with pytest.raises(UsageError, match="host_key_policy"):
        Target(node="n", host="h", host_key_policy=policy)


def test_multiplexing_on_by_default_and_off_for_a_new_connection() -> None:
    c = conn()
    shared = c.argv(["true"])
    assert "ControlMaster=auto" in shared
    assert f"ControlPath={c.control_path}" in shared
    fresh = c.argv(["true"], multiplex=False)
    assert "ControlPath=none" in fresh and "ControlMaster=no" in fresh


def test_control_path_is_short_enough_for_a_unix_socket() -> None:
    c = Connection(Target(node="n", host="a" * 200))
    try:
        assert len(c.control_path) < 100
    finally:
        c.close()


def test_sudo_only_for_non_root_and_only_when_asked() -> None:
    root = conn()
    assert root.target.elevation is Elevation.NONE
    assert shlex.split(root.argv(["id"], elevate=True)[-1]) == ["id"]
    user = conn(user="deploy")
    assert shlex.split(user.argv(["id"], elevate=True)[-1]) == ["sudo", "-n", "--", "id"]
    assert shlex.split(user.argv(["id"])[-1]) == ["id"]


@pytest.mark.parametrize(
    "host",
    ["-oProxyCommand=touch /tmp/x", "a;b", "a b", "a\nb", "$(x)", "", "a`b`", "-p1"],
)
def test_hostile_hosts_are_refused(host: str) -> None:
    with pytest.raises(UsageError):
        Target(node="n", host=host)


@pytest.mark.parametrize("user", ["-oProxyCommand=x", "ro ot", "a;b", "", "x" * 40])
def test_hostile_users_are_refused(user: str) -> None:
    with pytest.raises(UsageError):
        Target(node="n", host="h", user=user)


@pytest.mark.parametrize(
    "option",
    [
        "StrictHostKeyChecking=no",
        "stricthostkeychecking=accept-new",
        "UserKnownHostsFile=/dev/null",
        "GlobalKnownHostsFile=/tmp/mine",
        "KnownHostsCommand=/bin/echo",
        "VerifyHostKeyDNS=yes",
        "HostKeyAlias=other",
        "ControlPath=/tmp/x",
        "ControlMaster=yes",
        "ControlPersist=yes",
        "LocalCommand=x",
        "PermitLocalCommand=yes",
        "ProxyCommand=/bin/nc",
        "a b",
        "=x",
    ],
)
def test_options_that_weaken_or_inject_are_refused(option: str) -> None:
    with pytest.raises(UsageError):
        Target(node="n", host="h", options=(option,))


def test_accepted_targets() -> None:
    for host in ["10.0.0.1", "web-1.example.com", "::1", "fe80::1%eth0", "lab_1"]:
        Target(node="n", host=host)
    t = Target(node="n", host="h", options=("Compression=yes", "ProxyJump=bastion"))
    argv = Connection(t, control_dir="/tmp/nh-x").argv(["true"])
    assert "ProxyJump=bastion" in argv


def test_nix_sshopts_carry_the_same_options() -> None:
    c = conn(port=2201, ssh_config="/lab/ssh_config")
    opts = c.nix_sshopts().split()
    assert opts == c.options()
    assert c.nix_env()["NIX_SSHOPTS"] == c.nix_sshopts()
    assert c.store_uri() == "ssh://root@203.0.113.7"
    assert c.store_uri("ssh-ng") == "ssh-ng://root@203.0.113.7"


def test_ssh_config_with_whitespace_is_refused() -> None:
    with pytest.raises(UsageError):
        Target(node="n", host="h", ssh_config="/a b/ssh_config")


POLICY_INVENTORY = """
[defaults]
host_key_policy = "strict"

[roles.web]
host_key_policy = "accept-new"

[[roles.web.targets]]
host = "10.0.0.1"

[[roles.web.targets]]
host = "10.0.0.2"
host_key_policy = "strict"

[nodes.db]
"""


def test_host_key_policy_resolves_like_any_scalar_and_reaches_the_argv() -> None:
    nodes = loads(POLICY_INVENTORY).nodes
    policies = {name: node.host_key_policy for name, node in nodes.items()}
    assert policies == {"web-10-0-0-1": "accept-new", "web-10-0-0-2": "strict", "db": "strict"}
    for name, expected in [("web-10-0-0-1", "accept-new"), ("web-10-0-0-2", "yes")]:
        c = Connection(nodes[name].target, control_dir="/tmp/nh-test")
        assert _values(c.argv(["true"]), "StrictHostKeyChecking") == [expected]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[defaults]\nhost_key_policy = "no"\n',
            'inventory.toml: defaults.host_key_policy: must be "strict" or "accept-new", '
            'got string "no"',
        ),
        (
            "[nodes.a]\nssh_options = ['KnownHostsCommand=/bin/true']\n",
            "inventory.toml: nodes.a.ssh_options[0]: KnownHostsCommand may not be set: "
            "nixherd always verifies host keys",
        ),
        (
            "[nodes.a]\nssh_options = ['controlpath=/tmp/mine']\n",
            "inventory.toml: nodes.a.ssh_options[0]: controlpath may not be set: "
            "nixherd runs its own ControlMaster (and stops it, even when killed)",
        ),
    ],
)
def test_the_inventory_names_a_refused_policy_or_option(text: str, message: str) -> None:
    with pytest.raises(InventoryError) as info:
        loads(text)
    assert [str(p) for p in info.value.problems] == [message]

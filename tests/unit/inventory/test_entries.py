"""The typed entries of keys, data and checks: built once by the resolver, with the defaults their
dataclasses declare, shown as declared."""

from __future__ import annotations

from nixherd.inventory import loads
from nixherd.inventory.entries import (
    CheckKind,
    DataFile,
    Format,
    HealthCheck,
    Key,
    SourceKind,
    Upload,
)

FLEET = """
[roles.web]
keys.token = { env = "TOKEN" }
data.conf = { path = "/etc/app/conf.json", source = "app" }
checks.site = { http = "http://{host}/" }
[[roles.web.targets]]
host = "10.0.0.1"
[[roles.web.targets]]
host = "10.0.0.2"
[[roles.web.targets]]
host = "10.0.0.3"
checks.site = { http = "http://{host}:8080/", retries = 0 }
"""


def test_entries_carry_their_declared_defaults() -> None:
    node = loads(FLEET).nodes["web-10-0-0-1"]
    assert node.keys == {
        "token": Key("token", SourceKind.ENV, ("TOKEN",), "/run/keys/token"),
    }
    token = node.keys["token"]
    assert (token.user, token.group, token.mode, token.upload) == (
        "root",
        "root",
        0o400,
        Upload.PRE,
    )
    conf = node.data["conf"]
    assert conf == DataFile("conf", "/etc/app/conf.json", source="app")
    assert (conf.format, conf.mode, conf.reload) == (Format.JSON, 0o644, ())
    assert node.checks == {"site": HealthCheck("site", CheckKind.HTTP, url="http://{host}/")}


def test_a_role_s_entries_are_built_once_and_a_target_s_own_apart() -> None:
    nodes = loads(FLEET).nodes
    one, two, three = (nodes[f"web-10-0-0-{i}"] for i in (1, 2, 3))
    # The targets without their own checks share the role's merged table: one build for all.
    assert one.checks["site"] is two.checks["site"]
    assert one.keys["token"] is two.keys["token"] is three.keys["token"]
    # A target that replaces an entry gets its own, never the role's.
    assert three.checks["site"].url == "http://{host}:8080/"
    assert three.checks["site"].retries == 0 and one.checks["site"].retries == 2


def test_deployer_data_shows_the_entries_as_declared() -> None:
    node = loads(FLEET).nodes["web-10-0-0-3"]
    data = node.to_data(deployer=True)
    assert data["keys"] == {"token": {"env": "TOKEN"}}
    assert data["data"] == {"conf": {"path": "/etc/app/conf.json", "source": "app"}}
    assert data["checks"] == {"site": {"http": "http://{host}:8080/", "retries": 0}}
    assert not {"keys", "data", "checks"} & set(node.to_data())

"""The hive-to-inventory conversion (pure data in, TOML text out) and the TOML header scanner
the in-place edits rely on."""

from __future__ import annotations

from typing import Any

from nixherd.inventory import loads
from nixherd.inventory.from_colmena import convert
from nixherd.inventory.tomltext import find_headers, lines_of

ROOT = "/nix/store/0000000000000000000000000000000a-source"


def node(host: str | None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "targetHost": host,
        "targetUser": "root",
        "targetPort": None,
        "tags": [],
        "sshOptions": [],
        "keys": [],
        "imports": [],
        "own": {"data": {}, "skipped": []},
    }
    data.update(extra)
    return data


def hive(nodes: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"source": "colmena", "root": ROOT, "nodes": nodes, "meta": meta}


def mod(path: str) -> list[dict[str, str]]:
    return [{"file": f"{ROOT}/{path}"}]


def test_ssh_options_become_ssh_options_or_are_listed() -> None:
    words = ["-o", "ConnectTimeout=5", "-oCompression=yes", "-J", "jump", "-i", "/k", "-v"]
    words += ["-o", "StrictHostKeyChecking=no", "-o", "ServerAliveInterval 9"]
    result = convert(hive({"a": node("10.0.0.1", sshOptions=words)}), origin="x")
    inventory = loads(result.text)
    assert inventory.nodes["a"].ssh_options == (
        "ConnectTimeout=5",
        "Compression=yes",
        "ProxyJump=jump",
        "IdentityFile=/k",
        "ServerAliveInterval=9",
    )
    assert 'a: deployment.sshOptions word "-v" (no ssh_options form)' in result.not_carried
    assert any("StrictHostKeyChecking=no" in line for line in result.not_carried)


def test_nodes_an_inventory_cannot_hold_are_listed_not_written() -> None:
    result = convert(
        hive(
            {
                "10-0-0-9": node("10.0.0.9"),
                "local": node(None),
                "evil": node("-oProxyCommand=x"),
                "twin": node("10.0.0.1"),
                "first": node("10.0.0.1"),
                "nouser": node("10.0.0.2", targetUser=None),
                "bad\nkey": node("10.0.0.3"),
            }
        ),
        origin="x",
    )
    assert sorted(loads(result.text).nodes) == ["first", "nouser"]
    lost = "\n".join(result.not_carried)
    assert "10-0-0-9: not imported: " in lost
    assert "local: not imported: targetHost is null" in lost
    assert "evil: not imported: targetHost: must be a hostname" in lost
    assert "twin: not imported: same host and port as first" in lost
    assert loads(result.text).nodes["nouser"].user is None  # `user = false`: ssh decides
    # A hostile name is quoted back escaped: it cannot end the comment line it is listed on.
    assert '"bad\\nkey": not imported' in lost
    assert all("\n" not in line for line in result.not_carried)
    assert result.text.count("\n#   - ") == len(result.not_carried)


def test_same_imports_make_a_role_and_fan_out_names_its_targets() -> None:
    result = convert(
        hive(
            {
                "web-10-0-0-1": node("10.0.0.1", tags=["web", "a"], imports=mod("hosts/web")),
                "web-10-0-0-2": node("10.0.0.2", tags=["web"], imports=mod("hosts/web")),
                "front": node("192.0.2.1", tags=["web", "edge"], imports=mod("hosts/web")),
                "db1": node("10.1.0.1", imports=mod("roles/db/default.nix"), targetPort=2222),
                "db2": node("10.1.0.2", imports=mod("roles/db/default.nix")),
                "solo": node("10.2.0.1", imports=mod("solo.nix"), targetUser="ops"),
                "inline": node("10.3.0.1", imports=[{"inline": "lambda"}]),
            }
        ),
        origin="x",
    )
    inventory = loads(result.text)
    assert '  { host = "10.0.0.1", tags = ["a"] },\n' in result.text
    web = inventory.nodes["web-10-0-0-1"]
    assert (web.role, web.tags, web.source) == ("web", ("web", "a"), "roles.web.targets[0]")
    assert inventory.nodes["front"].role == "web"
    assert inventory.nodes["front"].tags == ("web", "edge")
    # No fan-out shape: the role is named after its module, the nodes are explicit.
    assert inventory.nodes["db1"].role == "db"
    assert inventory.nodes["db1"].port == 2222
    assert inventory.nodes["db2"].source == "nodes.db2"
    solo = inventory.nodes["solo"]
    assert (solo.role, solo.modules, solo.user) == (None, ("solo.nix",), "ops")
    assert inventory.nodes["inline"].modules == ()
    assert any(line.startswith("inline: an import that is no file") for line in result.not_carried)


def test_own_settings_keys_and_meta() -> None:
    data = node(
        "10.0.0.1",
        keys=["token"],
        own={"data": {"networking": {"hostName": "a"}}, "skipped": ["services"]},
        buildOnTarget=True,
        nodeSpecialArgs=["rack"],
    )
    result = convert(
        hive({"a": data}, nixpkgs=True, specialArgs=["inputs"], other=["machinesFile"]),
        origin="x",
    )
    assert loads(result.text).nodes["a"].config == {"networking": {"hostName": "a"}}
    lost = "\n".join(result.not_carried)
    for expected in [
        "meta.nixpkgs: pass `nixpkgs` to mkFleet",
        "meta.specialArgs.inputs",
        "meta.machinesFile",
        "a: deployment.keys.token: add it as a key",
        'a: its own setting "services" is no plain data',
        "a: deployment.buildOnTarget",
        "a: meta.nodeSpecialArgs.rack",
    ]:
        assert expected in lost


def test_the_header_scanner_ignores_brackets_in_strings_and_arrays() -> None:
    text = (
        "[a]\n"
        'x = """\n'
        "[not.a.header]\n"
        '"""\n'
        "y = [\n"
        "  [1, 2],\n"
        "]\n"
        "z = '''\n"
        "[[nor.this]]'''\n"
        '[nodes."a]b".c]  # a comment [x]\n'
        'w = "[quoted"\n'
        "[[roles.r.targets]]\n"
    )
    found = [(h.line, h.path, h.array) for h in find_headers(lines_of(text))]
    assert found == [
        (0, ("a",), False),
        (9, ("nodes", "a]b", "c"), False),
        (11, ("roles", "r", "targets"), True),
    ]

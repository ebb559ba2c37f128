"""Validation: every rule of docs/inventory.md, with the exact message each problem gets."""

from __future__ import annotations

import re

import pytest
from connkit import problems
from hypothesis import given
from hypothesis import strategies as st

from nixherd.errors import InventoryError
from nixherd.inventory import loads
from nixherd.inventory.validate import MAX_DEPTH, peer_name_problem

NAME_RULE = "matching [A-Za-z0-9][A-Za-z0-9_.-]* (at most 63 characters)"
HIVE_KEY = (
    '"%s" is a name Colmena keeps for the hive itself (defaults, meta, network): rename the node'
)
NO_LETTER_REASON = "deploy-rs's schema (interface.json) refuses a node name without a letter or _"
NO_LETTER = f'"%s": {NO_LETTER_REASON}: rename the node'

HOST_RULE = "must be a hostname, an IPv4 or an IPv6 address"


# (inventory text, every problem line expected, in order)
CASES: list[tuple[str, str, list[str]]] = [
    (
        "unknown field, with a suggestion",
        "[nodes.web-1]\nprot = 22\n",
        ["inventory.toml: nodes.web-1.prot: unknown field (did you mean port?)"],
    ),
    (
        "unknown field, nothing close",
        "[nodes.web-1]\ncolour = 'red'\n",
        ["inventory.toml: nodes.web-1.colour: unknown field"],
    ),
    (
        "unknown top-level table",
        "[node.web-1]\nhost = 'a'\n",
        ["inventory.toml: node: unknown field (did you mean nodes?)"],
    ),
    (
        "port out of range",
        "[nodes.web-1]\nport = 70000\n",
        ["inventory.toml: nodes.web-1.port: must be 1..65535, got 70000"],
    ),
    (
        "port zero",
        "[nodes.web-1]\nport = 0\n",
        ["inventory.toml: nodes.web-1.port: must be 1..65535, got 0"],
    ),
    (
        "a boolean is not an integer",
        "[nodes.web-1]\nport = true\n",
        ["inventory.toml: nodes.web-1.port: must be an integer or false, got boolean true"],
    ),
    (
        "a string is not an integer",
        "[nodes.web-1]\nport = '22'\n",
        ['inventory.toml: nodes.web-1.port: must be an integer or false, got string "22"'],
    ),
    (
        "port in defaults",
        "[defaults]\nport = 99999\n",
        ["inventory.toml: defaults.port: must be 1..65535, got 99999"],
    ),
    (
        "tags must be an array",
        "[nodes.a]\ntags = 'web'\n",
        ['inventory.toml: nodes.a.tags: must be an array, got string "web"'],
    ),
    (
        "vars must be a table",
        "[roles.r]\nvars = [1]\n",
        ["inventory.toml: roles.r.vars: must be a table, got array"],
    ),
    (
        "unknown role, with a suggestion",
        "[roles.web]\n[nodes.a]\nrole = 'wbe'\n",
        ['inventory.toml: nodes.a.role: unknown role "wbe" (did you mean web?)'],
    ),
    (
        "unknown role, no roles at all",
        "[nodes.a]\nrole = 'web'\n",
        ['inventory.toml: nodes.a.role: unknown role "web" (no roles are defined)'],
    ),
    (
        "duplicate names from two targets",
        "[[roles.web.targets]]\nhost = '10.0.0.1'\n[[roles.web.targets]]\nhost = '10.0.0.1'\n",
        [
            'inventory.toml: roles.web.targets[1]: node name "web-10-0-0-1" is already used '
            "by roles.web.targets[0]"
        ],
    ),
    (
        "a target's name colliding with an explicit node",
        "[nodes.web-10-0-0-1]\nhost = '10.9.9.9'\n[[roles.web.targets]]\nhost = '10.0.0.1'\n",
        [
            'inventory.toml: nodes.web-10-0-0-1: node name "web-10-0-0-1" is already used '
            "by roles.web.targets[0]"
        ],
    ),
    (
        "a target's explicit name colliding with an explicit node",
        "[nodes.db]\n[[roles.web.targets]]\nhost = '10.0.0.1'\nname = 'db'\n",
        ['inventory.toml: nodes.db: node name "db" is already used by roles.web.targets[0]'],
    ),
    (
        "two nodes on the same host and port",
        "[nodes.a]\nhost = '10.0.0.1'\n[nodes.b]\nhost = '10.0.0.1'\n",
        ['inventory.toml: nodes.b: host "10.0.0.1" (port from ssh) is already used by node a'],
    ),
    (
        "the same host under two spellings of its case",
        "[nodes.a]\nhost = 'Web.example.com'\n[nodes.b]\nhost = 'web.EXAMPLE.com'\n",
        [
            'inventory.toml: nodes.b: host "web.EXAMPLE.com"'
            " (port from ssh) is already used by node a"
        ],
    ),
    (
        "a host defaulting to a name used as another node's host",
        "[nodes.a]\nhost = 'b'\n[nodes.b]\n",
        ['inventory.toml: nodes.b: host "b" (port from ssh) is already used by node a'],
    ),
    (
        "host starting with a dash",
        "[nodes.a]\nhost = '-oProxyCommand=x'\n",
        [f'inventory.toml: nodes.a.host: {HOST_RULE}, got "-oProxyCommand=x"'],
    ),
    (
        "host with a shell metacharacter",
        "[nodes.a]\nhost = 'a;b'\n",
        [f'inventory.toml: nodes.a.host: {HOST_RULE}, got "a;b"'],
    ),
    (
        "host with whitespace",
        "[nodes.a]\nhost = 'a b'\n",
        [f'inventory.toml: nodes.a.host: {HOST_RULE}, got "a b"'],
    ),
    (
        "host with a newline (shown escaped)",
        '[nodes.a]\nhost = "a\\nb"\n',
        [f'inventory.toml: nodes.a.host: {HOST_RULE}, got "a\\nb"'],
    ),
    (
        "host not an IPv6 address although it has colons",
        "[nodes.a]\nhost = '1:2:3'\n",
        [f'inventory.toml: nodes.a.host: {HOST_RULE}, got "1:2:3"'],
    ),
    (
        "host too long",
        "[nodes.a]\nhost = '" + "a." * 127 + "a'\n",
        ["inventory.toml: nodes.a.host: must be at most 253 characters, got 255"],
    ),
    (
        "host in defaults",
        "[defaults]\nhost = 'x'\n",
        [
            "inventory.toml: defaults.host: not allowed in [defaults] "
            "(only in [[roles.<role>.targets]], [nodes.<name>])"
        ],
    ),
    (
        "host in a role",
        "[roles.r]\nhost = 'x'\n",
        [
            "inventory.toml: roles.r.host: not allowed in [roles.<role>] "
            "(only in [[roles.<role>.targets]], [nodes.<name>])"
        ],
    ),
    (
        "user starting with a dash",
        "[nodes.a]\nuser = '-oProxyCommand=x'\n",
        [
            "inventory.toml: nodes.a.user: must be a login name matching "
            '[A-Za-z_][A-Za-z0-9_.-]*, got "-oProxyCommand=x"'
        ],
    ),
    (
        "user with a command substitution",
        "[defaults]\nuser = 'root$(id)'\n",
        [
            "inventory.toml: defaults.user: must be a login name matching "
            '[A-Za-z_][A-Za-z0-9_.-]*, got "root$(id)"'
        ],
    ),
    (
        "user too long",
        "[nodes.a]\nuser = '" + "u" * 33 + "'\n",
        ["inventory.toml: nodes.a.user: must be at most 32 characters, got 33"],
    ),
    (
        "node name with a space",
        "[nodes.'a b']\n",
        [f'inventory.toml: nodes."a b": must be a node name {NAME_RULE}, got "a b"'],
    ),
    (
        "node name starting with a dash",
        "[nodes.-x]\nhost = 'x'\n",
        [f'inventory.toml: nodes.-x: must be a node name {NAME_RULE}, got "-x"'],
    ),
    (
        "role name with a shell metacharacter",
        "[roles.'a|b']\n",
        [f'inventory.toml: roles."a|b": must be a role name {NAME_RULE}, got "a|b"'],
    ),
    (
        "tag with a space, reported at its index",
        "[nodes.a]\ntags = ['ok', 'not ok']\n",
        [f'inventory.toml: nodes.a.tags[1]: must be a tag {NAME_RULE}, got "not ok"'],
    ),
    (
        "tag of the wrong type",
        "[roles.r]\ntags = [1]\n",
        ["inventory.toml: roles.r.tags[0]: must be a string, got integer 1"],
    ),
    (
        "system without an os",
        "[defaults]\nsystem = 'x86_64'\n",
        [
            "inventory.toml: defaults.system: must be a system like x86_64-linux "
            '([a-z0-9_]+-[a-z0-9_]+), got "x86_64"'
        ],
    ),
    (
        "empty module path",
        "[roles.r]\nmodules = ['']\n",
        [
            "inventory.toml: roles.r.modules[0]: must be a non-empty path without NUL or "
            'newline, got ""'
        ],
    ),
    (
        "module path with a newline",
        '[roles.r]\nmodules = ["a\\nb"]\n',
        [
            "inventory.toml: roles.r.modules[0]: must be a non-empty path without NUL or "
            'newline, got "a\\nb"'
        ],
    ),
    (
        "ssh option without a value",
        "[nodes.a]\nssh_options = ['ProxyJump jump']\n",
        [
            "inventory.toml: nodes.a.ssh_options[0]: must be Key=Value (Key letters only, "
            'no whitespace), got "ProxyJump jump"'
        ],
    ),
    (
        "ssh option weakening host-key checking",
        "[defaults]\nssh_options = ['StrictHostKeyChecking=no']\n",
        [
            "inventory.toml: defaults.ssh_options[0]: StrictHostKeyChecking may not be set: "
            'use host_key_policy = "accept-new" (for the node, its role or [defaults]) to '
            "record a new host's key on first contact; host keys are always verified, never "
            "`no` or `off`"
        ],
    ),
    (
        "ssh_config outside defaults",
        "[nodes.a]\nssh_config = 'x'\n",
        ["inventory.toml: nodes.a.ssh_config: not allowed in [nodes.<name>] (only in [defaults])"],
    ),
    (
        "ssh_config with whitespace",
        "[defaults]\nssh_config = 'my ssh config'\n",
        [
            "inventory.toml: defaults.ssh_config: must be a path without whitespace, "
            'got "my ssh config"'
        ],
    ),
    (
        "role in a role",
        "[roles.r]\nrole = 'x'\n",
        ["inventory.toml: roles.r.role: not allowed in [roles.<role>] (only in [nodes.<name>])"],
    ),
    (
        "name in an explicit node",
        "[nodes.a]\nname = 'b'\n",
        [
            "inventory.toml: nodes.a.name: not allowed in [nodes.<name>] "
            "(only in [[roles.<role>.targets]])"
        ],
    ),
    (
        "target without a host",
        "[[roles.r.targets]]\nname = 'a'\n",
        ["inventory.toml: roles.r.targets[0]: host is required"],
    ),
    (
        "targets that are not tables",
        "[roles.r]\ntargets = ['10.0.0.1']\n",
        [
            "inventory.toml: roles.r.targets: must be an array of tables "
            "([[roles.<role>.targets]]), got array"
        ],
    ),
    (
        "a name made from role and host that is too long",
        "[[roles.r.targets]]\nhost = '" + "h" * 63 + "'\n",
        [
            'inventory.toml: roles.r.targets[0]: the node name made from role and host, "r-'
            + "h" * 46
            + '...", is not a valid name: set `name`'
        ],
    ),
    (
        "defaults not a table",
        "defaults = 5\n",
        ["inventory.toml: defaults: must be a table, got integer 5"],
    ),
    (
        "a node not a table",
        "[nodes]\na = 1\n",
        ["inventory.toml: nodes.a: must be a table, got integer 1"],
    ),
    (
        "integer beyond 64 bits in vars",
        "[nodes.a]\nvars = { n = 99999999999999999999 }\n",
        [
            "inventory.toml: nodes.a.vars.n: integer out of the 64-bit range, "
            "got 99999999999999999999"
        ],
    ),
    (
        "date-time in config, deep down",
        "[nodes.a.config.x]\nwhen = 1979-05-27T07:32:00Z\n",
        [
            "inventory.toml: nodes.a.config.x.when: date-time values are not supported "
            "(Nix cannot read them)"
        ],
    ),
    (
        "infinity in a list in vars",
        "[roles.r]\nvars = { xs = [1.0, inf] }\n",
        ["inventory.toml: roles.r.vars.xs[1]: must be a finite number, got inf"],
    ),
    (
        "NUL in a vars string and key",
        '[nodes.a]\nvars = { s = "a\\u0000b", "k\\u0000" = 1 }\n',
        [
            "inventory.toml: nodes.a.vars.s: strings may not contain NUL (Nix would cut them "
            "short)",
            'inventory.toml: nodes.a.vars."k\\u0000": keys may not contain NUL',
        ],
    ),
    (
        "two keys of one node writing one file (one by default dest), across layers",
        '[roles.r.keys.token]\nenv = "T"\n'
        '[nodes.a]\nrole = "r"\n[nodes.a.keys.other]\nenv = "O"\ndest = "/run/keys/token"\n',
        ["inventory.toml: nodes.a: keys.other and keys.token both write /run/keys/token"],
    ),
    (
        "a data file and a key writing one file",
        '[nodes.a.keys.k]\nenv = "K"\ndest = "/etc/app/conf"\n'
        '[nodes.a.data.d]\npath = "/etc/app/conf"\nformat = "json"\n',
        ["inventory.toml: nodes.a: data.d and keys.k both write /etc/app/conf"],
    ),
    (
        "two keys writing one file, spelled differently (// and /./)",
        '[nodes.a.keys.k1]\nenv = "K"\ndest = "/run/keys/a"\n'
        '[nodes.a.keys.k2]\nenv = "K"\ndest = "/run/keys//a"\n'
        '[nodes.b.keys.k1]\nenv = "K"\ndest = "/run/keys/a"\n'
        '[nodes.b.keys.k2]\nenv = "K"\ndest = "/run/keys/./a"\n'
        '[nodes.c.keys.a]\nenv = "K"\n'
        '[nodes.c.keys.k2]\nenv = "K"\ndest = "//run/keys/x/../a"\n',
        [
            "inventory.toml: nodes.a: keys.k2 and keys.k1 both write /run/keys/a",
            "inventory.toml: nodes.b: keys.k2 and keys.k1 both write /run/keys/a",
            "inventory.toml: nodes.c: keys.k2 and keys.a both write /run/keys/a",
        ],
    ),
    (
        "a key or data path that names a directory (the file would land inside it)",
        '[nodes.a.keys.k]\nenv = "K"\ndest = "/run/keys/."\n'
        '[nodes.a.data.d]\npath = "/etc/app/.."\n',
        [
            "inventory.toml: nodes.a.keys.k.dest: must name a file, not a directory (it ends in "
            '/.), got "/run/keys/."',
            "inventory.toml: nodes.a.data.d.path: must name a file, not a directory (it ends in "
            '/..), got "/etc/app/.."',
        ],
    ),
    (
        "a data file written where another keeps its previous copy",
        '[nodes.a.data.conf]\npath = "/etc/app/conf"\n'
        '[nodes.a.data.other]\npath = "/etc/app/conf.nixherd-prev"\n'
        '[nodes.b.data.other]\npath = "/etc/app//conf.nixherd-prev"\n'
        '[nodes.b.data.conf]\npath = "/etc/app/conf"\n'
        '[nodes.c.keys.k]\nenv = "K"\ndest = "/etc/app/conf.nixherd-prev"\n'
        '[nodes.c.data.conf]\npath = "/etc/app/./conf"\n',
        [
            "inventory.toml: nodes.a: data.other and the backup of data.conf both write "
            "/etc/app/conf.nixherd-prev",
            "inventory.toml: nodes.b: the backup of data.conf and data.other both write "
            "/etc/app/conf.nixherd-prev",
            "inventory.toml: nodes.c: the backup of data.conf and keys.k both write "
            "/etc/app/conf.nixherd-prev",
        ],
    ),
    (
        "one IPv6 address spelled twice",
        '[nodes.a]\nhost = "::1"\n[nodes.b]\nhost = "0:0:0:0:0:0:0:1"\n'
        '[nodes.c]\nhost = "2001:db8::1"\nport = 2\n'
        '[nodes.d]\nhost = "2001:DB8:0::0:1"\nport = 2\n',
        [
            'inventory.toml: nodes.b: host "0:0:0:0:0:0:0:1"'
            " (port from ssh) is already used by node a",
            'inventory.toml: nodes.d: host "2001:DB8:0::0:1" port 2 is already used by node c',
        ],
    ),
    (
        "one IPv4 address or host name spelled twice",
        '[nodes.a]\nhost = "127.0.0.1"\n[nodes.b]\nhost = "127.1"\n'
        '[nodes.c]\nhost = "127.0.0.01"\n[nodes.d]\nhost = "::ffff:127.0.0.1"\n'
        '[nodes.e]\nhost = "web.example.com"\n[nodes.f]\nhost = "Web.Example.Com."\n',
        [
            'inventory.toml: nodes.b: host "127.1" (port from ssh) is already used by node a',
            'inventory.toml: nodes.c: host "127.0.0.01" (port from ssh) is already used by node a',
            'inventory.toml: nodes.d: host "::ffff:127.0.0.1"'
            " (port from ssh) is already used by node a",
            'inventory.toml: nodes.f: host "Web.Example.Com."'
            " (port from ssh) is already used by node e",
        ],
    ),
    (
        "check numbers out of bounds: they would overflow after the switch",
        "[nodes.a.checks.c]\ncommand = ['true']\ninterval = 1e10\ntimeout = 1e308\n"
        "[nodes.a.checks.d]\ncommand = ['true']\ninterval = nan\ntimeout = inf\n"
        "[nodes.a.checks.e]\ncommand = ['true']\ninterval = -1\ntimeout = 0\nretries = 1001\n",
        [
            "inventory.toml: nodes.a.checks.c.timeout: must be 0.01..3600 seconds, got 1e+308",
            "inventory.toml: nodes.a.checks.c.interval: must be 0..3600 seconds, got 10000000000.0",
            "inventory.toml: nodes.a.checks.d.timeout: must be 0.01..3600 seconds, got inf",
            "inventory.toml: nodes.a.checks.d.interval: must be 0..3600 seconds, got nan",
            "inventory.toml: nodes.a.checks.e.timeout: must be 0.01..3600 seconds, got 0",
            "inventory.toml: nodes.a.checks.e.retries: must be 0..1000, got 1001",
            "inventory.toml: nodes.a.checks.e.interval: must be 0..3600 seconds, got -1",
        ],
    ),
    (
        "check addresses that break at run time",
        "[nodes.a.checks.url]\nhttp = 'http://[zz/'\n"
        "[nodes.a.checks.port]\ntcp = '{host}:99999'\n"
        "[nodes.a.checks.port0]\ntcp = '{host}:0'\n"
        "[nodes.a.checks.urlport]\nhttp = 'http://{host}:99999/'\n"
        "[nodes.a.checks.nohost]\nhttp = 'http:///x'\n"
        "[nodes.a.checks.tcphost]\ntcp = '-oops:22'\n"
        "[nodes.a.checks.placeholder]\nhttp = 'http://{host}:{port}/'\n"
        "[nodes.a.checks.tcpplaceholder]\ntcp = '{hostname}:22'\n"
        "[nodes.a.checks.brace]\nhttp = 'http://{host/'\n",
        [
            "inventory.toml: nodes.a.checks.url.http: not a valid URL: Invalid IPv6 URL",
            "inventory.toml: nodes.a.checks.port.tcp: port must be 1..65535, got 99999",
            "inventory.toml: nodes.a.checks.port0.tcp: port must be 1..65535, got 0",
            "inventory.toml: nodes.a.checks.urlport.http: port must be 1..65535, got 99999",
            "inventory.toml: nodes.a.checks.nohost.http: not a valid URL: no host",
            'inventory.toml: nodes.a.checks.tcphost.tcp: not a valid host: "-oops"',
            "inventory.toml: nodes.a.checks.placeholder.http: unknown placeholder {port} "
            "(only {host} and {node} are filled in)",
            "inventory.toml: nodes.a.checks.tcpplaceholder.tcp: unknown placeholder {hostname} "
            "(only {host} and {node} are filled in)",
            "inventory.toml: nodes.a.checks.brace.http: a { or } that is no placeholder "
            "(only {host} and {node} are filled in)",
        ],
    ),
    (
        "keys Nix treats specially, at the top and deep down",
        '[nodes.a]\nvars = { outPath = "x" }\nconfig = { s = { __toString = 1, __functor = 2 } }\n',
        [
            "inventory.toml: nodes.a.vars.outPath: 'outPath' is a key Nix treats specially: "
            "rename it",
            "inventory.toml: nodes.a.config.s.__toString: '__toString' is a key Nix treats "
            "specially: rename it",
            "inventory.toml: nodes.a.config.s.__functor: '__functor' is a key Nix treats "
            "specially: rename it",
        ],
    ),
    (
        "nesting too deep",
        "[nodes.a.vars" + ".x" * (MAX_DEPTH + 1) + "]\n",
        [
            "inventory.toml: nodes.a.vars" + ".x" * (MAX_DEPTH - 1) + ": nested deeper than "
            f"{MAX_DEPTH} levels"
        ],
    ),
    (
        "node names Colmena keeps for its hive",
        "[nodes.meta]\n[nodes.defaults]\n[roles.r]\n[[roles.r.targets]]\nhost = 'h'\n"
        "name = 'network'\n",
        [
            f"inventory.toml: roles.r.targets[0].name: {HIVE_KEY % 'network'}",
            f"inventory.toml: nodes.meta: {HIVE_KEY % 'meta'}",
            f"inventory.toml: nodes.defaults: {HIVE_KEY % 'defaults'}",
        ],
    ),
    (
        "node names deploy-rs's schema refuses: no letter and no _",
        "[nodes.10-0-0-1]\n[nodes.'192.0.2.1']\n[roles.r]\n[[roles.r.targets]]\nhost = 'h'\n"
        "name = '7'\n",
        [
            f"inventory.toml: roles.r.targets[0].name: {NO_LETTER % '7'}",
            f"inventory.toml: nodes.10-0-0-1: {NO_LETTER % '10-0-0-1'}",
            f'inventory.toml: nodes."192.0.2.1": {NO_LETTER % "192.0.2.1"}',
        ],
    ),
    (
        "a fan-out name without a letter",
        "[roles.10]\n[[roles.10.targets]]\nhost = '192.0.2.1'\n[[roles.10.targets]]\n"
        "host = '192.0.2.2'\nname = 'ok'\n",
        [
            "inventory.toml: roles.10.targets[0]: the node name made from role and host, "
            f'"10-192-0-2-1", is not one the peers can carry: {NO_LETTER_REASON}: set `name`'
        ],
    ),
    (
        "not TOML at all",
        "[nodes.a\n",
        ["inventory.toml: line 1, column 9: invalid TOML: "],
    ),
    (
        "duplicate keys are a TOML error",
        "[nodes.a]\nport = 1\nport = 2\n",
        ["inventory.toml: line 3, column 1: invalid TOML: "],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_problem_messages(text: str, expected: list[str]) -> None:
    found = problems(text)
    if expected[0].endswith("invalid TOML: "):
        assert len(found) == 1
        assert found[0].startswith(expected[0])
        assert len(found[0]) > len(expected[0])  # the parser's own words follow
    else:
        assert found == expected


def test_every_problem_is_listed_in_document_order() -> None:
    text = """
[defaults]
port = 0
colour = "red"

[roles.web]
tags = ["a b"]

[[roles.web.targets]]
host = "-x"

[nodes.db]
role = "nope"
user = "a;b"
port = 70000
"""
    found = problems(text)
    assert [p.split(": ")[1] for p in found] == [
        "defaults.port",
        "defaults.colour",
        "roles.web.tags[0]",
        "roles.web.targets[0].host",
        "nodes.db.user",
        "nodes.db.port",
        "nodes.db.role",
    ]


def test_junk_bytes_name_their_line_and_column() -> None:
    assert problems(b"[nodes.a]\nhost = '\xff'\n") == [
        "inventory.toml: line 2, column 9: not valid UTF-8 (byte 0xff)"
    ]


def test_file_name_is_the_one_given() -> None:
    with pytest.raises(InventoryError) as caught:
        loads("[nodes.a]\nport = 0\n", file="fleet/prod.toml")
    assert str(caught.value) == "fleet/prod.toml: nodes.a.port: must be 1..65535, got 0"


def test_hostile_values_are_quoted_back_escaped() -> None:
    (found,) = problems('[nodes.a]\ntags = ["\\u202e\\u0007x"]\n')
    assert "\u202e" not in found and "\x07" not in found
    assert found.endswith('got "\\u202e\\u0007x"')


def test_huge_values_are_quoted_back_short() -> None:
    (found,) = problems('[nodes.a]\nmodules = ["\\n' + "x" * 100_000 + '"]\n')
    assert found.endswith('got "\\n' + "x" * 47 + '..."')


def test_problems_carry_file_path_and_message_apart() -> None:
    with pytest.raises(InventoryError) as caught:
        loads("[nodes.a]\nport = 0\n")
    (problem,) = caught.value.problems
    assert (problem.file, problem.path, problem.message) == (
        "inventory.toml",
        "nodes.a.port",
        "must be 1..65535, got 0",
    )
    assert caught.value.exit_code == 2


VALID = [
    ("IPv6 host", "[nodes.a]\nhost = '2001:db8::1'\n"),
    ("IPv6 host with a zone", "[nodes.a]\nhost = 'fe80::1%eth0'\n"),
    ("hostname with a trailing dot", "[nodes.a]\nhost = 'a.example.com.'\n"),
    ("one host on two ports", "[nodes.a]\nhost = 'h'\n[nodes.b]\nhost = 'h'\nport = 2222\n"),
    ("an empty inventory", ""),
    ("a role without nodes", "[roles.idle]\nmodules = ['x.nix']\n"),
    ("hostile strings are fine inside vars", "[nodes.a.vars]\ns = '-oProxyCommand=x; rm -rf /'\n"),
    ("the largest 64-bit integers", "[nodes.a.vars]\nhi = 9223372036854775807\n"),
    ("ssh options", "[defaults]\nssh_options = ['ProxyJump=jump.example.com', 'Port=22']\n"),
    (
        "names the peers carry: a letter or _ anywhere, hive keys in another case",
        "[nodes.1web]\n[nodes.'db.example.com']\n[nodes.1_2]\n[nodes.Meta]\n[nodes.meta-1]\n"
        "[roles.7]\n[[roles.7.targets]]\nhost = '192.0.2.1'\nname = 'x7'\n",
    ),
]


@pytest.mark.parametrize("text", [v[1] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_inventories_load(text: str) -> None:
    loads(text)


def test_huge_keys_are_cut_in_key_paths() -> None:
    (found,) = problems("[nodes.a.vars]\n" + "k" * 10_000 + " = inf\n")
    assert found == (
        'inventory.toml: nodes.a.vars."' + "k" * 48 + '...": must be a finite number, got inf'
    )
    found_all = problems("[nodes.'" + "n " * 5_000 + "']\n")
    assert all(len(line) < 300 for line in found_all)


def test_the_backup_validation_guards_is_the_one_data_writes() -> None:
    from nixherd.inventory.entries import DATA_BACKUP_SUFFIX
    from nixherd.node.data import BACKUP_SUFFIX

    assert BACKUP_SUFFIX == DATA_BACKUP_SUFFIX


@pytest.mark.parametrize(
    ("host", "same"),
    [
        ("::1", "0:0:0:0:0:0:0:1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("10.0.0.1", "10.0.0.1."),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("WEB.example.com", "web.example.com."),
        ("fe80::1%eth0", "FE80:0::1%eth0"),
    ],
)
def test_one_address_one_spelling(host: str, same: str) -> None:
    from nixherd.inventory.normal import endpoint_host

    assert endpoint_host(host) == endpoint_host(same)


@pytest.mark.parametrize(
    ("host", "other"),
    [("fe80::1%eth0", "fe80::1%eth1"), ("web-1", "web-2"), ("10.0.0.1", "10.0.0.10"), ("1", "2")],
)
def test_different_addresses_stay_apart(host: str, other: str) -> None:
    from nixherd.inventory.normal import endpoint_host

    assert endpoint_host(host) != endpoint_host(other)


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True))
def test_deploy_rs_rule_is_its_schema_pattern_on_node_names(name: str) -> None:
    # serokell/deploy-rs interface.json keys nodes by "[A-z][A-z0-9_-]*", a JSON Schema pattern:
    # matched anywhere (re.search), and A-z spans [\]^_` too. On nixherd's names the validator's
    # rule says the same.
    by_schema = re.search("[A-z][A-z0-9_-]*", name) is not None
    refused = peer_name_problem(name) is not None and name not in ("defaults", "meta", "network")
    assert refused == (not by_schema)

"""`nixherd add/remove/set`: the inventory is edited in place. Every line outside the edited ones
stays byte-identical (compared line by line), invalid edits write nothing (exit 2, the file and
key named), and each kind of node is handled: an explicit node, a target of an inline `targets`
array, a target of a `[[roles.<r>.targets]]` array of tables."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from nixherd.cli import main
from nixherd.inventory import load

INVENTORY = """\
# The fleet (a comment at the top).
[defaults]
user = "root"  # everyone logs in as root

[roles.web]
modules = ["hosts/web"]  # the web role
tags = ["web"]
targets = [
  # the web servers, one line each
  { host = "10.0.0.1" },  # first
  { host = "10.0.0.2", tags = ["canary"] },  # second
]

[roles.web.checks.http]
http = "http://{host}/"

# A role fanned out as an array of tables.
[roles.db]
modules = ["hosts/db"]

# db one
[[roles.db.targets]]
host = "10.1.0.1"

# db two
[[roles.db.targets]]
host = "10.1.0.2"
port = 2222  # a port of its own

[roles.solo]
modules = ["hosts/solo"]

# An explicit node with a sub-table.
[nodes.edge]
role = "web"
host = "192.0.2.10"  # the edge
vars = { region = "eu" }

[nodes.edge.checks.tcp]
tcp = "{host}:443"

# The last node: keep this comment.
[nodes.lone]
host = "192.0.2.20"
"""


@pytest.fixture
def inv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "inventory.toml"
    path.write_text(INVENTORY)
    return path


def changes(old: str, new: str) -> tuple[list[str], list[str]]:
    """The lines removed from `old` and the lines added in `new` (every other line identical)."""
    removed: list[str] = []
    added: list[str] = []
    a, b = old.splitlines(), new.splitlines()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            removed += a[i1:i2]
            added += b[j1:j2]
    return removed, added


def run(*argv: str) -> int:
    return main(["-i", "inventory.toml", *argv])


def test_remove_an_inline_target_is_its_line(inv: Path) -> None:
    assert run("remove", "web-10-0-0-2") == 0
    assert changes(INVENTORY, inv.read_text()) == (
        ['  { host = "10.0.0.2", tags = ["canary"] },  # second'],
        [],
    )
    assert "web-10-0-0-2" not in load(inv).nodes


def test_remove_a_target_of_an_array_of_tables(inv: Path) -> None:
    assert run("remove", "db-10-1-0-2") == 0
    removed, added = changes(INVENTORY, inv.read_text())
    assert added == []
    # Its block and the comment above it; the blank line that separated it, once.
    assert removed == [
        "# db two",
        "[[roles.db.targets]]",
        'host = "10.1.0.2"',
        "port = 2222  # a port of its own",
        "",
    ]
    # The comment of the first element and the next role's header are untouched.
    text = inv.read_text()
    assert '# db one\n[[roles.db.targets]]\nhost = "10.1.0.1"\n\n[roles.solo]' in text


def test_remove_the_first_target_keeps_the_next_ones_comment(inv: Path) -> None:
    # tomlkit alone files "# db two" under the first element and deletes it with it.
    assert run("remove", "db-10-1-0-1") == 0
    cut = '# db one\n[[roles.db.targets]]\nhost = "10.1.0.1"\n\n'
    assert inv.read_text() == INVENTORY.replace(cut, "")


def test_remove_an_explicit_node_with_its_sub_tables(inv: Path) -> None:
    assert run("remove", "edge") == 0
    removed, added = changes(INVENTORY, inv.read_text())
    assert added == []
    assert removed == [
        "# An explicit node with a sub-table.",
        "[nodes.edge]",
        'role = "web"',
        'host = "192.0.2.10"  # the edge',
        'vars = { region = "eu" }',
        "",
        "[nodes.edge.checks.tcp]",
        'tcp = "{host}:443"',
        "",
    ]
    assert "# The last node: keep this comment.\n[nodes.lone]" in inv.read_text()
    assert sorted(load(inv).nodes) == [
        "db-10-1-0-1",
        "db-10-1-0-2",
        "lone",
        "web-10-0-0-1",
        "web-10-0-0-2",
    ]


def test_add_a_target_to_an_inline_array_is_one_line(inv: Path) -> None:
    assert run("add", "--role", "web", "--host", "10.0.0.3", "--tag", "new") == 0
    assert changes(INVENTORY, inv.read_text()) == (
        [],
        ['  { host = "10.0.0.3", tags = ["new"] },'],
    )
    node = load(inv).nodes["web-10-0-0-3"]
    assert (node.host, node.role, node.tags) == ("10.0.0.3", "web", ("web", "new"))


def test_add_a_target_to_an_array_of_tables(inv: Path) -> None:
    assert run("add", "dbx", "--role", "db", "--host", "10.1.0.3", "--port", "2200") == 0
    last = "port = 2222  # a port of its own\n"
    new = '\n[[roles.db.targets]]\nname = "dbx"\nhost = "10.1.0.3"\nport = 2200\n'
    assert inv.read_text() == INVENTORY.replace(last, last + new)
    assert load(inv).nodes["dbx"].port == 2200


def test_add_the_first_target_of_a_role(inv: Path) -> None:
    assert run("add", "--fan-out", "--role", "solo", "--host", "10.2.0.1") == 0
    assert changes(INVENTORY, inv.read_text()) == (
        [],
        ["targets = [", '  { host = "10.2.0.1" },', "]"],
    )
    assert load(inv).nodes["solo-10-2-0-1"].modules == ("hosts/solo",)


def test_add_an_explicit_node(inv: Path) -> None:
    argv = ["add", "cache", "--role", "solo", "--host", "cache.example.com", "--user", "deploy"]
    argv += ["--var", "size=10", "--var", "tier.name=hot", "--var", "note=plain words"]
    assert run(*argv) == 0
    removed, added = changes(INVENTORY, inv.read_text())
    assert removed == []
    assert added == [
        "",
        "[nodes.cache]",
        'role = "solo"',
        'host = "cache.example.com"',
        'user = "deploy"',
        'vars = { size = 10, tier = { name = "hot" }, note = "plain words" }',
    ]
    node = load(inv).nodes["cache"]
    assert node.vars == {"size": 10, "tier": {"name": "hot"}, "note": "plain words"}


def test_set_keys_of_each_kind_of_node(inv: Path) -> None:
    assert run("set", "edge", "port", "2222") == 0
    assert run("set", "edge", "vars.region", "us") == 0
    assert run("set", "web-10-0-0-1", "port", "2201") == 0
    assert run("set", "db-10-1-0-2", "port", "2300") == 0
    assert run("set", "db-10-1-0-1", "tags", "a,b") == 0
    removed, added = changes(INVENTORY, inv.read_text())
    assert removed == [
        '  { host = "10.0.0.1" },  # first',
        "port = 2222  # a port of its own",
        'vars = { region = "eu" }',
    ]
    assert added == [
        '  { host = "10.0.0.1", port = 2201 },  # first',
        'tags = ["a", "b"]',
        "port = 2300  # a port of its own",
        'vars = { region = "us" }',
        "port = 2222",
    ]
    nodes = load(inv).nodes
    assert nodes["edge"].port == 2222
    assert nodes["edge"].vars == {"region": "us"}
    assert nodes["db-10-1-0-1"].tags == ("a", "b")


def test_set_host_of_an_unnamed_target_says_it_renames(
    inv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("set", "web-10-0-0-1", "host", "10.0.0.9") == 0
    assert "web-10-0-0-1 is now web-10-0-0-9" in capsys.readouterr().err
    assert "web-10-0-0-9" in load(inv).nodes


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["set", "edge", "port", "70000"], "inventory.toml: nodes.edge.port: must be 1..65535"),
        (["set", "edge", "prot", "22"], "inventory.toml: nodes.edge.prot: unknown field"),
        (
            ["set", "web-10-0-0-1", "role", "db"],
            "inventory.toml: roles.web.targets[0].role: not allowed",
        ),
        (["set", "edge", "port", "many"], "port: must be an integer, got 'many'"),
        (
            ["add", "x", "--role", "web", "--host", "10.0.0.1"],
            'roles.web.targets[2]: host "10.0.0.1" (port from ssh) is already used by node '
            "web-10-0-0-1",
        ),
        (["add", "x", "--role", "nope", "--host", "10.9.0.1"], "nodes.x.role: unknown role"),
        (["add", "lone", "--host", "10.9.0.1"], "node 'lone' already exists (nodes.lone)"),
        (
            ["add", "--fan-out", "--role", "nope", "--host", "10.9.0.1"],
            "inventory.toml: roles.nope: no such role",
        ),
        (["add", "y", "--host=-oProxyCommand=x"], "nodes.y.host: must be a hostname"),
        (["remove", "ghost"], "no node 'ghost' in the inventory"),
        (["set", "ghost", "port", "22"], "no node 'ghost'"),
    ],
)
def test_invalid_edits_write_nothing(
    inv: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    before = inv.read_bytes()
    stat = os.stat(inv)
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert inv.read_bytes() == before
    assert os.stat(inv).st_mtime_ns == stat.st_mtime_ns
    assert sorted(os.listdir(inv.parent)) == ["inventory.toml"]  # no temporary file left


def test_the_write_is_atomic_and_keeps_mode_and_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.toml"
    real.write_text(INVENTORY)
    real.chmod(0o640)
    link = tmp_path / "inventory.toml"
    link.symlink_to(real)
    assert main(["-i", str(link), "set", "lone", "port", "2022"]) == 0
    assert link.is_symlink()
    assert oct(real.stat().st_mode & 0o777) == "0o640"
    assert load(real).nodes["lone"].port == 2022


def test_dry_run_prints_and_writes_nothing(inv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("remove", "lone", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "[nodes.lone]" not in out
    assert "[nodes.edge]" in out
    assert inv.read_text() == INVENTORY


def test_user_and_port_false_leave_them_to_ssh(inv: Path) -> None:
    assert run("set", "lone", "port", "false") == 0
    assert run("set", "lone", "user", "false") == 0
    assert run("add", "free", "--host", "192.0.2.30", "--port", "false") == 0
    nodes = load(inv).nodes
    assert (nodes["lone"].port, nodes["lone"].user) == (None, None)
    assert nodes["free"].port is None
    assert '[nodes.free]\nhost = "192.0.2.30"\nport = false\n' in inv.read_text()


def test_line_endings_and_a_missing_last_newline_are_kept(tmp_path: Path) -> None:
    crlf = tmp_path / "crlf.toml"
    crlf.write_bytes(b'[defaults]\r\nuser = "root"\r\n\r\n[nodes.c]\r\nhost = "192.0.2.6"\r\n')
    assert main(["-i", str(crlf), "set", "c", "port", "2"]) == 0
    assert main(["-i", str(crlf), "add", "e", "--host", "192.0.2.7"]) == 0
    assert crlf.read_bytes() == (
        b'[defaults]\r\nuser = "root"\r\n\r\n[nodes.c]\r\nhost = "192.0.2.6"\r\nport = 2\r\n'
        b'\r\n[nodes.e]\r\nhost = "192.0.2.7"\r\n'
    )
    bare = tmp_path / "bare.toml"
    bare.write_bytes(b'[nodes.a]\nhost = "192.0.2.1"\n\n[nodes.b]\nhost = "192.0.2.2"')
    assert main(["-i", str(bare), "remove", "a"]) == 0
    assert bare.read_bytes() == b'[nodes.b]\nhost = "192.0.2.2"'  # still no last newline
    assert main(["-i", str(bare), "set", "b", "port", "3"]) == 0
    assert bare.read_bytes() == b'[nodes.b]\nhost = "192.0.2.2"\nport = 3\n'


def test_an_unusual_layout_is_edited_or_refused_never_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "inventory.toml"
    # A node written as dotted keys of [nodes]: one key of that table, removed as such.
    path.write_text('[nodes]\na.host = "192.0.2.1"\nb = { host = "192.0.2.2" }  # b\n')
    assert main(["-i", str(path), "remove", "b"]) == 0
    assert path.read_text() == '[nodes]\na.host = "192.0.2.1"\n'
    # A node split between dotted keys and a header of its own: cutting the header's lines
    # would leave half of it, so nothing is written.
    text = '[nodes]\nc.host = "192.0.2.4"\n\n[nodes.c.checks.x]\ntcp = "{host}:22"\n'
    path.write_text(text)
    assert main(["-i", str(path), "remove", "c"]) == 1
    assert "could not be made without changing other parts" in capsys.readouterr().err
    assert path.read_text() == text


def test_set_inside_sub_tables(inv: Path) -> None:
    # [nodes.edge.checks.tcp] has a header: a key is added to its lines; `checks` itself has
    # none, so a new check is a dotted key in [nodes.edge]; then edited in place.
    assert run("set", "edge", "checks.tcp.retries", "5") == 0
    assert run("set", "edge", "checks.new.http", "http://{host}:8080/") == 0
    assert run("set", "edge", "checks.new.retries", "4") == 0
    assert changes(INVENTORY, inv.read_text()) == (
        [],
        ['checks.new = { http = "http://{host}:8080/", retries = 4 }', "retries = 5"],
    )
    checks = load(inv).nodes["edge"].checks
    assert sorted(checks) == ["http", "new", "tcp"]
    assert checks["tcp"].retries == 5
    assert checks["new"].retries == 4


def test_add_to_an_empty_or_one_line_targets_array(tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text(
        "[roles.a]\ntargets = []  # none yet\n\n"
        '[roles.b]\ntargets = [{ host = "10.0.0.1" }]  # one\n'
    )
    assert main(["-i", str(path), "add", "--role", "a", "--host", "10.0.0.5"]) == 0
    assert main(["-i", str(path), "add", "--role", "b", "--host", "10.0.0.6"]) == 0
    assert path.read_text() == (
        '[roles.a]\ntargets = [\n  { host = "10.0.0.5" },\n]  # none yet\n\n'
        '[roles.b]\ntargets = [{ host = "10.0.0.1" }, { host = "10.0.0.6" }]  # one\n'
    )

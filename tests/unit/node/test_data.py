"""data.py: rendering (json, toml, text templates), diff, push with backup, reload and restore.

The remote scripts run for real against a temp dir, through a connection that executes the
remote argv locally instead of over ssh (tests/lab/secrets does it over real ssh).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import stat
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from connkit import SHELLS, LocalConnection, ShellConnection, problems
from hypothesis import given
from hypothesis import strategies as st

from nixherd.events import Event, LogLine
from nixherd.inventory import loads
from nixherd.inventory.entries import DataFile
from nixherd.inventory.parse_entries import build_data, data_issues
from nixherd.inventory.template import check as template_errors
from nixherd.node import data as data_module
from nixherd.node.data import (
    BACKUP_SUFFIX,
    DataError,
    Format,
    Rendered,
    diff_node,
    push_node,
    render,
    render_node,
)


@dataclass(frozen=True)
class FakeNode:
    name: str
    vars: Mapping[str, Any]
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def data(self) -> Mapping[str, DataFile]:
        return {name: typed_data(name, table) for name, table in self.tables.items()}


VARS: dict[str, Any] = {
    "domains": {"b.example": "10.0.0.2:80", "a.example": "10.0.0.1:80"},
    "flags": {"beta": True, "limit": 5},
    "list": ["x", "y"],
    "when": datetime.date(2026, 1, 2),
}


def typed_data(name: str, table: Mapping[str, Any]) -> DataFile:
    """A data file as the inventory builds it: validated, then built."""
    assert data_issues(table) is None, data_issues(table)
    return build_data(name, table)


def spec(**table: Any) -> DataFile:
    return typed_data("f", {"path": "/etc/app/f", **table})


@pytest.fixture
def conn(tmp_path: Path) -> LocalConnection:
    return LocalConnection(str(tmp_path))


def test_spec_defaults() -> None:
    s = spec()
    assert s.format is Format.JSON and s.source is None and s.reload == ()
    own = Rendered(s, b"").ownership
    assert own.octal == "0644" and own.owner == "root:root"
    assert s.backup == "/etc/app/f" + BACKUP_SUFFIX


@pytest.mark.parametrize(
    "table",
    [
        {"path": "relative"},
        {"path": "/etc/dir/"},
        {"path": "/a", "format": "yaml"},
        {"path": "/a", "format": "text"},
        {"path": "/a", "format": "json", "template": "x"},
        {"path": "/a", "format": "text", "template": "{vars.a"},
        {"path": "/a", "format": "text", "template": "{os.system}"},
        {"path": "/a", "format": "text", "template": "{vars.a[0]}"},
        {"path": "/a", "format": "text", "template": "{vars.__class__.x y}"},
        {"path": "/a", "user": "a;b"},
        {"path": "/a", "mode": "0x1"},
        {"path": "/a", "source": "a..b"},
        {"path": "/a", "source": "a b"},
        {"path": "/a", "format": "text", "template": "x", "source": "a"},
    ],
)
def test_spec_refuses_bad_tables(table: dict[str, Any]) -> None:
    assert data_issues(table) is not None


def test_json_renders_a_var_or_all_vars_sorted() -> None:
    out = render(spec(source="domains"), VARS, node="n")
    assert out.decode() == '{\n  "a.example": "10.0.0.1:80",\n  "b.example": "10.0.0.2:80"\n}\n'
    everything = json.loads(render(spec(), VARS, node="n"))
    assert everything["flags"] == {"beta": True, "limit": 5}
    assert everything["when"] == "2026-01-02"
    nested = render(spec(source="flags.limit"), VARS, node="n")
    assert nested == b"5\n"


def test_toml_renders_a_table_and_refuses_a_scalar() -> None:
    out = render(spec(format="toml", source="flags"), VARS, node="n")
    assert tomllib.loads(out.decode()) == {"beta": True, "limit": 5}
    with pytest.raises(DataError, match="TOML needs a table"):
        render(spec(format="toml", source="list"), VARS, node="n")


def test_text_template() -> None:
    template = "host {name}: {vars.flags.limit} {vars.flags.beta} {vars.list.1} {{literal}}\n"
    out = render(spec(format="text", template=template), VARS, node="web-1")
    assert out == b"host web-1: 5 true y {literal}\n"
    whole = render(spec(format="text", template="{vars.list}"), VARS, node="n")
    assert whole == b'["x", "y"]'


def test_missing_var_names_node_file_and_var() -> None:
    with pytest.raises(DataError, match=r"^web-1: data 'f': vars\.flags\.nope is not defined"):
        render(spec(format="text", template="{vars.flags.nope}"), VARS, node="web-1")
    with pytest.raises(DataError, match=r"vars\.missing is not defined"):
        render(spec(source="missing"), VARS, node="web-1")


@given(st.text(max_size=60))
def test_templates_either_render_or_are_refused(template: str) -> None:
    """Any text is either a valid template that renders, or refused with ValueError."""
    try:
        template_errors(template)
    except ValueError:
        return
    try:
        out = render(spec(format="text", template=template), VARS, node="n")
    except DataError:
        return  # a well-formed placeholder naming a var that does not exist
    assert isinstance(out, bytes)


def test_rendering_does_not_depend_on_key_order() -> None:
    a = {"x": {"b": 1, "a": 2}, "y": 1}
    b = {"y": 1, "x": {"a": 2, "b": 1}}
    for fmt in ("json", "toml"):
        assert render(spec(format=fmt), a, node="n") == render(spec(format=fmt), b, node="n")


def app(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """A data file whose reload appends a line to a log, so each reload can be counted."""
    log = tmp_path / "reloads"
    reload = ["sh", "-c", f"echo reloaded >> {log}"]
    return {
        "path": str(tmp_path / "etc" / "backends.json"),
        "source": "domains",
        "reload": reload,
        **extra,
    }


def reload_count(tmp_path: Path) -> int:
    log = tmp_path / "reloads"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_push_writes_reloads_and_then_does_nothing(tmp_path: Path, conn: LocalConnection) -> None:
    node = FakeNode("n1", VARS, {"backends": app(tmp_path, mode="0640")})
    target = tmp_path / "etc" / "backends.json"
    events: list[Event] = []
    first = push_node(conn, node, emit=events.append)
    assert first.changed == ("backends",) and len(first.reloads) == 1
    assert json.loads(target.read_text()) == VARS["domains"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert reload_count(tmp_path) == 1
    assert set(conn.modes) == {(True, True)}
    assert any(isinstance(e, LogLine) and "reload" in e.line for e in events)

    before = target.stat()
    again = push_node(conn, node, emit=events.append)
    assert again.changed == () and again.unchanged == ("backends",) and again.reloads == ()
    assert reload_count(tmp_path) == 1
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_push_keeps_a_backup_of_the_previous_file(tmp_path: Path, conn: LocalConnection) -> None:
    push_node(conn, FakeNode("n1", VARS, {"backends": app(tmp_path)}), emit=lambda _e: None)
    changed = {**VARS, "domains": {"c.example": "10.0.0.3:80"}}
    push_node(conn, FakeNode("n1", changed, {"backends": app(tmp_path)}), emit=lambda _e: None)
    target = tmp_path / "etc" / "backends.json"
    assert json.loads(target.read_text()) == {"c.example": "10.0.0.3:80"}
    backup = Path(str(target) + BACKUP_SUFFIX)
    assert json.loads(backup.read_text()) == VARS["domains"]
    assert reload_count(tmp_path) == 2


def test_failing_reload_restores_the_previous_file(tmp_path: Path, conn: LocalConnection) -> None:
    push_node(conn, FakeNode("n1", VARS, {"backends": app(tmp_path)}), emit=lambda _e: None)
    target = tmp_path / "etc" / "backends.json"
    good = target.read_bytes()
    flag = tmp_path / "fail"
    # The reload fails while the flag exists (a config the service rejects).
    reload = ["sh", "-c", f"echo reloaded >> {tmp_path / 'reloads'}; test ! -e {flag}"]
    flag.touch()
    bad = FakeNode("n1", {"domains": {"bad": 1}}, {"backends": app(tmp_path, reload=reload)})
    with pytest.raises(DataError, match=r"^n1: reload .* exited with 1; restored the previous"):
        push_node(conn, bad, emit=lambda _e: None)
    assert target.read_bytes() == good
    # Reloaded with the new file, then once more with the old one put back.
    assert reload_count(tmp_path) == 3


def test_failing_reload_of_a_new_file_removes_it(tmp_path: Path, conn: LocalConnection) -> None:
    node = FakeNode("n1", VARS, {"backends": app(tmp_path, reload=["false"])})
    with pytest.raises(DataError):
        push_node(conn, node, emit=lambda _e: None)
    assert not (tmp_path / "etc" / "backends.json").exists()


def test_files_sharing_a_reload_reload_once(tmp_path: Path, conn: LocalConnection) -> None:
    text = {"path": str(tmp_path / "etc" / "motd"), "format": "text", "template": "{name}\n"}
    shared = app(tmp_path)["reload"]
    node = FakeNode("n1", VARS, {"backends": app(tmp_path), "motd": {**text, "reload": shared}})
    result = push_node(conn, node, emit=lambda _e: None)
    assert result.changed == ("backends", "motd")
    assert reload_count(tmp_path) == 1
    assert (tmp_path / "etc" / "motd").read_text() == "n1\n"


def test_a_render_error_touches_nothing(tmp_path: Path, conn: LocalConnection) -> None:
    node = FakeNode(
        "n1",
        VARS,
        {"a": app(tmp_path), "b": {"path": str(tmp_path / "b"), "source": "missing"}},
    )
    with pytest.raises(DataError, match=r"vars\.missing"):
        push_node(conn, node, emit=lambda _e: None)
    assert conn.calls == []


def test_diff_shows_what_would_change(tmp_path: Path, conn: LocalConnection) -> None:
    node = FakeNode("n1", VARS, {"backends": app(tmp_path)})
    (new,) = diff_node(conn, node, emit=lambda _e: None)
    assert new.changed and not new.exists
    assert '+  "a.example": "10.0.0.1:80",' in new.content_diff
    push_node(conn, node, emit=lambda _e: None)
    (same,) = diff_node(conn, node, emit=lambda _e: None)
    assert not same.changed and same.content_diff == ""
    changed = FakeNode("n1", {**VARS, "domains": {"a.example": "10.9.9.9:80"}}, node.tables)
    (edit,) = diff_node(conn, changed, emit=lambda _e: None)
    assert '-  "a.example": "10.0.0.1:80",' in edit.content_diff
    assert '+  "a.example": "10.9.9.9:80"' in edit.content_diff
    assert edit.ownership is None
    chmod = FakeNode("n1", VARS, {"backends": app(tmp_path, mode="0600")})
    (mode,) = diff_node(conn, chmod, emit=lambda _e: None)
    assert mode.changed and mode.content_diff == ""
    assert mode.ownership == "root:root 0644 -> root:root 0600"
    # A diff never writes.
    assert reload_count(tmp_path) == 1


def test_inventory_data_is_validated_with_file_and_key_path() -> None:
    assert problems(
        """
[nodes.web]
data.a = { format = "yaml", source = "a..b", reload = [""] }
data.b = { path = "/etc/b", format = "text" }
data.c = { path = "/etc/c", format = "text", source = "x", template = "{vars.x} {os.system}" }
data.d = { path = "/etc/d/", template = "x", mode = "0644", user = "a;b" }
"""
    ) == [
        'inventory.toml: nodes.web.data.a.format: must be "json" or "toml" or "text", '
        'got string "yaml"',
        "inventory.toml: nodes.web.data.a.source: must be a dotted var path like a.b "
        '(letters, digits, _, -), got "a..b"',
        'inventory.toml: nodes.web.data.a.reload[0]: must be a string without NUL, got ""',
        "inventory.toml: nodes.web.data.a: path is required",
        'inventory.toml: nodes.web.data.b: format = "text" needs a template',
        "inventory.toml: nodes.web.data.c.template: bad placeholder '{os.system}': "
        "use {vars.a.b} or {name}",
        'inventory.toml: nodes.web.data.c.source: only for format "json" or "toml" '
        "(text uses template)",
        "inventory.toml: nodes.web.data.d.path: must be an absolute file path without NUL or "
        'newline, got "/etc/d/"',
        "inventory.toml: nodes.web.data.d.user: must be a user or group name, or a numeric id, "
        'got "a;b"',
        'inventory.toml: nodes.web.data.d.template: only for format = "text"',
    ]


def test_inventory_data_merges_by_name_and_renders_per_node() -> None:
    inventory = loads(
        """
[roles.web]
vars = { domains = { "a.example" = "10.0.0.1:80" } }
data.backends = { path = "/etc/app/backends.json", source = "domains" }
[[roles.web.targets]]
host = "10.0.0.1"
[[roles.web.targets]]
host = "10.0.0.2"
vars = { domains = { "b.example" = "10.0.0.9:80" } }
data.motd = { path = "/etc/motd", format = "text", template = "{name}" }
"""
    )
    one, two = inventory.nodes["web-10-0-0-1"], inventory.nodes["web-10-0-0-2"]
    assert sorted(one.data) == ["backends"] and sorted(two.data) == ["backends", "motd"]
    assert "data" not in one.to_data()
    (rendered,) = render_node(one)
    assert json.loads(rendered.content) == {"a.example": "10.0.0.1:80"}
    backends, motd = render_node(two)
    assert json.loads(backends.content) == {"a.example": "10.0.0.1:80", "b.example": "10.0.0.9:80"}
    assert motd.content == b"web-10-0-0-2"


# -- data paths an application user controls; a reload that hangs -------------------------------


@pytest.fixture(params=SHELLS, ids=" ".join)
def shell_conn(tmp_path: Path, request: pytest.FixtureRequest) -> ShellConnection:
    return ShellConnection(str(tmp_path), request.param)


def test_diff_reports_a_symlink_and_never_reads_through_it(
    tmp_path: Path, shell_conn: ShellConnection
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root:$6$hash-of-the-shadow-file\n")
    victim.chmod(0o600)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "backends.json").symlink_to(victim)
    node = FakeNode("n1", VARS, {"backends": app(tmp_path)})
    (item,) = diff_node(shell_conn, node, emit=lambda _e: None)
    assert item.changed and item.exists
    assert (item.state, item.ownership) == ("symlink", None)
    assert "is a symlink" in item.note
    assert "shadow" not in item.content_diff and item.content_diff.startswith("--- /dev/null")


def test_push_replaces_a_symlink_and_a_failed_reload_puts_the_link_back(
    tmp_path: Path, shell_conn: ShellConnection
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    (tmp_path / "etc").mkdir()
    target = tmp_path / "etc" / "backends.json"
    target.symlink_to(victim)
    node = FakeNode("n1", VARS, {"backends": app(tmp_path, reload=["false"])})
    with pytest.raises(DataError, match="exited with 1; restored the previous"):
        push_node(shell_conn, node, emit=lambda _e: None)
    assert target.is_symlink() and os.readlink(target) == str(victim)
    assert victim.read_text() == "untouched\n"

    push_node(shell_conn, FakeNode("n1", VARS, {"backends": app(tmp_path)}), emit=lambda _e: None)
    assert not target.is_symlink() and json.loads(target.read_text()) == VARS["domains"]
    assert Path(str(target) + BACKUP_SUFFIX).is_symlink()  # the link kept as it was
    assert victim.read_text() == "untouched\n"


def test_push_refuses_a_directory_where_the_file_belongs(
    tmp_path: Path, shell_conn: ShellConnection
) -> None:
    (tmp_path / "etc" / "backends.json").mkdir(parents=True)
    node = FakeNode("n1", VARS, {"backends": app(tmp_path)})
    with pytest.raises(DataError, match=r"^n1: data 'backends': .*backends\.json is a directory"):
        push_node(shell_conn, node, emit=lambda _e: None)
    assert os.listdir(tmp_path / "etc" / "backends.json") == []
    assert reload_count(tmp_path) == 0


def test_a_hanging_reload_is_killed_with_its_session_and_the_file_restored(
    tmp_path: Path, shell_conn: ShellConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    push_node(shell_conn, FakeNode("n1", VARS, {"backends": app(tmp_path)}), emit=lambda _e: None)
    target = tmp_path / "etc" / "backends.json"
    good = target.read_bytes()
    pids = tmp_path / "pids"
    # It records its pid, starts a sleeper in a process group of its own, and hangs.
    script = 'echo $$ >> "$1"; set -m; sleep 300 & echo $! >> "$1"; wait'
    hang = ["bash", "-c", script, "reload", str(pids)]
    monkeypatch.setattr(data_module, "RELOAD_TIMEOUT", 1.0)
    monkeypatch.setattr(data_module, "KILL_GRACE", 1)
    changed = FakeNode("n1", {"domains": {"c": 1}}, {"backends": app(tmp_path, reload=hang)})
    started = time.monotonic()
    try:
        with pytest.raises(DataError, match=r"timed out after 1 s .*restored the previous"):
            push_node(shell_conn, changed, emit=lambda _e: None)
        assert time.monotonic() - started < 10
        assert target.read_bytes() == good
        left = [int(p) for p in pids.read_text().split()]
        assert len(left) == 2
        assert [p for p in left if _alive(p)] == []
    finally:
        for pid in (int(p) for p in pids.read_text().split()) if pids.exists() else ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (not a zombie waiting for its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(") ")[2][:1] != "Z"
    except FileNotFoundError:
        return False

"""secrets.py + transfer.py: key specs, sources read first, bytes on stdin only, no re-send.

The remote scripts run for real, against a temp dir on this machine, through a connection that
executes the remote argv locally instead of over ssh (the lab tests do the same over real ssh).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from connkit import SHELLS, LocalConnection, ShellConnection, problems

from nixherd.errors import UsageError
from nixherd.events import Event, LogLine
from nixherd.inventory import loads
from nixherd.inventory.entries import Key, SourceKind, Upload
from nixherd.inventory.parse_entries import build_key, key_issues
from nixherd.node import transfer
from nixherd.node.keys import (
    KeySourceError,
    PreparedKey,
    prepare_keys,
    read_source,
    refuse_store_exposed,
    source_file,
    store_exposed,
    upload_keys,
)
from nixherd.run import process

SECRET = b"s3cr3t-\x00\xff-bytes\n"


def typed_key(name: str, table: Mapping[str, Any]) -> Key:
    """A key as the inventory builds it: validated, then built."""
    assert key_issues(table) is None, key_issues(table)
    return build_key(name, table)


@dataclass(frozen=True)
class FakeNode:
    name: str
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def keys(self) -> Mapping[str, Key]:
        return {name: typed_key(name, table) for name, table in self.tables.items()}


@pytest.fixture
def conn(tmp_path: Path) -> LocalConnection:
    return LocalConnection(str(tmp_path))


def test_spec_defaults_and_relative_file(tmp_path: Path) -> None:
    spec = typed_key("token", {"file": "secrets/t"})
    assert spec.kind is SourceKind.FILE
    assert source_file(spec, str(tmp_path)) == str(tmp_path / "secrets" / "t")
    assert spec.dest == "/run/keys/token"
    assert PreparedKey(spec, b"").ownership == transfer.Ownership("root", "root", 0o400)
    assert spec.upload is Upload.PRE


def test_spec_full() -> None:
    spec = typed_key(
        "acme",
        {
            "command": ["sops", "-d", "x.yaml"],
            "dest": "/var/lib/acme/token",
            "user": "acme",
            "group": "nogroup",
            "mode": "0440",
            "upload": "post-activation",
        },
    )
    assert spec.source == ("sops", "-d", "x.yaml")
    assert PreparedKey(spec, b"").ownership.owner == "acme:nogroup"
    assert PreparedKey(spec, b"").ownership.octal == "0440"
    assert spec.upload is Upload.POST


@pytest.mark.parametrize(
    "table",
    [
        {},
        {"file": "a", "env": "B"},
        {"env": "A", "dest": "relative/path"},
        {"env": "A", "user": "-oProxyCommand=x"},
        {"env": "A", "group": "a b"},
        {"env": "A", "mode": "rw"},
        {"env": "A", "mode": "4755"},
        {"env": "A", "upload": "later"},
    ],
)
def test_spec_refuses_bad_tables(table: dict[str, Any]) -> None:
    assert key_issues(table) is not None


def test_sources_file_env_command(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(SECRET)
    file_spec = typed_key("a", {"file": "f"})
    assert read_source(file_spec, node="n", base_dir=str(tmp_path)) == SECRET
    env_spec = typed_key("b", {"env": "NH_TEST_KEY"})
    assert read_source(env_spec, node="n", base_dir="/", env={"NH_TEST_KEY": "v"}) == b"v"
    # A command runs in the inventory's directory and its bytes come back untouched.
    cmd = [sys.executable, "-c", "import sys; sys.stdout.buffer.write(open('f','rb').read())"]
    cmd_spec = typed_key("c", {"command": cmd})
    assert read_source(cmd_spec, node="n", base_dir=str(tmp_path)) == SECRET


def test_missing_sources_name_node_and_key(tmp_path: Path) -> None:
    spec = typed_key("a", {"file": "nope"})
    with pytest.raises(KeySourceError, match=r"^web-1: key 'a': cannot read .*nope"):
        read_source(spec, node="web-1", base_dir=str(tmp_path))
    env_spec = typed_key("b", {"env": "NH_UNSET"})
    with pytest.raises(KeySourceError, match="NH_UNSET is not set"):
        read_source(env_spec, node="web-1", base_dir="/", env={})
    missing = typed_key("c", {"command": ["/nonexistent/sops"]})
    with pytest.raises(KeySourceError, match="could not start"):
        read_source(missing, node="web-1", base_dir="/")


def test_failing_command_error_never_carries_its_stdout(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("LEAKED-SECRET")
    code = "import sys; print(open('secret').read()); print('bad key', file=sys.stderr); exit(3)"
    spec = typed_key("c", {"command": [sys.executable, "-c", code]})
    with pytest.raises(KeySourceError) as info:
        read_source(spec, node="n", base_dir=str(tmp_path))
    message = info.value.render()
    assert "exited with 3" in message and "bad key" in message
    assert "LEAKED-SECRET" not in message


def test_a_missing_source_fails_before_the_node_is_touched(
    tmp_path: Path, conn: LocalConnection
) -> None:
    (tmp_path / "ok").write_bytes(b"fine")
    node = FakeNode(
        "n1",
        {
            "a": {"file": "ok", "dest": str(tmp_path / "out" / "a")},
            # post-activation, yet read up front as well
            "b": {"file": "missing", "upload": "post-activation"},
        },
    )
    with pytest.raises(KeySourceError):
        upload_keys(conn, node, "pre-activation", emit=lambda _e: None, base_dir=str(tmp_path))
    assert conn.calls == []
    assert not (tmp_path / "out").exists()


def test_upload_writes_mode_owner_and_resends_nothing(
    tmp_path: Path, conn: LocalConnection
) -> None:
    (tmp_path / "src").write_bytes(SECRET)
    dest = tmp_path / "keys" / "deep" / "k"
    node = FakeNode(
        "n1", {"k": {"file": "src", "dest": str(dest), "user": "nobody", "mode": "0440"}}
    )
    events: list[Event] = []
    first = upload_keys(conn, node, None, emit=events.append, base_dir=str(tmp_path))
    assert first.sent == ("k",) and first.unchanged == ()
    assert dest.read_bytes() == SECRET
    info = dest.stat()
    assert stat.S_IMODE(info.st_mode) == 0o440
    assert info.st_uid == _uid("nobody") and info.st_gid == 0
    # No temp file left behind next to the key.
    assert os.listdir(dest.parent) == ["k"]
    # The bytes went on stdin only, never into argv or an event.
    assert all(SECRET not in " ".join(argv).encode() for argv, _ in conn.calls)
    assert any(data == SECRET for _, data in conn.calls)
    # Everything on the node runs elevated (sudo for a non-root login) over the shared master.
    assert set(conn.modes) == {(True, True)}
    assert not any(isinstance(e, LogLine) and "s3cr3t" in e.line for e in events)

    before = (info.st_ino, info.st_mtime_ns)
    conn.calls.clear()
    second = upload_keys(conn, node, None, emit=events.append, base_dir=str(tmp_path))
    assert second.sent_count == 0 and second.unchanged == ("k",)
    assert len(conn.calls) == 1  # the one fingerprint round trip
    after = dest.stat()
    assert (after.st_ino, after.st_mtime_ns) == before


def test_changed_content_or_mode_is_sent_again(tmp_path: Path, conn: LocalConnection) -> None:
    (tmp_path / "src").write_bytes(b"one")
    dest = tmp_path / "k"
    table: dict[str, Any] = {"file": "src", "dest": str(dest)}
    upload_keys(
        conn, FakeNode("n1", {"k": table}), None, emit=lambda _e: None, base_dir=str(tmp_path)
    )
    (tmp_path / "src").write_bytes(b"two")
    r = upload_keys(
        conn, FakeNode("n1", {"k": table}), None, emit=lambda _e: None, base_dir=str(tmp_path)
    )
    assert r.sent == ("k",) and dest.read_bytes() == b"two"
    table = {**table, "mode": "0600"}
    r = upload_keys(
        conn, FakeNode("n1", {"k": table}), None, emit=lambda _e: None, base_dir=str(tmp_path)
    )
    assert r.sent == ("k",) and stat.S_IMODE(dest.stat().st_mode) == 0o600


def test_only_the_keys_of_the_asked_time_are_written(tmp_path: Path, conn: LocalConnection) -> None:
    node = FakeNode(
        "n1",
        {
            "pre": {"env": "NH_A", "dest": str(tmp_path / "pre")},
            "post": {"env": "NH_A", "dest": str(tmp_path / "post"), "upload": "post-activation"},
        },
    )
    os.environ["NH_A"] = "x"
    try:
        r = upload_keys(conn, node, "pre-activation", emit=lambda _e: None, base_dir="/")
    finally:
        del os.environ["NH_A"]
    assert r.sent == ("pre",)
    assert (tmp_path / "pre").exists() and not (tmp_path / "post").exists()


def test_prepared_keys_are_read_once_for_both_upload_times(
    tmp_path: Path, conn: LocalConnection
) -> None:
    counter = tmp_path / "count"
    code = "open('count', 'a').write('x'); print('k')"
    node = FakeNode(
        "n1",
        {
            "pre": {"command": [sys.executable, "-c", code], "dest": str(tmp_path / "pre")},
            "post": {"env": "HOME", "dest": str(tmp_path / "post"), "upload": "post-activation"},
        },
    )
    prepared = prepare_keys(node, base_dir=str(tmp_path))
    assert "k\n" not in repr(prepared)  # the bytes never show in a repr
    pre = upload_keys(conn, node, Upload.PRE, emit=lambda _e: None, base_dir="/", prepared=prepared)
    post = upload_keys(
        conn, node, Upload.POST, emit=lambda _e: None, base_dir="/", prepared=prepared
    )
    assert (pre.sent, post.sent) == (("pre",), ("post",))
    assert counter.read_text() == "x"
    assert (tmp_path / "pre").read_bytes() == b"k\n"


def test_fingerprints_of_absent_and_present_files(tmp_path: Path, conn: LocalConnection) -> None:
    present = tmp_path / "p"
    present.write_bytes(b"abc")
    present.chmod(0o640)
    states = transfer.fingerprints(conn, [str(present), str(tmp_path / "absent")])
    assert states[1] == transfer.NotAFile(transfer.Kind.ABSENT)
    state = states[0]
    assert isinstance(state, transfer.RemoteFile)
    assert state.sha256 == transfer.sha256(b"abc")
    assert state.mode == 0o640 and state.uid == "0"
    assert state.matches(transfer.sha256(b"abc"), transfer.Ownership("root", "root", 0o640))
    assert state.matches(transfer.sha256(b"abc"), transfer.Ownership("0", "0", 0o640))
    assert not state.matches(transfer.sha256(b"abd"), transfer.Ownership("root", "root", 0o640))
    assert not state.matches(transfer.sha256(b"abc"), transfer.Ownership("root", "root", 0o600))


def test_unchanged_compares_content_and_ownership_in_one_round_trip(
    tmp_path: Path, conn: LocalConnection
) -> None:
    present = tmp_path / "p"
    present.write_bytes(b"abc")
    present.chmod(0o640)
    own = transfer.Ownership("root", "root", 0o640)
    files = [
        (str(present), transfer.sha256(b"abc"), own),
        (str(present), transfer.sha256(b"abd"), own),
        (str(present), transfer.sha256(b"abc"), transfer.Ownership("root", "root", 0o600)),
        (str(tmp_path / "absent"), transfer.sha256(b""), own),
    ]
    before = len(conn.calls)
    assert transfer.unchanged(conn, files) == [True, False, False, False]
    assert len(conn.calls) == before + 1


def test_hostile_paths_are_data_not_code(tmp_path: Path, conn: LocalConnection) -> None:
    marker = tmp_path / "pwned"
    dest = tmp_path / f"k;touch {marker};$(touch {marker})"
    transfer.write(conn, str(dest), b"x", transfer.Ownership("root", "root", 0o400))
    assert dest.read_bytes() == b"x"
    assert not marker.exists()


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def _git(repo: Path, *args: str) -> None:
    process.run(["git", "-C", str(repo), *args], timeout=30)


def test_key_files_nix_would_copy_into_the_store_are_refused(tmp_path: Path) -> None:
    flake = tmp_path / "fleet"
    (flake / "secrets").mkdir(parents=True)
    (flake / "flake.nix").write_text("{ outputs = _: { }; }\n")
    for name in ("tracked", "ignored", "untracked"):
        (flake / "secrets" / name).write_text("s")
    (tmp_path / "outside").write_text("s")
    node = FakeNode(
        "n1",
        {name: {"file": f"secrets/{name}"} for name in ("tracked", "ignored", "untracked")}
        | {"outside": {"file": "../outside"}, "cmd": {"command": ["sops", "-d", "x"]}},
    )
    base = str(flake)

    def exposed(ref: str, cwd: str = base) -> list[str]:
        found = store_exposed([node], base_dir=base, flake=ref, cwd=cwd)
        return sorted(message.split("'")[1] for message in found)

    # Not a git tree: a plain path is a path flake, and Nix copies all of it.
    assert exposed(".") == ["ignored", "tracked", "untracked"]
    assert exposed(f"path:{flake}?dir=.") == ["ignored", "tracked", "untracked"]
    assert exposed("github:owner/repo") == []
    # A git flake copies what git tracks (staged included), nothing else.
    _git(flake, "init", "-q")
    (flake / ".gitignore").write_text("secrets/ignored\n")
    _git(flake, "add", "flake.nix", ".gitignore", "secrets/tracked")
    assert exposed(".") == ["tracked"]
    assert exposed(str(flake), cwd="/") == ["tracked"]
    assert exposed(f"git+file://{flake}") == ["tracked"]
    # ... unless it is asked for as a path: flake.
    assert exposed(f"path:{flake}") == ["ignored", "tracked", "untracked"]
    with pytest.raises(UsageError, match=r"n1: key 'tracked': .* world-readable Nix store"):
        refuse_store_exposed([node], base_dir=base, flake=".", cwd=base)


def test_inventory_keys_are_validated_with_file_and_key_path() -> None:
    assert problems(
        """
[nodes.web]
keys.a = { file = "x", env = "Y" }
keys.b = { command = [] }
keys.c = { env = "A B", dest = "run/keys/c", mode = "644x", user = "-oX", upload = "later" }
keys.d = { env = "A", colour = "red" }
"""
    ) == [
        "inventory.toml: nodes.web.keys.a: needs exactly one source: file, command or env "
        "(got file and env)",
        "inventory.toml: nodes.web.keys.b.command: must be a non-empty array of strings (an argv), "
        "got array",
        'inventory.toml: nodes.web.keys.c.env: must be an environment variable name, got "A B"',
        "inventory.toml: nodes.web.keys.c.dest: must be an absolute file path without NUL or "
        'newline, got "run/keys/c"',
        'inventory.toml: nodes.web.keys.c.mode: must be an octal mode string like "0400", '
        'got "644x"',
        "inventory.toml: nodes.web.keys.c.user: must be a user or group name, or a numeric id, "
        'got "-oX"',
        'inventory.toml: nodes.web.keys.c.upload: must be "pre-activation" or '
        '"post-activation", got string "later"',
        "inventory.toml: nodes.web.keys.d.colour: unknown field",
    ]


def test_inventory_keys_merge_by_name_and_stay_out_of_the_nix_data() -> None:
    inventory = loads(
        """
[defaults]
keys.shared = { env = "A" }
keys.token = { env = "OLD", mode = "0440" }
[roles.web]
keys.token = { file = "t" }
[nodes.n1]
role = "web"
"""
    )
    node = inventory.nodes["n1"]
    # A later layer replaces a key of the same name whole (no field of the old entry remains).
    assert node.to_data(deployer=True)["keys"] == {"shared": {"env": "A"}, "token": {"file": "t"}}
    assert "keys" not in node.to_data()
    token = node.keys["token"]
    assert (token.kind, token.source, token.mode) == (SourceKind.FILE, ("t",), 0o400)


# -- files on the node against a hostile owner of their directory ---------------------------------
# `nobody` plays an application user owning the directory a key goes to. The scripts run under
# dash (Debian's sh) and bash (NixOS's sh is bash in POSIX mode) alike.

NOBODY = 65534


@pytest.fixture(params=SHELLS, ids=" ".join)
def shell_conn(tmp_path: Path, request: pytest.FixtureRequest) -> ShellConnection:
    return ShellConnection(str(tmp_path), request.param)


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.write_text("root only\n")
    victim.chmod(0o600)
    return victim


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    return home


def test_a_temp_file_swapped_for_a_symlink_mid_write_is_not_installed(
    tmp_path: Path, shell_conn: ShellConnection
) -> None:
    victim, home = _victim(tmp_path), _home(tmp_path)
    dest = home / "secret"

    def swap(tmp: str) -> None:
        # What the directory's owner can do while root streams the key into its temp file.
        os.rename(tmp, tmp + ".mine")
        os.symlink(str(victim), tmp)

    shell_conn.between = swap
    big = SECRET * 50000
    with pytest.raises(transfer.RefusedError, match="replaced while it was written"):
        transfer.write(shell_conn, str(dest), big, transfer.Ownership("nobody", "root", 0o444))
    info = victim.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)
    assert victim.read_text() == "root only\n"
    assert not dest.exists() and not dest.is_symlink()


def test_a_key_dest_that_is_a_directory_is_refused_a_symlink_replaced(
    tmp_path: Path, shell_conn: ShellConnection
) -> None:
    (tmp_path / "src").write_bytes(SECRET)
    (tmp_path / "adir").mkdir()
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to("target")
    table = {"file": "src", "dest": str(tmp_path / "adir")}
    with pytest.raises(transfer.RefusedError, match=r"^n1: key 'k': .*/adir is a directory$"):
        upload_keys(
            shell_conn,
            FakeNode("n1", {"k": table}),
            None,
            emit=lambda _e: None,
            base_dir=str(tmp_path),
        )
    assert os.listdir(tmp_path / "adir") == []

    table = {"file": "src", "dest": str(tmp_path / "link")}
    node = FakeNode("n1", {"k": table})
    sent = upload_keys(shell_conn, node, None, emit=lambda _e: None, base_dir=str(tmp_path))
    assert sent.sent == ("k",)
    assert not (tmp_path / "link").is_symlink() and (tmp_path / "link").read_bytes() == SECRET
    assert os.listdir(tmp_path / "target") == []
    again = upload_keys(shell_conn, node, None, emit=lambda _e: None, base_dir=str(tmp_path))
    assert again.unchanged == ("k",)


def test_no_path_through_another_users_symlink(tmp_path: Path, shell_conn: ShellConnection) -> None:
    home = _home(tmp_path)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "secret").write_text("private\n")
    (private / "secret").chmod(0o600)
    # The application user turns a directory of its own into a link to a root-only one.
    (home / "app").symlink_to("../private")
    os.lchown(home / "app", NOBODY, NOBODY)
    dest = str(home / "app" / "secret")
    with pytest.raises(transfer.RefusedError, match=r"home/app is a symlink in a directory"):
        transfer.write(shell_conn, dest, b"new", transfer.Ownership("nobody", "root", 0o400))
    assert (private / "secret").read_text() == "private\n"
    assert (private / "secret").stat().st_uid == 0
    (state,) = transfer.fingerprints(shell_conn, [dest])
    assert isinstance(state, transfer.NotAFile) and state.kind is transfer.Kind.UNSAFE

    # A symlink root placed in a directory only root can write is followed (/var/run -> /run).
    (tmp_path / "run").symlink_to("private")
    transfer.write(
        shell_conn, str(tmp_path / "run" / "k"), b"k", transfer.Ownership("root", "root", 0o400)
    )
    assert (private / "k").read_bytes() == b"k"


def test_fingerprints_never_look_through_a_link_or_open_a_fifo(
    tmp_path: Path, shell_conn: ShellConnection
) -> None:
    victim = _victim(tmp_path)
    (tmp_path / "link").symlink_to(victim)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    os.link(victim, tmp_path / "hard")
    paths = ["link", "fifo", "dir", "hard", "none/x"]
    states = transfer.fingerprints(shell_conn, [str(tmp_path / p) for p in paths])
    kinds = [s.kind if isinstance(s, transfer.NotAFile) else s for s in states]
    assert kinds == [
        transfer.Kind.SYMLINK,
        transfer.Kind.SPECIAL,
        transfer.Kind.DIRECTORY,
        transfer.Kind.LINKED,
        transfer.Kind.ABSENT,
    ]
    # Even when the link's target holds exactly the bytes and ownership asked for, the link is
    # not the file: it is written (replaced).
    digest = transfer.sha256(victim.read_bytes())
    own = transfer.Ownership("root", "root", 0o600)
    assert transfer.unchanged(shell_conn, [(str(tmp_path / "link"), digest, own)]) == [False]


def test_a_directory_swapped_for_a_symlink_as_it_is_entered_is_refused(
    tmp_path: Path, shell_conn: ShellConnection
) -> None:
    home = _home(tmp_path)
    (home / "app").mkdir()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    # A `stat` that, right after it examined home/app, lets the owner swap it for a symlink to a
    # root-only directory: the walk's `cd` then lands there, and must notice.
    tools = tmp_path / "tools"
    tools.mkdir()
    real = shutil.which("stat")
    (tools / "stat").write_text(
        "#!/bin/sh\n"
        f'{real} "$@"; rc=$?\n'
        f'case "$*" in *./app) [ -e {tmp_path}/armed ] && rm {tmp_path}/armed && '
        f"mv {home}/app {home}/app.old && ln -s ../private {home}/app;; esac\n"
        "exit $rc\n"
    )
    (tools / "stat").chmod(0o755)
    (tmp_path / "armed").touch()
    shell_conn.path_first = str(tools)
    with pytest.raises(transfer.RefusedError, match=r"home/app changed while it was entered"):
        transfer.write(
            shell_conn, str(home / "app" / "k"), b"x", transfer.Ownership("nobody", "root", 0o400)
        )
    assert not (tmp_path / "armed").exists()  # the swap did happen
    assert os.listdir(private) == []

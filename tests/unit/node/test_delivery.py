"""Delivery through a binary cache, its argv and its fallback (the behaviour itself is proven on
lab hosts: tests/lab/deploy/test_cache_lab.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from nixherd.errors import CommandError
from nixherd.events import RUN_WIDE, LogLine
from nixherd.fleet import caches
from nixherd.inventory.cachecfg import Cache
from nixherd.node.delivery import Delivered, FromCache, PushFromHere, System
from nixherd.run import nix
from nixherd.run.process import Result
from nixherd.run.ssh import Connection, Target

KEY = "cache-1:" + "A" * 43 + "="
SYSTEM = System("/nix/store/" + "d" * 32 + "-s.drv", "/nix/store/" + "o" * 32 + "-s")
REFUSED = (
    "warning: the substitute for '/nix/store/oooo-s' from 'http://c:8080' is not signed by any "
    "of the keys in 'trusted-public-keys'\nerror: build of '/nix/store/oooo-s' failed"
)


class FakeConnection(Connection):
    """Records the remote argv; fails with `output` when given."""

    def __init__(self, output: str | None = None) -> None:
        super().__init__(Target(node="n1", host="192.0.2.1"), control_dir="/nonexistent")
        self.output = output
        self.calls: list[tuple[list[str], bool]] = []

    def run(self, remote: Sequence[str], **kw: Any) -> Result:
        elevate = bool(kw.get("elevate"))
        self.calls.append((list(remote), elevate))
        if self.output is not None:
            raise CommandError(list(remote), 1, self.output, what=kw.get("what"))
        return Result(tuple(remote), 0, "", "")


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    monkeypatch.setattr(nix, "copy", lambda paths, **kw: found.append({"paths": paths, **kw}))
    return found


def test_substitute_argv_trusts_the_cache_alone() -> None:
    assert nix.substitute_argv(["/nix/store/x"], url="http://c:8080", public_key=KEY) == [
        "nix-store",
        "--realise",
        "--option",
        "substituters",
        "http://c:8080",
        "--option",
        "trusted-public-keys",
        KEY,
        "--option",
        "narinfo-cache-negative-ttl",
        "0",
        "--option",
        "connect-timeout",
        "10",
        "/nix/store/x",
    ]


def test_sign_argv_names_the_key_file_never_the_key() -> None:
    assert nix.sign_argv(["/nix/store/x"], key_file="/k/cache.sec") == [
        *nix.nix_argv("store", "sign", "--key-file", "/k/cache.sec", "--recursive"),
        "/nix/store/x",
    ]


def test_from_cache_realises_on_the_node_as_root(copies: list[dict[str, Any]]) -> None:
    conn = FakeConnection()
    delivery = FromCache("http://c:8080", KEY, PushFromHere())
    assert delivery.deliver(conn, SYSTEM, on_line=lambda _: None) == Delivered(
        "cache", "http://c:8080"
    )
    ((argv, elevate),) = conn.calls
    assert argv == nix.substitute_argv([SYSTEM.out_path], url="http://c:8080", public_key=KEY)
    assert elevate
    assert copies == []


def test_a_refused_signature_falls_back_to_a_direct_copy(copies: list[dict[str, Any]]) -> None:
    lines: list[str] = []
    delivery = FromCache("http://c:8080", KEY, PushFromHere())
    done = delivery.deliver(FakeConnection(REFUSED), SYSTEM, on_line=lines.append)
    assert done.way == "direct"
    assert done.cache == "http://c:8080"
    assert done.cache_error is not None and "is not signed by any of the keys" in done.cache_error
    ((copy,),) = [copies]
    assert copy["paths"] == [SYSTEM.out_path]
    assert any("copying directly instead" in line for line in lines)


def test_push_signs_and_pushes_once_per_cache(
    monkeypatch: pytest.MonkeyPatch, copies: list[dict[str, Any]]
) -> None:
    signed: list[tuple[list[str], str]] = []
    monkeypatch.setattr(
        nix, "sign", lambda paths, *, key_file, **_: signed.append((list(paths), key_file))
    )
    one = Cache("file:///c1", "http://c1", KEY, "/k/c1.sec")
    two = Cache("s3://b", "http://c2", KEY)
    systems = {
        "a": System("/nix/store/a.drv", "/nix/store/a"),
        "b": System("/nix/store/b.drv", "/nix/store/b"),
        "c": System("/nix/store/c.drv", "/nix/store/c"),
        "d": System("/nix/store/d.drv", "/nix/store/d"),  # no cache: not in the result
    }
    events: list[object] = []
    deliveries, _ = caches.push(
        {"a": one, "b": one, "c": two}, systems, fallback=PushFromHere(), emit=events.append
    )
    assert signed == [(["/nix/store/a", "/nix/store/b"], "/k/c1.sec")]  # c2 has no key: unsigned
    assert [(c["paths"], c["to"]) for c in copies] == [
        (["/nix/store/a", "/nix/store/b"], "file:///c1"),
        (["/nix/store/c"], "s3://b"),
    ]
    assert deliveries == {
        "a": FromCache("http://c1", KEY, PushFromHere()),
        "b": FromCache("http://c1", KEY, PushFromHere()),
        "c": FromCache("http://c2", KEY, PushFromHere()),
    }
    assert LogLine(RUN_WIDE, "pushing 2 systems to the cache file:///c1") in events


def test_a_failed_push_sends_its_nodes_the_direct_way(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: Any, **__: Any) -> None:
        raise CommandError(["nix", "copy"], 1, "error: cannot create /dev/null/c", what="nix copy")

    monkeypatch.setattr(nix, "copy", fail)
    cache = Cache("file:///dev/null/c", "http://c", KEY)
    deliveries, _ = caches.push(
        {"a": cache},
        {"a": System("/nix/store/a.drv", "/nix/store/a")},
        fallback=PushFromHere(),
        emit=lambda _: None,
    )
    assert deliveries == {
        "a": PushFromHere(
            cache="http://c",
            cache_error="nix copy to the cache failed: error: cannot create /dev/null/c",
        )
    }


def test_a_key_inside_the_flake_is_refused(tmp_path: Any) -> None:
    from nixherd.errors import UsageError

    inside = Cache("file:///c", "http://c", KEY, str(tmp_path / "flake" / "k.sec"))
    outside = Cache("file:///c", "http://c", KEY, str(tmp_path / "k.sec"))
    caches.refuse_exposed({"a": outside}, flake_dir=str(tmp_path / "flake"))
    with pytest.raises(UsageError, match=r"a: cache.secret_key_file .* is inside the flake"):
        caches.refuse_exposed({"a": inside}, flake_dir=str(tmp_path / "flake"))

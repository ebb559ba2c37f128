"""The parse cache: the same inventory with or without it, and every way it can fail falling
back to parsing."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from nixherd.errors import InventoryError
from nixherd.inventory import cache, load

TEXT = """
[roles.web]
tags = ["http"]
vars = { big = 9223372036854775807, f = -0.0, nested = { list = [1, "two", { three = 3.5 }] } }
[[roles.web.targets]]
host = "10.0.0.1"
[nodes.db]
tags = ["sql"]
"""


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "cache"
    monkeypatch.setenv("NIXHERD_CACHE_DIR", str(where))
    monkeypatch.delenv("NIXHERD_NO_CACHE", raising=False)
    return where


def inventory_file(tmp_path: Path, text: str = TEXT) -> Path:
    path = tmp_path / "inventory.toml"
    path.write_text(text)
    return path


def data(path: Path, *, cache_on: bool) -> dict[str, Any]:
    inventory = load(path, cache=cache_on)
    return {name: node.to_data(deployer=True) for name, node in inventory.nodes.items()}


def entries(where: Path) -> list[Path]:
    return sorted(where.glob("*.marshal"))


def test_same_inventory_from_the_cache(tmp_path: Path, cache_dir: Path) -> None:
    path = inventory_file(tmp_path)
    plain = data(path, cache_on=False)
    assert not cache_dir.exists()
    first = data(path, cache_on=True)  # parses and stores
    (stored,) = entries(cache_dir)
    assert oct(stored.stat().st_mode & 0o777) == "0o600"
    assert oct(cache_dir.stat().st_mode & 0o777) == "0o700"
    second = data(path, cache_on=True)  # from the cache
    assert plain == first == second
    assert str(second["web-10-0-0-1"]["vars"]["f"]) == "-0.0"


@pytest.mark.usefixtures("cache_dir")
def test_a_hit_skips_the_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = inventory_file(tmp_path)
    load(path, cache=True)

    def no_parsing(*_: object) -> dict[str, Any]:
        raise AssertionError("parsed although cached")

    # `nixherd.inventory.load` as an attribute is the function: patch the module itself.
    monkeypatch.setattr(sys.modules["nixherd.inventory.load"], "parse", no_parsing)
    assert list(load(path, cache=True).nodes) == ["db", "web-10-0-0-1"]


def test_an_edit_is_a_new_entry_and_is_still_validated(tmp_path: Path, cache_dir: Path) -> None:
    path = inventory_file(tmp_path)
    load(path, cache=True)
    inventory_file(tmp_path, TEXT + "[nodes.x]\nport = 0\n")
    with pytest.raises(InventoryError, match=r"must be 1\.\.65535, got 0"):
        load(path, cache=True)
    assert len(entries(cache_dir)) == 2  # the parse of a valid TOML document is kept either way
    with pytest.raises(InventoryError, match=r"must be 1\.\.65535, got 0"):
        load(path, cache=True)  # from the cache: validated all the same


def test_parse_errors_are_not_stored(tmp_path: Path, cache_dir: Path) -> None:
    path = inventory_file(tmp_path, "[nodes.a\n")
    for _ in range(2):
        with pytest.raises(InventoryError, match="invalid TOML"):
            load(path, cache=True)
    path.write_bytes(b"[nodes.a]\nhost = '\xff'\n")
    with pytest.raises(InventoryError, match="not valid UTF-8"):
        load(path, cache=True)
    assert entries(cache_dir) == []


def test_documents_marshal_cannot_write_are_parsed_each_time(
    tmp_path: Path, cache_dir: Path
) -> None:
    path = inventory_file(tmp_path, "[nodes.a.vars]\nwhen = 1979-05-27\n")
    with pytest.raises(InventoryError, match="date values are not supported"):
        load(path, cache=True)
    assert entries(cache_dir) == []


def test_a_damaged_entry_is_parsed_again_and_replaced(tmp_path: Path, cache_dir: Path) -> None:
    path = inventory_file(tmp_path)
    expected = data(path, cache_on=False)
    load(path, cache=True)
    (stored,) = entries(cache_dir)
    for damage in (b"", b"\x00garbage", stored.read_bytes()[:100], b"\xe9\x00\x00\x00\x00"):
        stored.write_bytes(damage)
        assert data(path, cache_on=True) == expected
    assert data(path, cache_on=True) == expected


def test_an_unwritable_cache_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("NIXHERD_CACHE_DIR", str(blocker / "cache"))  # under a regular file
    path = inventory_file(tmp_path)
    assert data(path, cache_on=True) == data(path, cache_on=False)


def test_turned_off(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIXHERD_NO_CACHE", "1")
    assert cache.directory() is None
    load(inventory_file(tmp_path), cache=True)
    assert not cache_dir.exists()


def test_default_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NIXHERD_NO_CACHE", raising=False)
    monkeypatch.delenv("NIXHERD_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert cache.directory() == "/somewhere/nixherd/parsed"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/home/me")
    assert cache.directory() == "/home/me/.cache/nixherd/parsed"


def test_old_entries_are_pruned(tmp_path: Path, cache_dir: Path) -> None:
    for index in range(cache.KEEP + 3):
        load(inventory_file(tmp_path, f"[nodes.n{index}]\n"), cache=True)
        newest = max(entries(cache_dir), key=lambda p: p.stat().st_mtime_ns)
        os.utime(newest, ns=((index + 1) * 10**9, (index + 1) * 10**9))  # a distinct age each
    left = entries(cache_dir)
    assert len(left) == cache.KEEP
    assert sorted(p.stat().st_mtime_ns // 10**9 for p in left) == list(range(4, cache.KEEP + 4))
    assert not any(p.name.endswith(".tmp") for p in cache_dir.iterdir())


@pytest.mark.usefixtures("cache_dir")
def test_the_parser_version_is_part_of_the_key() -> None:
    calls: list[bytes] = []

    def parse() -> dict[str, Any]:
        calls.append(b"")
        return {"nodes": {}}

    assert cache.parsed(b"x", "parser 1", parse) == {"nodes": {}}
    assert cache.parsed(b"x", "parser 1", parse) == {"nodes": {}}
    assert cache.parsed(b"x", "parser 2", parse) == {"nodes": {}}
    assert cache.parsed(b"y", "parser 2", parse) == {"nodes": {}}
    assert len(calls) == 3

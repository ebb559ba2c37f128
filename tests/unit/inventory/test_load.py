"""Loading: files that cannot be read, parse errors with their position, the size limit."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from connkit import unblocked

from nixherd.errors import InventoryError
from nixherd.inventory import load, loads
from nixherd.inventory.load import MAX_SIZE


def message(path: str | Path) -> str:
    with pytest.raises(InventoryError) as caught:
        load(path)
    return str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert message(path) == f"{path}: no such file"


def test_directory(tmp_path: Path) -> None:
    assert message(tmp_path) == f"{tmp_path}: is a directory, not an inventory file"


def test_a_fifo_or_a_device_is_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "inventory.toml"
    os.mkfifo(fifo)
    found = unblocked(fifo, lambda: message(fifo), "load() waited on a FIFO")
    assert found == f"{fifo}: not a regular file (a FIFO)"
    assert message("/dev/zero") == "/dev/zero: not a regular file (a character device)"


def test_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `nixherd.inventory.load` as an attribute is the function: take the module itself.
    load_module = sys.modules["nixherd.inventory.load"]
    monkeypatch.setattr(load_module, "MAX_SIZE", 1024 * 1024)
    path = tmp_path / "big.toml"
    path.write_text("# " + "x" * (1024 * 1024) + "\n")
    assert message(path) == f"{path}: larger than 1 MiB"
    assert MAX_SIZE == 64 * 1024 * 1024


def test_file_named_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("inventory.toml").write_text("[nodes.a]\nport = 0\n")
    assert message("inventory.toml") == "inventory.toml: nodes.a.port: must be 1..65535, got 0"


def test_parse_error_position_and_control_characters_escaped() -> None:
    with pytest.raises(InventoryError) as caught:
        loads("a = 1\nb = \x01\n")
    text = str(caught.value)
    assert text.startswith("inventory.toml: line 2, column 5: invalid TOML: ")
    assert "\x01" not in text


def test_parse_error_without_position() -> None:
    with pytest.raises(InventoryError) as caught:
        loads("[x" + ".a" * 20_000 + "]\n")
    (problem,) = caught.value.problems
    assert problem.path == ""
    assert problem.message.startswith("invalid TOML: ")


def test_bytes_and_text_give_the_same_inventory() -> None:
    text = "[nodes.a]\nhost = 'h'\ntags = ['t']\n"
    assert loads(text).nodes == loads(text.encode()).nodes

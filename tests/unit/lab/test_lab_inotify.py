"""`lab up` raises fs.inotify.max_user_instances when the hosts about to boot would exhaust it
(every host's systemd and journald take inotify instances, counted machine-wide for root)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from nixherd.errors import LabError
from nixherd.lab import inotify


@pytest.fixture
def limit_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "max_user_instances"
    monkeypatch.setattr(inotify, "LIMIT", str(path))
    monkeypatch.setattr(inotify, "instances_in_use", lambda: 100)
    return path


def test_enough_room_changes_nothing(limit_file: Path) -> None:
    limit_file.write_text("128\n")
    assert inotify.ensure_instances(4) == []  # 100 + 4 * 6 = 124 <= 128
    assert limit_file.read_text() == "128\n"


def test_too_little_room_is_raised_and_said(limit_file: Path) -> None:
    limit_file.write_text("128\n")
    notes = inotify.ensure_instances(20)
    assert limit_file.read_text() == f"{inotify.RAISED}\n"
    assert notes and "from 128 to 1024" in notes[0]
    # A hundred more hosts than even that: raised to what they need.
    limit_file.write_text("1024\n")
    inotify.ensure_instances(200)
    assert int(limit_file.read_text()) == 100 + 200 * inotify.PER_HOST


def test_a_limit_that_cannot_be_raised_is_a_clear_error(
    limit_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit_file.write_text("128\n")
    limit_file.chmod(0o444)
    monkeypatch.setattr(Path, "write_text", _refuse)
    with pytest.raises(LabError, match="inotify instances"):
        inotify.ensure_instances(50)


def _refuse(self: Path, text: str) -> int:
    del text
    raise PermissionError(13, "Permission denied", str(self))


def test_the_count_sees_this_process_s_own_instances() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    before = inotify.instances_in_use()
    fd = libc.inotify_init()
    assert fd >= 0
    try:
        assert inotify.instances_in_use() >= before + 1
    finally:
        os.close(fd)

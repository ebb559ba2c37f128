"""Test helpers: nixherd's sdist and wheel, built as `python -m build` builds them, and installed.

`python -m build` calls the build backend's PEP 517 hooks: `build_sdist` in the source tree, then
`build_wheel` in the unpacked sdist, so the wheel holds only what the sdist carried. These helpers
call the same hooks of the backend pyproject.toml names, in a child python (the hooks work in the
current directory), without build isolation: the backend comes from the test venv (the dev extra
pins it), so no registry is asked. The source tree is a copy of the checkout's files (tracked, and
new ones not ignored), so nothing is built inside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path


def _checkout_files() -> list[str]:
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and os.path.lexists(REPO / name)]


def copy_checkout(dest: Path) -> Path:
    """The checkout's files under `dest` (symbolic links stay links)."""
    for name in _checkout_files():
        source, target = REPO / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return dest


def _hook(tree: Path, hook: str, out: Path) -> Path:
    backend = tomllib.loads((tree / "pyproject.toml").read_text())["build-system"]["build-backend"]
    code = (
        "import importlib, sys; "
        "print(getattr(importlib.import_module(sys.argv[1]), sys.argv[2])(sys.argv[3]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, backend, hook, str(out)],
        cwd=tree,
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"{hook} failed:\n{result.stdout}\n{result.stderr}"
    return out / result.stdout.strip().splitlines()[-1]


def build_dists(work: Path) -> Dists:
    """Build the sdist from a copy of the checkout, then the wheel from the unpacked sdist."""
    tree = copy_checkout(work / "tree")
    out = work / "dist"
    out.mkdir()
    sdist = _hook(tree, "build_sdist", out)
    with tarfile.open(sdist) as archive:
        # The "data" filter (no absolute paths, links out or devices) exists from Python 3.11.4;
        # Debian 12's python3 is 3.11.2. The archive is our own build's either way.
        if hasattr(tarfile, "data_filter"):
            archive.extractall(work / "unpacked", filter="data")
        else:
            archive.extractall(work / "unpacked")
    (unpacked,) = (work / "unpacked").iterdir()
    wheel = _hook(unpacked, "build_wheel", out)
    return Dists(sdist=sdist, wheel=wheel)


def install_wheel(wheel: Path, target: Path) -> Path:
    """Install the wheel (without its dependencies, offline) into the directory `target`, as pip
    installs it into a venv's site-packages. Returns `target`."""
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"),
            *("--no-deps", "--no-index", "--target", str(target), str(wheel)),
        ],
        check=True,
        capture_output=True,
    )
    return target

"""Where nixherd keeps its state and logs: under $XDG_STATE_HOME/nixherd (never the current
directory), one directory per inventory; a clear error when that is not writable.

The user who meets a read-only directory is not root (root writes anywhere), so these commands
run as `nobody` (setpriv; the tests run as root, as the lab's do). The node is unreachable (port
1): `rollback` fails it at once, after the run's log directory was made.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

INVENTORY = """\
[nodes.a]
host = "127.0.0.1"
port = 1
"""


@pytest.fixture
def home() -> Iterator[Path]:
    """A directory `nobody` can read (pytest's tmp_path is root's alone), removed after."""
    if os.geteuid() != 0:
        pytest.skip("running a command as another user needs root")
    path = Path(tempfile.mkdtemp(prefix="nixherd-state-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


# What `nixherd` imports at run time. The checkout and its venv may sit where `nobody` cannot
# read (CI's clone is below /root, mode 0700): nobody runs copies of them in the test's home.
RUNTIME_PACKAGES = (
    "nixherd",
    "rtoml",
    "rich",
    "markdown_it",
    "mdurl",
    "pygments",
    "tomlkit",
    "argcomplete",
)
MAIN = "import sys; sys.path.insert(0, sys.argv.pop(1)); from nixherd.cli import main; " + (
    "sys.exit(main(sys.argv[1:]))"
)


def readable_packages(home: Path) -> Path:
    """Copies of the runtime packages in `home/pkgs` (made once per home), readable by all."""
    pkgs = home / "pkgs"
    if not pkgs.is_dir():
        for name in RUNTIME_PACKAGES:
            spec = importlib.util.find_spec(name)
            assert spec is not None and spec.origin is not None, name
            source = Path(spec.origin).parent
            shutil.copytree(source, pkgs / name, ignore=shutil.ignore_patterns("__pycache__"))
        for path in [pkgs, *pkgs.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    return pkgs


def as_nobody(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`nixherd ARGS` as nobody in `cwd` (below the test's home), with only PATH and `env` in its
    environment, run from readable copies of its code (`python -I -S`: nothing else is read)."""
    pkgs = readable_packages(cwd.parent)
    argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    argv += [os.path.realpath(sys.executable), "-I", "-S", "-c", MAIN, str(pkgs), *args]
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run(
        argv, cwd=cwd, env=clean, capture_output=True, text=True, timeout=60, check=False
    )


def fleet_in_read_only_dir(home: Path) -> Path:
    fleet = home / "fleet"
    fleet.mkdir()
    (fleet / "inventory.toml").write_text(INVENTORY)
    fleet.chmod(0o555)
    return fleet


def writable_by_nobody(path: Path) -> Path:
    path.mkdir(parents=True)
    shutil.chown(path, "nobody", "nogroup")
    return path


def test_a_read_only_fleet_directory_keeps_its_logs_in_the_state_dir(home: Path) -> None:
    fleet = fleet_in_read_only_dir(home)
    state = writable_by_nobody(home / "state")
    nobody_home = writable_by_nobody(home / "nobody")
    env = {"HOME": str(nobody_home), "XDG_STATE_HOME": str(state), "NIXHERD_NO_CACHE": "1"}
    result = as_nobody(fleet, env, "rollback")
    # The node fails (nothing listens on its port), not the run: logs had a place.
    assert result.returncode == 1, result.stdout + result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert not (fleet / ".nixherd").exists()
    (fleet_state,) = (state / "nixherd" / "fleets").iterdir()
    assert fleet_state.name.startswith("fleet-")
    (run_logs,) = (fleet_state / "logs").iterdir()
    assert (run_logs / "a.log").exists()
    assert f"logs: {run_logs}" in result.stdout


def test_an_unwritable_state_dir_is_a_clear_error(home: Path) -> None:
    fleet = fleet_in_read_only_dir(home)
    state = home / "root-only"
    state.mkdir()  # root's: nobody cannot write in it
    nobody_home = writable_by_nobody(home / "nobody")
    env = {"HOME": str(nobody_home), "XDG_STATE_HOME": str(state), "NIXHERD_NO_CACHE": "1"}
    result = as_nobody(fleet, env, "rollback")
    assert result.returncode == 2, result.stdout + result.stderr
    first, *rest = result.stderr.splitlines()
    assert first == (
        f"nixherd: error: cannot write nixherd's state: cannot create {state / 'nixherd'}: "
        "Permission denied"
    )
    assert rest == [
        "  it goes to $NIXHERD_STATE_DIR, else $XDG_STATE_HOME/nixherd, else "
        "~/.local/state/nixherd: point one of them at a writable directory, or give --log-dir DIR"
    ]


def test_nixherd_state_dir_wins_and_each_inventory_has_its_own(home: Path) -> None:
    fleet = fleet_in_read_only_dir(home)
    other = home / "other"
    other.mkdir()
    (other / "inventory.toml").write_text(INVENTORY)
    state = writable_by_nobody(home / "mine")
    nobody_home = writable_by_nobody(home / "nobody")
    env = {"HOME": str(nobody_home), "NIXHERD_STATE_DIR": str(state), "NIXHERD_NO_CACHE": "1"}
    assert as_nobody(fleet, env, "rollback").returncode == 1
    assert as_nobody(other, env, "rollback").returncode == 1
    fleets = sorted(p.name.split("-")[0] for p in (state / "fleets").iterdir())
    assert fleets == ["fleet", "other"]

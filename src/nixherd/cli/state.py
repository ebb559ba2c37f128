"""Where nixherd keeps what a run leaves on this machine: per-run logs and `--keep-result` GC roots.

Under `$NIXHERD_STATE_DIR`, else `$XDG_STATE_HOME/nixherd`, else `~/.local/state/nixherd` (the
XDG base directory rules: a relative XDG_STATE_HOME is ignored), in one directory per inventory:
`fleets/<its directory's name>-<hash of its absolute path>/{logs,results}`.

Why not beside the inventory (the old `./.nixherd`): the inventory's directory is the fleet's
flake, usually a git checkout, often read-only to the user who deploys (a shared checkout, a
path under /etc), and with a `path:` flake every file in it, logs included, is copied into the
Nix store at each evaluation, changing the flake's hash every run. The state directory is the
user's own and always writable; a state directory that is not is said so at once, before any
node is touched, with what to change.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from nixherd.errors import UsageError

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def base() -> Path:
    """nixherd's state directory, from the environment (nothing is created)."""
    explicit = os.environ.get("NIXHERD_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "nixherd"
    return Path.home() / ".local" / "state" / "nixherd"


def for_inventory(inventory: str) -> Path:
    """The directory of one inventory's state (nothing is created)."""
    path = Path(inventory).absolute()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = _SAFE.sub("_", path.parent.name)[:40] or "root"
    return base() / "fleets" / f"{name}-{digest}"


def ensure(path: Path) -> Path:
    """Create `path` (a directory under the state directory) or say clearly why not (exit 2)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable(exc.filename or path, exc) from exc
    return path


def unwritable(where: str | os.PathLike[str], exc: OSError) -> UsageError:
    """The error for a state directory that cannot be written: where, why, and what to change."""
    return UsageError(
        f"cannot write nixherd's state: cannot create {os.fspath(where)}: "
        f"{exc.strerror or exc}\n"
        "it goes to $NIXHERD_STATE_DIR, else $XDG_STATE_HOME/nixherd, else "
        "~/.local/state/nixherd: point one of them at a writable directory, or give "
        "--log-dir DIR"
    )

"""The lab: real test hosts on this machine (sshd in private namespaces, each with its own /nix).

`Lab(dir).up(n)`, `.status()`, `.down()`; the files it writes are rendered by `render`, and the
hosts' own processes (supervisor, pid 1, reboot) live in `boot`, run as a script.
"""

from nixherd.lab.hosts import (
    DEFAULT_BASE_PORT,
    DEFAULT_COUNT,
    DEFAULT_DIR,
    HostStatus,
    Lab,
    default_dir,
    namespace_pids,
)
from nixherd.lab.render import DEPLOY_USER, HostFiles

__all__ = [
    "DEFAULT_BASE_PORT",
    "DEFAULT_COUNT",
    "DEFAULT_DIR",
    "DEPLOY_USER",
    "HostFiles",
    "HostStatus",
    "Lab",
    "default_dir",
    "namespace_pids",
]

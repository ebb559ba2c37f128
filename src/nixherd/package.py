"""Where the installed package keeps the files it carries besides its modules.

They are package data (pyproject.toml), found through importlib.resources, so they are read from
wherever nixherd is installed (a venv's site-packages, or the repository for an editable install)
and never from the current directory or a source tree beside it.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def nix_library() -> str:
    """The directory holding the Nix library (lib.nix, lab.nix, default.nix, flake.nix).

    Symbolic links resolved: in the repository the package's `nix` is a link to the top-level
    nix/, and the path is shown to users, who point a flake input at it.
    """
    where = resources.files("nixherd").joinpath("nix")
    # A package imported from a zip archive has no directory Nix could read; pip never installs
    # one that way, so this is a broken installation, not bad input.
    if not isinstance(where, Path):
        raise RuntimeError(f"nixherd's Nix library is not a directory on disk: {where}")
    return os.path.realpath(where)

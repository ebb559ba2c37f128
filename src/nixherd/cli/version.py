"""`nixherd --version`: the version, and where the Nix library it carries is installed.

An argparse action, so the library is looked up only when the flag is given (every other run
builds the parser too, and `nixherd nodes` is meant to start fast).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from nixherd import __version__


def text() -> str:
    from nixherd.package import nix_library

    return f"nixherd {__version__} (Nix library: {nix_library()})"


class VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "show the version and where the Nix library is, then exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> NoReturn:
        del namespace, values, option_string  # argparse's signature; the flag takes no value
        sys.stdout.write(text() + "\n")
        parser.exit()

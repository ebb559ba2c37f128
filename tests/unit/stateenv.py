"""A pytest plugin loaded for every test (`-p stateenv` in pyproject.toml): nixherd's state (run
logs, --keep-result roots) goes to a directory of the session's own, never the user's
~/.local/state (commands run in-process and as subprocesses, which inherit the environment)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if os.environ.get("NIXHERD_STATE_DIR"):
        yield
        return
    os.environ["NIXHERD_STATE_DIR"] = str(tmp_path_factory.mktemp("nixherd-state"))
    try:
        yield
    finally:
        del os.environ["NIXHERD_STATE_DIR"]

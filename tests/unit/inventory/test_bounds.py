"""Inventory numbers, fuzzed: any number in a port or a health check gives either a node whose
numbers the run time can compute with, or a problem naming the file and the key (exit 2 from
`nixherd check`), never another exception. No host is contacted."""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from nixherd.cli import main
from nixherd.errors import InventoryError
from nixherd.inventory import loads


def toml_number() -> st.SearchStrategy[str]:
    """Numbers as TOML spells them (repr of a float is valid TOML: inf, nan, 1e+308, 0.5)."""
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.floats(min_value=-10, max_value=4000).map(repr),
        st.integers(min_value=-(2**64), max_value=2**64).map(str),
        st.integers(min_value=-5, max_value=70_000).map(str),
        st.sampled_from(
            ["0", "-0", "1e10", "1e308", "nan", "+inf", "-inf", "0x10", "1_000", "3600", "0.009"]
        ),
    )


KEYS = {
    "port": "nodes.a.port",
    "timeout": "nodes.a.checks.c.timeout",
    "retries": "nodes.a.checks.c.retries",
    "interval": "nodes.a.checks.c.interval",
    "status": "nodes.a.checks.h.status",
    "htimeout": "nodes.a.checks.h.timeout",
}


def document(values: dict[str, str]) -> str:
    lines = ["[nodes.a]", 'host = "127.0.0.1"']
    if "port" in values:
        lines.append(f"port = {values['port']}")
    lines += ["[nodes.a.checks.c]", 'tcp = "{host}:22"']
    lines += [
        f"{key} = {values[key]}" for key in ("timeout", "retries", "interval") if key in values
    ]
    lines += ["[nodes.a.checks.h]", 'http = "http://{host}:8080/"']
    if "status" in values:
        lines.append(f"status = {values['status']}")
    if "htimeout" in values:
        lines.append(f"timeout = {values['htimeout']}")
    return "\n".join(lines) + "\n"


@settings(max_examples=400, deadline=None)
@given(values=st.dictionaries(st.sampled_from(sorted(KEYS)), toml_number()))
def test_inventory_numbers_are_bounded_or_refused(values: dict[str, str]) -> None:
    text = document(values)
    try:
        inventory = loads(text)
    except InventoryError as exc:
        for problem in exc.problems:
            assert problem.file == "inventory.toml"
            # A TOML syntax error names a line; anything else names one of the keys set.
            assert problem.path.startswith("line ") or problem.path in {
                KEYS[key] for key in values
            }, problem
        return
    node = inventory.nodes["a"]
    assert node.port is None or 1 <= node.port <= 65535  # None: not set, ssh decides
    for check in node.checks.values():
        for seconds in (check.timeout, check.interval, check.budget):
            assert math.isfinite(seconds) and 0 <= seconds < threading.TIMEOUT_MAX
        assert check.timeout > 0 and 100 <= check.status <= 599


@settings(max_examples=100, deadline=None)
@given(values=st.dictionaries(st.sampled_from(sorted(KEYS)), toml_number()))
def test_check_command_exits_0_or_2_with_a_message(values: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "inventory.toml"
        path.write_text(document(values))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["-i", str(path), "check"])
    if code == 0:
        assert out.getvalue() == "1 node, 0 roles: ok\n" and err.getvalue() == ""
    else:
        assert code == 2
        assert err.getvalue().startswith("nixherd: error: ") and "problem" in err.getvalue()
        assert all(line.startswith(f"{path}: ") for line in out.getvalue().splitlines())

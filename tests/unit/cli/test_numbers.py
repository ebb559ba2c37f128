"""Command-line numbers and paths: every number has bounds and a clear message (exit 2, the option
named), never an internal error or a hang; a fuzz test over every numeric option of every command.

Nothing here starts a lab host or nix: a bad number is refused while parsing, and a good one ends
at `apply --dry-run` (the plan, nothing contacted) or at a selection that matches no node.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from connkit import unblocked
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nixherd.cli import main
from nixherd.run import process

# A node nothing listens for (port 1): should a command ever get past parsing by mistake, its ssh
# fails at once instead of deploying anything.
INVENTORY = """\
[nodes.a]
host = "127.0.0.1"
port = 1
"""
NO_MATCH = "no-such-node-*"

# Every numeric option of every command, with the kind of number it takes.
SECONDS = "seconds"
PARALLEL = "parallel"
COUNT = "count"
OPTIONS: list[tuple[tuple[str, ...], str, str]] = [
    (("apply",), "--confirm-timeout", SECONDS),
    (("apply",), "--reboot-timeout", SECONDS),
    (("apply",), "--activation-timeout", SECONDS),
    (("apply",), "--parallel", PARALLEL),
    (("apply",), "--canary", COUNT),
    (("rollback",), "--confirm-timeout", SECONDS),
    (("rollback",), "--activation-timeout", SECONDS),
    (("rollback",), "--parallel", PARALLEL),
    (("exec",), "--timeout", SECONDS),
    (("exec",), "--parallel", PARALLEL),
    (("status",), "--parallel", PARALLEL),
    (("diff",), "--parallel", PARALLEL),
    (("check-health",), "--parallel", PARALLEL),
    (("keys", "upload"), "--parallel", PARALLEL),
    (("data", "push"), "--parallel", PARALLEL),
    (("data", "diff"), "--parallel", PARALLEL),
]


@pytest.fixture(autouse=True, scope="module")
def _private_parse_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The commands' parse cache goes to a temporary directory, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NIXHERD_CACHE_DIR", str(tmp_path_factory.mktemp("parse-cache")))
        yield


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An inventory with a flake.nix beside it (apply --dry-run only checks that it exists)."""
    directory = tmp_path_factory.mktemp("fleet")
    (directory / "inventory.toml").write_text(INVENTORY)
    (directory / "flake.nix").write_text("{ outputs = _: { }; }\n")
    return directory / "inventory.toml"


def argv_for(inventory: Path, command: Sequence[str], option: str, value: str) -> list[str]:
    """The command line trying `option value`; it does no work whatever the value."""
    argv = ["-i", str(inventory), *command, f"{option}={value}"]
    if command[0] == "apply":
        return [*argv, "--dry-run"]
    argv += ["--on", NO_MATCH]
    if command[0] == "exec":
        argv += ["--", "true"]
    return argv


def run_main(argv: Sequence[str]) -> tuple[int, str, str]:
    """main() in-process, argparse's own exit included: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def nixherd(*argv: str, timeout: float = 60) -> process.Result:
    """The installed `nixherd` entry point as a user runs it."""
    entry = Path(sys.executable).with_name("nixherd")
    return process.run([str(entry), *argv], check=False, timeout=timeout)


# --- each bad value the issue names, each command that takes it -----------------------------------

BAD: list[tuple[str, str]] = [
    (SECONDS, "nan"),
    (SECONDS, "inf"),
    (SECONDS, "-inf"),
    (SECONDS, "1e300"),
    (SECONDS, "1e999"),
    (SECONDS, "0"),
    (SECONDS, "-1"),
    (SECONDS, "604800.5"),
    (SECONDS, "0x10"),
    (SECONDS, "ten"),
    (PARALLEL, "-1"),
    (PARALLEL, "1001"),
    (PARALLEL, "1.5"),
    (PARALLEL, "nan"),
    (COUNT, "-1"),
    (COUNT, "1000001"),
    (COUNT, "1e3"),
]


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        (command, option, value)
        for command, option, kind in OPTIONS
        for bad_kind, value in BAD
        if bad_kind == kind
    ],
)
def test_bad_numbers_are_refused_naming_the_option(
    fleet: Path, command: tuple[str, ...], option: str, value: str
) -> None:
    code, out, err = run_main(argv_for(fleet, command, option, value))
    assert code == 2, (out, err)
    last = err.strip().splitlines()[-1]
    assert f"error: argument {option}: must be " in last, err
    assert repr(value) in last
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize(
    ("option", "value"),
    [("-n", "0"), ("-n", "-1"), ("-n", "65536"), ("--base-port", "0"), ("--base-port", "70000")],
)
def test_lab_numbers_are_bounds_checked_while_parsing(
    tmp_path: Path, option: str, value: str
) -> None:
    # Only bad values here: a good one would start lab hosts.
    code, _, err = run_main(["lab", "up", "--dir", str(tmp_path), f"{option}={value}"])
    assert code == 2, err
    assert f"error: argument {option}: must be " in err and repr(value) in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("value", "shown"),
    [("0.5", "0.5"), ("1e2", "100"), ("604800", "604800"), (" 45 ", "45")],
)
def test_good_seconds_reach_the_plan(fleet: Path, value: str, shown: str) -> None:
    code, out, err = run_main(argv_for(fleet, ("apply",), "--confirm-timeout", value))
    assert (code, err) == (0, "")
    assert f"confirm within {shown} s or roll back" in out


def test_activation_timeout_reaches_the_plan_and_the_options(fleet: Path) -> None:
    from nixherd.cli import apply, build_parser

    code, out, err = run_main(argv_for(fleet, ("apply",), "--activation-timeout", "45"))
    assert (code, err) == (0, "")
    assert "(stopped if still running after 45 s)" in out
    given = ["-i", str(fleet), "apply", "--activation-timeout", "7.5"]
    args = build_parser("apply").parse_args(given)
    assert apply.options_from(args).activation_timeout == 7.5
    assert apply.options_from(args).to_data()["activation_timeout"] == 7.5
    default = build_parser("apply").parse_args(["-i", str(fleet), "apply"])
    assert apply.options_from(default).activation_timeout == 600


def test_parallel_zero_means_all_and_the_bound_is_accepted(fleet: Path) -> None:
    from nixherd.cli import numbers

    code, out, _ = run_main(argv_for(fleet, ("apply",), "--parallel", "0"))
    assert code == 0 and "nodes: 1 (at most all at once)" in out
    code, out, _ = run_main(argv_for(fleet, ("apply",), "--parallel", str(numbers.MAX_PARALLEL)))
    assert code == 0 and f"(at most {numbers.MAX_PARALLEL} at once)" in out


def test_the_messages_say_the_bounds() -> None:
    import argparse

    from nixherd.cli import numbers

    with pytest.raises(
        argparse.ArgumentTypeError,
        match=r"^must be a number of seconds, 0 < S <= 604800, got 'nan'$",
    ):
        numbers.seconds("nan")
    with pytest.raises(
        argparse.ArgumentTypeError, match=r"^must be an integer 0..1000 \(0: all\), got '-1'$"
    ):
        numbers.parallel("-1")
    with pytest.raises(
        argparse.ArgumentTypeError, match=r"^must be an integer 0..1000000, got '-1'$"
    ):
        numbers.count("-1")
    assert numbers.seconds("30") == 30.0
    assert numbers.parallel("+7") == 7


# --- paths: --log-dir and -i ----------------------------------------------------------------------


def test_a_log_dir_that_cannot_be_made_is_bad_input(fleet: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    for log_dir in ("/proc/nonexistent", str(a_file / "logs")):
        code, out, err = run_main(["-i", str(fleet), "rollback", "--on", "a", "--log-dir", log_dir])
        assert code == 2, err
        assert err.startswith(f"nixherd: error: --log-dir {log_dir}: cannot create "), err
        assert "internal error" not in err and out == ""


@contextlib.contextmanager
def fifo(path: Path) -> Iterator[Path]:
    os.mkfifo(path)
    try:
        yield path
    finally:
        path.unlink()


def test_an_inventory_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    with fifo(tmp_path / "inventory.toml") as path:
        code, out, err = unblocked(
            path,
            lambda: run_main(["-i", str(path), "nodes"]),
            "reading an inventory that is a FIFO blocked",
        )
    assert code == 2 and out == ""
    assert err == f"nixherd: error: {path}: not a regular file (a FIFO)\n"


# --- the real entry point, one per class ---------------------------------------------------------


def test_entry_point_refuses_each_class_of_bad_input(fleet: Path, tmp_path: Path) -> None:
    # A timeout that used to end in "internal error" (exit 70), with a node selected.
    result = nixherd("-i", str(fleet), "exec", "--timeout", "1e300", "--", "true")
    assert result.returncode == 2, result.stderr
    assert "error: argument --timeout: must be a number of seconds" in result.stderr
    # A parallelism that used to be accepted.
    result = nixherd("-i", str(fleet), "status", "--no-eval", "--parallel", "-1")
    assert result.returncode == 2, result.stderr
    assert "error: argument --parallel: must be an integer 0..1000 (0: all)" in result.stderr
    # A log directory that cannot be made.
    result = nixherd("-i", str(fleet), "rollback", "--log-dir", "/proc/nonexistent")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("nixherd: error: --log-dir /proc/nonexistent: cannot create")
    # An inventory that is a FIFO: refused, not waited on.
    with fifo(tmp_path / "pipe.toml") as path:
        result = nixherd("-i", str(path), "nodes", timeout=20)
    assert result.returncode == 2
    assert result.stderr == f"nixherd: error: {path}: not a regular file (a FIFO)\n"
    for output in (result.stdout, result.stderr):
        assert "Traceback" not in output


# --- fuzz: any text for any numeric option ------------------------------------------------------


def in_bounds(kind: str, text: str) -> bool:
    """The documented rule, independently: which texts an option takes."""
    import re

    text = text.strip()
    if kind == SECONDS:
        if not re.fullmatch(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", text):
            return False
        value = float(text)
        return math.isfinite(value) and 0 < value <= 7 * 24 * 3600
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return False
    high = 1000 if kind == PARALLEL else 1_000_000
    return 0 <= int(text) <= high


def numberish() -> st.SearchStrategy[str]:
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.floats(min_value=-1e6, max_value=1e7).map(lambda f: f"{f:g}"),
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
        st.integers(min_value=-5, max_value=1_000_005).map(str),
        st.sampled_from(["nan", "NaN", "inf", "-inf", "infinity", "1e-400", "0x1f", "1_000", "٣"]),
        st.text(max_size=12),
    )


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(option=st.sampled_from(OPTIONS), value=numberish())
def test_fuzz_numeric_options(
    fleet: Path, option: tuple[tuple[str, ...], str, str], value: str
) -> None:
    command, name, kind = option
    if "\x00" in value:
        value = value.replace("\x00", "")
    code, out, err = run_main(argv_for(fleet, command, name, value))
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err and "internal error" not in err
    if in_bounds(kind, value):
        # Taken: the command went on to its dry run, or to the empty selection.
        if command[0] == "apply":
            assert code == 0 and out.startswith("goal: switch\n"), err
        else:
            assert code == 2 and f'--on "{NO_MATCH}" matches no node' in err, err
    else:
        assert code == 2 and out == ""
        assert f"error: argument {name}: " in err, err

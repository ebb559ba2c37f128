"""protocol: the watchdog's status table agrees with the script's header; status lines parse."""

from __future__ import annotations

import re

import pytest

from nixherd.node.activation import watchdog_script
from nixherd.node.protocol import (
    Lock,
    Marker,
    ProtocolError,
    Status,
    describe,
    failed_units,
    parse_marker,
    parse_progress,
)

_ROW = re.compile(
    r"#   (?P<word>[a-z-]+)(?: (?P<argument>[A-Z]+))? +(?P<state>settled|running) +(?P<meaning>.+)"
)


def header_rows() -> list[tuple[str, bool, str, str]]:
    """The status table in the script's header: the rows after "Status words", to a bare "#"."""
    lines = watchdog_script().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# Status words"))
    rows: list[tuple[str, bool, str, str]] = []
    table = False
    for line in lines[start + 1 :]:
        if line == "#":
            if table:
                break
            table = True
            continue
        if not table:
            continue
        row = _ROW.fullmatch(line)
        assert row is not None, f"not a status row in the watchdog's header: {line!r}"
        rows.append((row["word"], row["state"] == "settled", row["argument"] or "", row["meaning"]))
    return rows


def test_the_scripts_header_and_the_status_table_agree_word_for_word() -> None:
    table = [(s.value, s.settled, s.argument, s.meaning) for s in Status]
    assert header_rows() == table


def test_the_scripts_settled_function_agrees_with_the_table() -> None:
    # settled() in the script lists the statuses still running; every other word is settled.
    script = watchdog_script()
    body = script[script.index("settled() {") :]
    case = body.splitlines()[2].strip()
    assert case.endswith(") return 1 ;;")
    running = {word.strip().rstrip("*") for word in case.split(")")[0].split("|")}
    assert running == {s.value for s in Status if not s.settled}


def test_every_word_the_script_sets_is_in_the_table() -> None:
    script = watchdog_script()
    # A command at a line's start or after || or &&: `finish` in a message is no status.
    said = set(re.findall(r'(?:^|\|\||&&)\s*(?:set_status|finish) "?([a-z-]+)', script, re.M))
    # `lost` and `missing` are what followers are told, not what the watchdog writes.
    said |= {"lost", "missing"}
    assert said == {s.value for s in Status} - {"rebooted"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "@nixherd status=rolled-back timeout offset=123 boot=b/7",
            Marker(Status.ROLLED_BACK, "timeout", 123, "b/7"),
        ),
        (
            "@nixherd status=missing offset=none boot=two/9",
            Marker(Status.MISSING, "", None, "two/9"),
        ),
        ("@nixherd status=confirmed", Marker(Status.CONFIRMED)),
        (
            "@nixherd status=lost rolling-back aborted offset=0 boot=x/",
            Marker(Status.LOST, "rolling-back aborted", 0, "x/"),
        ),
        ("@nixherd status=waiting offset=5\n", Marker(Status.WAITING, "", 5)),
    ],
)
def test_status_lines_parse(line: str, expected: Marker) -> None:
    assert parse_marker(line) == expected


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("status=done", "not a watchdog status line"),
        ("@nixherd status=finished offset=1", "unknown watchdog status 'finished'"),
        ("@nixherd status=failed offset=1 boot=b", "'failed' takes a REASON"),
        ("@nixherd status=done early offset=1", "'done' takes nothing"),
        ("@nixherd status=done offset=x1", "malformed"),
        ("@nixherd status=", "malformed"),
    ],
)
def test_a_malformed_status_line_is_a_clear_error(line: str, error: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(error)):
        parse_marker(line)


def test_a_marker_prints_as_the_status_the_script_wrote() -> None:
    line = "@nixherd status=rolled-back aborted offset=1"
    assert str(parse_marker(line)) == "rolled-back aborted"
    assert str(Marker(Status.CONFIRMED)) == "confirmed"


def test_progress_lines() -> None:
    assert parse_progress("@nixherd offset=42") == 42
    assert parse_progress("@nixherd offset=x") is None
    assert parse_progress("@nixherd status=done offset=4") is None


def test_locks() -> None:
    held = Lock.from_link("0123456789abcdef 12 1700000000 me@host")
    assert held == Lock("0123456789abcdef", "12", "1700000000", "me@host")
    # A lock nixherd did not make names no activation; a short one, unknown fields.
    assert Lock.from_link("../x 1") == Lock(None, "1", "?", "?")
    refusal = Lock.from_refusal("locked since=5 pid=6 by=a@b")
    assert refusal == Lock(None, "6", "5", "a@b")
    assert Lock.from_refusal("refusing: /run") is None
    assert Lock.from_refusal("") is None


def test_failed_units_are_read_from_the_switch_output() -> None:
    log = [
        "warning: the following units failed: old.service",
        "nixherd: switch-to-configuration test",
        "warning: the following units failed: a.service, b@x.socket",
        "\u25cf a.service - A",
    ]
    # The last report is the switch's own (an earlier one may be a previous run's).
    assert failed_units(log) == ("a.service", "b@x.socket")
    assert failed_units(["nothing to see"]) == ()
    # Only unit names are taken from the node's output.
    assert failed_units(["warning: the following units failed: a.service, $(x), b c"]) == (
        "a.service",
    )


def test_exit_4_is_described_as_a_failed_unit() -> None:
    assert describe("activation-exit-4") == "the switch happened but a unit failed (exit 4)"
    assert describe("activation-exit-4", ("warning: the following units failed: a.service",)) == (
        "the switch happened but a unit failed (exit 4): a.service"
    )
    assert describe("activation-exit-3") == "activation failed (exit 3)"

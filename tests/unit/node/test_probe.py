"""probe.py: the state script (run for real with the local sh), parsing, up-to-date rules."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from nixherd.node.goal import Goal
from nixherd.node.probe import BOOTMARK_SH, SCRIPT, NodeState, boot_marker, parse, probe
from nixherd.node.protocol import Lock
from nixherd.run import process
from nixherd.run.process import Result
from nixherd.run.ssh import Connection, Target

TOP = "/nix/store/" + "a" * 32 + "-system"
OLD = "/nix/store/" + "b" * 32 + "-system"


def state(**kw: object) -> NodeState:
    fields: dict[str, object] = {
        "current": OLD,
        "profile": OLD,
        "generation": 3,
        "generation_time": 0,
        "boot": "x/1",
        "has_target": False,
    }
    fields.update(kw)
    return NodeState(**fields)  # type: ignore[arg-type]


def test_parse_full_output() -> None:
    out = (
        f"current={TOP}\nprofile={TOP}\ngeneration=system-12-link\ngeneration_time=1700000000\n"
        "boot_id=abc\npid1=1 (my init) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 4242 9\n"
        "valid=1\n"
    )
    got = parse(out)
    assert got == NodeState(TOP, TOP, 12, 1700000000, "abc/4242", True)


def test_parse_fresh_host_without_profile() -> None:
    got = parse("current=\nboot_id=\npid1=\n")
    assert got.current is None and got.profile is None and got.generation is None
    assert got.has_target is False


def test_boot_marker_survives_spaces_and_parens_in_the_command_name() -> None:
    stat = "1 (a) b (c)) S " + " ".join(str(i) for i in range(2, 30))
    # After ") ": state is field 3; start time is field 22, i.e. the 20th after the name.
    assert boot_marker("id", stat) == "id/" + str(2 + 18)


@pytest.mark.parametrize(
    ("goal", "kw", "expected"),
    [
        (Goal.SWITCH, {"current": TOP, "profile": TOP}, True),
        (Goal.SWITCH, {"current": TOP, "profile": OLD}, False),
        (Goal.SWITCH, {"current": OLD, "profile": TOP}, False),
        (Goal.BOOT, {"current": OLD, "profile": TOP}, True),
        (Goal.BOOT, {"current": TOP, "profile": OLD}, False),
        (Goal.TEST, {"current": TOP, "profile": OLD}, True),
        (Goal.TEST, {"current": OLD, "profile": TOP}, False),
        (Goal.DRY_ACTIVATE, {"current": TOP}, True),
        (Goal.DRY_ACTIVATE, {"current": OLD}, False),
        (Goal.PUSH, {"has_target": True}, True),
        (Goal.PUSH, {"has_target": False, "current": OLD}, False),
    ],
)
def test_up_to_date_rules(goal: Goal, kw: dict[str, object], expected: bool) -> None:
    assert state(**kw).up_to_date(goal, TOP) is expected


@pytest.mark.parametrize(
    ("goal", "kw", "expected"),
    [
        # `apply boot` earlier set the profile: without a reboot into it, not up to date.
        (Goal.BOOT, {"current": OLD, "profile": TOP, "booted": OLD}, False),
        (Goal.BOOT, {"current": TOP, "profile": TOP, "booted": TOP}, True),
        (Goal.BOOT, {"current": OLD, "profile": TOP, "booted": None}, False),
        (Goal.SWITCH, {"current": TOP, "profile": TOP, "booted": OLD}, False),
        (Goal.SWITCH, {"current": TOP, "profile": TOP, "booted": TOP}, True),
        (Goal.SWITCH, {"current": TOP, "profile": OLD, "booted": TOP}, False),
    ],
)
def test_up_to_date_with_reboot_needs_the_booted_system(
    goal: Goal, kw: dict[str, object], expected: bool
) -> None:
    assert state(**kw).up_to_date(goal, TOP, reboot=True) is expected


def test_parse_reads_the_booted_system() -> None:
    got = parse(f"current={TOP}\nbooted={OLD}\nprofile={TOP}\nboot_id=a\npid1=\n")
    assert got.booted == OLD and got.current == TOP
    assert parse("current=\nbooted=\n").booted is None


def test_script_runs_in_a_real_shell(tmp_path: Path) -> None:
    # The script is constant; the wanted path is its one positional argument, never code.
    hostile = "/nix/store/$(touch " + str(tmp_path / "pwned") + ")"
    result = process.run(["sh", "-c", SCRIPT, "nixherd-probe", hostile])
    assert not (tmp_path / "pwned").exists()
    got = parse(result.stdout)
    assert got.has_target is False
    assert got.boot.split("/")[1].isdigit()
    if os.path.exists("/proc/sys/kernel/random/boot_id"):
        assert got.boot.startswith(Path("/proc/sys/kernel/random/boot_id").read_text().strip())


def test_probe_argv_is_quoted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []

    def fake(argv: tuple[str, ...], **_kw: object) -> Result:
        calls.append(tuple(argv))
        return Result(tuple(argv), 0, f"current={TOP}\nboot_id=b\npid1=\n", "")

    monkeypatch.setattr(process, "run", fake)
    conn = Connection(Target("web-1", "192.0.2.1", "deploy", 2222), control_dir="/tmp/nh-x")
    got = probe(conn, TOP)
    assert got.current == TOP
    (argv,) = calls
    assert argv[:3] == ("ssh", "-T", "-x")
    assert argv[-2] == "deploy@192.0.2.1"
    assert shlex.split(argv[-1]) == ["sh", "-c", SCRIPT, "nixherd-probe", TOP]


LOCK = "0123456789abcdef 4242 2026-11-30T12:00:00Z me@here"


def test_parse_an_activation_in_flight() -> None:
    got = parse(f"current={TOP}\nprofile={OLD}\nlock={LOCK}\nlock_toplevel={TOP}\n")
    assert got.lock == LOCK
    assert got.in_flight == "0123456789abcdef"
    assert got.lock_toplevel == TOP
    # A lock whose id nixherd did not make names no activation to follow.
    assert parse("lock=../x 1 2 3\n").in_flight is None


@pytest.mark.parametrize("goal", [Goal.SWITCH, Goal.BOOT, Goal.TEST, Goal.DRY_ACTIVATE])
def test_a_node_with_an_activation_in_flight_is_never_up_to_date(goal: Goal) -> None:
    # Everything says "up to date" but the lock: until that activation is confirmed, the node
    # may still roll back.
    done = state(current=TOP, profile=TOP, lock=LOCK, lock_toplevel=TOP)
    assert done.up_to_date(goal, TOP) is False
    assert state(current=TOP, profile=TOP).up_to_date(goal, TOP) is True


def test_push_does_not_care_about_an_activation_in_flight() -> None:
    assert state(has_target=True, lock=LOCK).up_to_date(Goal.PUSH, TOP) is True


def test_bootmark_sh_agrees_with_boot_marker() -> None:
    result = process.run(["sh", "-c", BOOTMARK_SH + '\nbootmark\nprintf "%s" "$boot"'])
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot_id = f.read().strip()
    with open("/proc/1/stat") as f:
        assert result.stdout == boot_marker(boot_id, f.read())


def test_elevated_probe_goes_through_sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []

    def fake(argv: tuple[str, ...], **_kw: object) -> Result:
        calls.append(tuple(argv))
        return Result(tuple(argv), 0, f"current={TOP}\nlock={LOCK}\n", "")

    monkeypatch.setattr(process, "run", fake)
    conn = Connection(Target("web-1", "192.0.2.1", "deploy", 2222), control_dir="/tmp/nh-x")
    got = probe(conn, TOP, elevate=True)
    assert got.in_flight == "0123456789abcdef"
    assert shlex.split(calls[0][-1])[:3] == ["sudo", "-n", "--"]


def test_the_lock_holder_is_the_protocols_lock() -> None:
    got = parse(f"current={TOP}\nlock={LOCK}\n")
    assert got.holder == Lock.from_link(LOCK)
    assert got.holder is not None and got.holder.activation_id == got.in_flight
    assert parse(f"current={TOP}\n").holder is None

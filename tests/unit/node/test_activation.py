"""activation: the argv sent to the target, and how the watchdog's answers become results.

The watchdog itself runs for real in tests/lab/safety; here the ssh processes are faked to check
argv and the deployer's side of the protocol.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from nixherd.errors import CommandError, NixherdError
from nixherd.events import Event, LogLine, Stage, StageFinished, StageStarted
from nixherd.inventory.parse_entries import parse_check
from nixherd.node import activation, watchdog
from nixherd.node.abort import ABORT_SECONDS, Aborts
from nixherd.node.activation import (
    ActivationError,
    ActivationOptions,
    LockHeldError,
    activate,
    start_argv,
    watchdog_argv,
)
from nixherd.node.checks import CheckKind, HealthCheck
from nixherd.node.goal import Goal
from nixherd.node.probe import boot_marker
from nixherd.node.protocol import parse_marker
from nixherd.run import process
from nixherd.run.process import Result
from nixherd.run.ssh import Connection, Target

TOP = "/nix/store/" + "a" * 32 + "-nixos-system-web-1"
PREV = "/nix/store/" + "b" * 32 + "-nixos-system-web-1"


@dataclass
class Call:
    argv: list[str]
    remote: list[str]
    input: bytes | str | None

    @property
    def words(self) -> list[str]:
        return self.remote[3:] if self.remote[:3] == ["sudo", "-n", "--"] else self.remote

    @property
    def mode(self) -> str:
        """The watchdog mode, or the command's name for anything else (a check)."""
        words = self.words
        if words[:2] == ["sh", "-c"] and words[3] == "nixherd-probe":
            return "probe"
        if words[:2] == ["sh", "-c"]:
            return words[5]
        if words[:2] == ["sh", "-s"]:
            return words[4]
        return words[0]

    @property
    def new_connection(self) -> bool:
        return "ControlPath=none" in self.argv


Reply = tuple[int, str] | BaseException


@dataclass
class FakeNode:
    """Answers each watchdog mode from a script of replies (the last one repeats)."""

    replies: dict[str, list[Reply]]
    calls: list[Call] = field(default_factory=list)

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        check: bool = True,
        on_line: Callable[[str], None] | None = None,
        what: str | None = None,
        node: str | None = None,
    ) -> Result:
        del env, cwd, timeout, what, node
        remote = shlex.split(argv[-1])
        call = Call(list(argv), remote, input)
        self.calls.append(call)
        queue = self.replies[call.mode]
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, BaseException):
            raise reply
        code, out = reply
        if on_line is not None:
            for line in out.splitlines():
                on_line(line)
        result = Result(tuple(argv), code, out, "")
        if check and code != 0:
            raise CommandError(argv, code, out)
        return result

    def modes(self) -> list[str]:
        return [c.mode for c in self.calls]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, list[Reply]]], FakeNode]]:
    monkeypatch.setattr(watchdog, "_RETRY", 0.0)

    def make(replies: dict[str, list[Reply]]) -> FakeNode:
        node = FakeNode(replies)
        monkeypatch.setattr(process, "run", node.run)
        return node

    yield make


def ignore(_event: Event) -> None:
    pass


def connection(user: str = "root") -> Connection:
    return Connection(Target(node="web-1", host="10.0.0.1", user=user), control_dir="/tmp/nh-x")


def started(previous: str = PREV) -> Reply:
    return (0, f"previous={previous}\nprevgen=4\n")


def marker(status: str, offset: int = 10) -> str:
    return f"\n@nixherd status={status} offset={offset}\n"


def test_start_argv_passes_every_value_as_its_own_word() -> None:
    options = ActivationOptions(Goal.SWITCH, "web-1", confirm_timeout=30, timeout=600)
    argv = start_argv("0123abcd", TOP, options, confirm_seconds=42.5, by="me@here")
    assert argv[:2] == ["sh", "-c"]
    assert argv[3:] == [
        "nixherd",
        "0123abcd",
        "start",
        "switch",
        TOP,
        "set",
        "1",
        "43",
        "600",
        "me@here",
        "120",
    ]


@pytest.mark.parametrize(
    ("goal", "rollback", "profile", "flag"),
    [
        (Goal.SWITCH, True, "set", "1"),
        (Goal.SWITCH, False, "set", "0"),
        (Goal.TEST, True, "none", "1"),
        # No magic rollback where the running system does not change.
        (Goal.BOOT, True, "set", "0"),
        (Goal.DRY_ACTIVATE, True, "none", "0"),
    ],
)
def test_start_argv_profile_and_rollback_per_goal(
    goal: Goal, rollback: bool, profile: str, flag: str
) -> None:
    options = ActivationOptions(goal, "n", rollback=rollback)
    argv = start_argv("id", TOP, options, confirm_seconds=1, by="x")
    assert argv[6:10] == [goal.value, TOP, profile, flag]


def test_start_argv_for_a_generation() -> None:
    options = ActivationOptions(Goal.SWITCH, "n", generation=7)
    assert start_argv("id", TOP, options, confirm_seconds=1, by="x")[8] == "gen:7"
    with pytest.raises(NixherdError):
        bad = ActivationOptions(Goal.TEST, "n", generation=7)
        start_argv("id", TOP, bad, confirm_seconds=1, by="x")


def test_later_steps_run_the_copy_in_the_state_dir() -> None:
    argv = watchdog_argv("0123456789abcdef", "wait", "0", "120")
    assert argv[:2] == ["sh", "-c"]
    assert "/run/nixherd/act-$1/watchdog.sh" in argv[2]
    assert argv[3:] == ["nixherd", "0123456789abcdef", "wait", "0", "120"]
    # The id becomes part of a path: only the ids nixherd makes get through.
    with pytest.raises(NixherdError):
        watchdog_argv("../../tmp/x", "wait")


def test_a_later_step_whose_state_is_gone_says_so_with_the_boot() -> None:
    # Run for real: no /run/nixherd/act-ID here, as on a node that rebooted.
    argv = watchdog_argv(activation.new_activation_id(), "wait", "0", "120")
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    got = parse_marker(result.stdout.strip().splitlines()[-1])
    status, offset, boot = got.status, got.offset, got.boot
    assert (status, offset) == ("missing", None)
    assert boot == this_boot()


def this_boot() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot_id = f.read().strip()
    with open("/proc/1/stat") as f:
        return boot_marker(boot_id, f.read())


def test_the_watchdog_tells_the_same_boot_as_the_probe() -> None:
    info = subprocess.run(
        ["sh", "-s", "--", "-", "info"],
        input=activation.watchdog_script(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"boot={this_boot()}" in info.stdout.splitlines()


def test_switch_with_rollback_confirms_over_a_new_connection(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    node = fake(
        {
            "start": [started()],
            "wait": [
                (0, "nixherd: switch-to-configuration switch\nactivating\n" + marker("waiting"))
            ],
            "confirm": [(0, "@nixherd status=confirmed\n")],
        }
    )
    events: list[Event] = []
    result = activate(
        connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=events.append
    )
    assert result.status == "confirmed"
    assert result.previous == PREV
    assert not result.rolled_back
    assert node.modes() == ["start", "wait", "confirm"]
    start, wait, confirm = node.calls
    # The script travels on stdin; later steps reuse the ControlMaster, the confirmation does not.
    assert start.input == activation.watchdog_script()
    assert not start.new_connection and not wait.new_connection
    assert confirm.new_connection
    assert LogLine("web-1", "activating") in events
    stages = [
        (type(e).__name__, e.stage) for e in events if isinstance(e, StageStarted | StageFinished)
    ]
    assert stages == [
        ("StageStarted", Stage.ACTIVATE),
        ("StageFinished", Stage.ACTIVATE),
        ("StageStarted", Stage.CONFIRM),
        ("StageFinished", Stage.CONFIRM),
    ]


def test_non_root_goes_through_sudo(fake: Callable[[dict[str, list[Reply]]], FakeNode]) -> None:
    node = fake({"start": [started()], "wait": [(0, marker("done"))]})
    activate(connection("deploy"), TOP, ActivationOptions(Goal.BOOT, "web-1"), emit=ignore)
    for call in node.calls:
        assert call.remote[:3] == ["sudo", "-n", "--"]


def test_boot_settles_without_confirmation(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    node = fake({"start": [started()], "wait": [(0, marker("done"))]})
    result = activate(connection(), TOP, ActivationOptions(Goal.BOOT, "web-1"), emit=ignore)
    assert result.status == "done"
    assert node.modes() == ["start", "wait"]


def test_a_held_lock_fails_at_once_naming_the_holder(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    node = fake({"start": [(75, "locked since=2026-01-02T03:04:05Z pid=4242 by=alice@laptop\n")]})
    with pytest.raises(LockHeldError) as info:
        activate(connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore)
    assert str(info.value) == (
        "web-1: another deploy holds the lock since 2026-01-02T03:04:05Z"
        " (pid 4242, by alice@laptop)"
    )
    assert not info.value.rolled_back
    assert node.modes() == ["start"]


def test_failed_activation_reports_the_rollback_and_the_log(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    log = "activating\nfailing on purpose\nnixherd: rolling back (activation-exit-1)\n"
    fake({"start": [started()], "wait": [(0, log + marker("rolled-back activation-exit-1"))]})
    with pytest.raises(ActivationError) as info:
        activate(connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore)
    error = info.value
    assert error.rolled_back
    assert error.previous == PREV
    assert error.message == f"activation failed (exit 1); rolled back to {PREV}"
    assert "failing on purpose" in error.render()


def test_failed_activation_without_rollback(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    fake({"start": [started()], "wait": [(0, marker("failed activation-exit-3"))]})
    options = ActivationOptions(Goal.SWITCH, "web-1", rollback=False)
    with pytest.raises(ActivationError) as info:
        activate(connection(), TOP, options, emit=ignore)
    assert not info.value.rolled_back
    assert info.value.message == "activation failed (exit 3)"


# What switch-to-configuration says before it exits 4 (nixpkgs nixos/tests/switch-test.nix
# asserts this very line; the failed units' `systemctl status` follows it).
UNITS_FAILED = (
    "starting the following units: app.service, worker.service\n"
    "warning: the following units failed: app.service, worker.service\n"
    "\u00d7 app.service - App\n"
)


def test_a_failed_unit_rolls_back_naming_the_unit(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    log = UNITS_FAILED + "nixherd: rolling back (activation-exit-4)\n"
    fake({"start": [started()], "wait": [(0, log + marker("rolled-back activation-exit-4"))]})
    with pytest.raises(ActivationError) as info:
        activate(connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore)
    error = info.value
    assert error.rolled_back and error.previous == PREV
    assert error.message == (
        "the switch happened but units failed (exit 4): app.service, worker.service; "
        f"rolled back to {PREV}"
    )


def test_a_failed_unit_without_rollback_keeps_the_system_and_fails(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    fake({"start": [started()], "wait": [(0, UNITS_FAILED + marker("failed activation-exit-4"))]})
    options = ActivationOptions(Goal.SWITCH, "web-1", rollback=False)
    with pytest.raises(ActivationError) as info:
        activate(connection(), TOP, options, emit=ignore)
    assert not info.value.rolled_back
    assert info.value.message == (
        "the switch happened but units failed (exit 4): app.service, worker.service; "
        "the node keeps the new system (no rollback asked for)"
    )


def test_a_failed_unit_not_named_in_the_log_is_still_a_failed_unit(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    fake({"start": [started()], "wait": [(0, "lab: no\n" + marker("failed activation-exit-4"))]})
    options = ActivationOptions(Goal.TEST, "web-1", rollback=False)
    with pytest.raises(ActivationError) as info:
        activate(connection(), TOP, options, emit=ignore)
    assert info.value.message == (
        "the switch happened but a unit failed (exit 4); "
        "the node keeps the new system (no rollback asked for)"
    )


def test_failing_check_aborts_instead_of_confirming(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    node = fake(
        {
            "start": [started()],
            "wait": [
                (0, marker("waiting")),
                (0, "nixherd: rolling back (aborted)\n" + marker("rolled-back aborted", 40)),
            ],
            "false": [(1, "")],  # the check's own command
            "abort": [(0, "@nixherd status=rolled-back aborted\n")],
        }
    )
    check, _ = parse_check("app", {"command": ["false"], "retries": 0})
    assert check is not None
    with pytest.raises(ActivationError) as info:
        activate(
            connection(),
            TOP,
            ActivationOptions(Goal.SWITCH, "web-1"),
            checks=[check],
            emit=ignore,
        )
    assert node.modes() == ["start", "wait", "false", "abort", "wait"]
    abort = node.calls[3]
    assert isinstance(abort.input, str) and "health check failed" in abort.input
    assert info.value.rolled_back
    assert info.value.message.startswith("health check failed (app: exit 1)")
    # The second wait resumed the log where the first stopped.
    assert node.calls[4].remote[6] == "10"


def test_unconfirmed_node_is_followed_until_it_settles(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    # The new connection never gets through (the activation cut ssh off).
    refused = (255, "ssh: connect to host 10.0.0.1 port 22: Connection refused\n")
    node = fake(
        {
            "start": [started()],
            "wait": [(0, marker("waiting")), (0, marker("rolled-back timeout"))],
            "confirm": [refused],
        }
    )
    options = ActivationOptions(Goal.TEST, "web-1", confirm_timeout=0.05)
    events: list[Event] = []
    with pytest.raises(ActivationError) as info:
        activate(connection(), TOP, options, emit=events.append)
    assert info.value.rolled_back
    assert info.value.message.startswith("no confirmation within the timeout")
    # The evidence: a fresh login failed while the open connection kept working. The node
    # stopped answering new ssh logins; the deployer was not cut off.
    assert "cut off" not in info.value.message
    assert info.value.reason is not None
    assert "new ssh logins" in info.value.reason
    assert "Connection refused" in info.value.reason
    assert node.modes()[:3] == ["start", "wait", "confirm"]
    assert node.modes()[-1] == "wait"
    assert any(
        isinstance(e, LogLine) and "confirmation over a new connection failed" in e.line
        for e in events
    )


def test_confirmation_that_reached_the_node_too_late_blames_its_login(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    # What the lab's frozen sshd does: the new login hangs, the window runs out, the rollback
    # thaws sshd, and the confirmation gets through only to hear that the node rolled back.
    node = fake(
        {
            "start": [started()],
            "wait": [(0, marker("waiting")), (0, marker("rolled-back timeout"))],
            "confirm": [(0, marker("rolled-back timeout"))],
        }
    )
    options = ActivationOptions(Goal.TEST, "web-1", confirm_timeout=5)
    with pytest.raises(ActivationError) as info:
        activate(connection(), TOP, options, emit=ignore)
    assert info.value.rolled_back
    assert info.value.reason is not None
    assert info.value.reason.startswith("no confirmation within the timeout: the node stopped")
    assert "reached the node only after it" in info.value.reason
    assert node.modes()[:3] == ["start", "wait", "confirm"]


def test_no_confirmation_without_a_failed_login_blames_no_one(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    # The confirmation never ran (its window was over before it started): no evidence of a
    # broken login, so the reason is only the timeout, without guessing at the deployer.
    node = fake({"start": [started()], "wait": [(0, marker("rolled-back timeout"))]})
    options = ActivationOptions(Goal.TEST, "web-1", confirm_timeout=0.05)
    with pytest.raises(ActivationError) as info:
        activate(connection(), TOP, options, emit=ignore)
    assert info.value.rolled_back
    assert info.value.reason == "no confirmation within the timeout"
    assert "confirm" not in node.modes()


def test_ssh_drop_while_waiting_reconnects(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    node = fake(
        {
            "start": [started()],
            "wait": [(255, "Connection reset\n"), (0, marker("done"))],
        }
    )
    result = activate(connection(), TOP, ActivationOptions(Goal.BOOT, "web-1"), emit=ignore)
    assert result.status == "done"
    assert node.modes() == ["start", "wait", "wait"]


def test_lost_state_is_an_error(fake: Callable[[dict[str, list[Reply]]], FakeNode]) -> None:
    fake(
        {
            "start": [started()],
            "wait": [(0, marker("missing"))],
            "probe": [(0, f"current={TOP}\n")],
        }
    )
    with pytest.raises(ActivationError, match="vanished") as info:
        activate(connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore)
    assert info.value.message.endswith(f"it runs {TOP}")
    assert not info.value.rolled_back


def test_a_status_from_another_boot_ends_the_activation_at_once(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    # The node rebooted while `start` was cut off: the first status `wait` brings is from a new
    # boot. No retrying until the activation timeout: what the node runs now is reported.
    cut = (255, f"boot=one/5\nprevious={PREV}\nprevgen=4\n")
    node = fake(
        {
            "start": [cut],
            "wait": [(0, "\n@nixherd status=missing offset=none boot=two/9\n")],
            "probe": [(0, f"current={PREV}\nboot_id=two\n")],
        }
    )
    with pytest.raises(ActivationError) as info:
        activate(connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore)
    assert node.modes() == ["start", "wait", "probe"]
    assert info.value.rolled_back
    assert info.value.message == (
        f"the node rebooted before the activation was settled; it runs {PREV}, its previous system"
    )


def test_a_reboot_seen_by_the_confirmation_is_reported_too(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    node = fake(
        {
            "start": [(0, f"boot=one/5\nprevious={PREV}\nprevgen=4\n" + marker("waiting"))],
            "confirm": [(0, "\n@nixherd status=missing offset=none boot=two/9\n")],
            "probe": [(0, f"current={TOP}\n")],
        }
    )
    with pytest.raises(ActivationError) as info:
        activate(connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore)
    assert node.modes() == ["start", "confirm", "probe"]
    assert not info.value.rolled_back
    assert info.value.message.endswith(f"it runs {TOP}")


def test_the_unsafe_state_dir_refusal_is_the_error(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    line = "refusing: /run/nixherd is not a directory that only root can write (drwxrwxrwt ...)"
    fake({"start": [(activation.UNSAFE_EXIT, line + "\n")]})
    with pytest.raises(ActivationError) as info:
        activate(connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore)
    assert info.value.message == f"the watchdog {line}"


def test_dead_watchdog_is_reported(fake: Callable[[dict[str, list[Reply]]], FakeNode]) -> None:
    fake({"start": [started()], "wait": [(0, marker("lost activating"))]})
    with pytest.raises(ActivationError, match="outcome is unknown"):
        activate(connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore)


# /proc/1/stat of pid 1 started at tick 5 and at tick 9: what the probe reads before and after
# a lab host's reboot (same kernel boot id, a new pid 1).
PID1_AT_5 = "1 (systemd) S" + " 0" * 18 + " 5 0"
PID1_AT_9 = "1 (systemd) S" + " 0" * 18 + " 9 0"


def test_a_watchdog_lost_in_the_same_boot_is_an_unknown_outcome(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    node = fake(
        {
            "start": [(0, f"boot=one/5\nprevious={PREV}\nprevgen=4\n")],
            "wait": [(0, "\n@nixherd status=lost activating offset=10 boot=one/5\n")],
            "probe": [(0, f"current={TOP}\nboot_id=one\npid1={PID1_AT_5}\n")],
        }
    )
    with pytest.raises(ActivationError, match="outcome is unknown"):
        activate(connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore)
    assert node.modes() == ["start", "wait", "probe"]


def test_a_watchdog_lost_to_a_reboot_is_judged_by_what_booted(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    # A systemd shutdown stops the watchdog's unit before the reboot: the follower says "lost",
    # and the node, probed again, comes back in a new boot on its previous system.
    node = fake(
        {
            "start": [(0, f"boot=one/5\nprevious={PREV}\nprevgen=4\n")],
            "wait": [(0, "\n@nixherd status=lost rolling-back offset=10 boot=one/5\n")],
            "probe": [
                CommandError(["ssh"], 255, "connection refused"),
                (0, f"current={PREV}\nboot_id=one\npid1={PID1_AT_9}\n"),
            ],
        }
    )
    with pytest.raises(ActivationError) as info:
        activate(connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore)
    assert node.modes() == ["start", "wait", "probe", "probe"]
    assert info.value.rolled_back
    assert info.value.message == (
        f"the node rebooted before the activation was settled; it runs {PREV}, its previous system"
    )


@pytest.mark.parametrize("path", ["/tmp/x", "/nix/store/short-x", TOP + "; rm -rf /", ""])
def test_refuses_what_is_not_a_store_path(
    path: str, fake: Callable[[dict[str, list[Reply]]], FakeNode]
) -> None:
    node = fake({})
    with pytest.raises(NixherdError, match="not a store path"):
        activate(connection(), path, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore)
    assert node.calls == []


def test_goals_that_do_not_activate_are_refused(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    fake({})
    with pytest.raises(NixherdError, match="does not activate"):
        activate(connection(), TOP, ActivationOptions(Goal.PUSH, "web-1"), emit=ignore)


def test_checks_widen_the_confirm_window(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    # The watchdog waits for the confirm timeout plus the time the checks may take.
    node = fake({"start": [started()], "wait": [(0, marker("waiting"))], "true": [(0, "")]})
    node.replies["confirm"] = [(0, "@nixherd status=confirmed\n")]
    check = HealthCheck("c", CheckKind.COMMAND, command=("true",), timeout=5, retries=2, interval=1)
    assert check.budget == 17
    options = ActivationOptions(Goal.SWITCH, "web-1", confirm_timeout=30)
    activate(connection(), TOP, options, checks=[check], emit=ignore)
    assert node.calls[0].words[10] == "47"
    assert node.modes() == ["start", "wait", "true", "confirm"]


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_watchdog_is_valid_posix_sh(shell: str) -> None:
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} not installed")
    argv = [exe, "--posix", "-n"] if shell == "bash" else [exe, "-n"]
    result = process.run([*argv, "/dev/stdin"], input=activation.watchdog_script(), check=False)
    assert result.ok, result.stderr


def test_identity_is_safe_for_the_lock() -> None:
    identity = activation.deployer_identity()
    assert identity and all(c.isalnum() or c in "@._-" for c in identity)


def test_parse_generations_and_the_previous_one() -> None:
    gens = activation.parse_generations(
        f"current={TOP}\nprofile=7\n"
        f"generation=5 {PREV}\ngeneration=7 {TOP}\ngeneration=6 {PREV}\n"
        "generation=x /nowhere\n"
    )
    assert gens.current == TOP
    assert gens.profile == 7
    assert gens.systems == {5: PREV, 6: PREV, 7: TOP}
    assert gens.previous() == 6
    assert activation.parse_generations("current=\nprofile=\n").previous() is None
    only = activation.parse_generations(f"current={TOP}\nprofile=1\ngeneration=1 {TOP}\n")
    assert only.previous() is None


def test_rollback_switches_the_profile_to_the_previous_generation(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    info = f"current={TOP}\nprofile=7\ngeneration=6 {PREV}\ngeneration=7 {TOP}\n"
    node = fake(
        {
            "info": [(0, info)],
            "start": [started(TOP)],
            "wait": [(0, marker("waiting"))],
            "confirm": [(0, "@nixherd status=confirmed\n")],
        }
    )
    gens, result = activation.rollback(connection(), node="web-1", emit=ignore)
    assert result.status == "confirmed"
    assert gens.previous() == 6
    info_call, start = node.calls[0], node.calls[1]
    assert info_call.words == ["sh", "-s", "--", "-", "info"]
    assert info_call.input == activation.watchdog_script()
    # switch to PREV by moving the profile to generation 6, with magic rollback.
    assert start.words[6:10] == ["switch", PREV, "gen:6", "1"]


def test_rollback_without_a_previous_generation(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    node = fake({"info": [(0, f"current={TOP}\nprofile=1\ngeneration=1 {TOP}\n")]})
    with pytest.raises(ActivationError, match="no previous generation"):
        activation.rollback(connection(), node="web-1", emit=ignore)
    assert node.modes() == ["info"]


def test_ctrl_c_during_activation_finishes_the_node_then_reraises(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    node = fake(
        {
            "start": [started()],
            "wait": [KeyboardInterrupt(), (0, marker("waiting"))],
            "confirm": [(0, "@nixherd status=confirmed\n")],
        }
    )
    with pytest.raises(KeyboardInterrupt):
        activate(connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore)
    # Interrupted while waiting: it waited again and confirmed before giving up the thread.
    assert node.modes() == ["start", "wait", "wait", "confirm"]


def test_a_second_ctrl_c_stops_waiting(fake: Callable[[dict[str, list[Reply]]], FakeNode]) -> None:
    node = fake({"start": [started()], "wait": [KeyboardInterrupt()]})
    with pytest.raises(KeyboardInterrupt):
        activate(connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore)
    assert node.modes() == ["start", "wait", "wait"]


def test_start_that_streams_to_a_status_needs_no_wait(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    # `start` follows the activation itself: one round trip fewer per node.
    streamed = (
        0,
        f"previous={PREV}\nprevgen=4\nnixherd: switch-to-configuration switch\n"
        + marker("waiting", 40),
    )
    node = fake({"start": [streamed], "confirm": [(0, marker("confirmed", 40))]})
    events: list[Event] = []
    result = activate(
        connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=events.append
    )
    assert result.status == "confirmed"
    assert result.previous == PREV
    assert node.modes() == ["start", "confirm"]
    lines = [e.line for e in events if isinstance(e, LogLine)]
    assert lines[:2] == [f"previous system: {PREV}", "nixherd: switch-to-configuration switch"]


def test_start_cut_off_after_starting_hands_over_to_wait(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    cut = (255, f"previous={PREV}\nprevgen=4\nnixherd: setting the system profile\n")
    node = fake({"start": [cut], "wait": [(0, marker("done"))]})
    result = activate(connection(), TOP, ActivationOptions(Goal.BOOT, "web-1"), emit=ignore)
    assert result.status == "done"
    assert node.modes() == ["start", "wait"]


def test_lock_held_is_found_behind_ssh_warnings(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    held = (
        75,
        "Warning: Permanently added 'x' to the list of known hosts.\n"
        "locked since=2026-01-01T00:00:00Z pid=42 by=me@there\n",
    )
    fake({"start": [held]})
    with pytest.raises(LockHeldError, match="pid 42, by me@there"):
        activate(connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore)


def test_wait_resumes_where_the_cut_stream_stopped(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    # The watchdog says how far the streamed log reaches: `wait` starts there, so no line of the
    # log is shown twice.
    cut = (255, f"previous={PREV}\nprevgen=4\nnixherd: one\n@nixherd offset=13\n")
    node = fake({"start": [cut], "wait": [(0, "nixherd: two\n" + marker("done", 26))]})
    events: list[Event] = []
    result = activate(connection(), TOP, ActivationOptions(Goal.BOOT, "web-1"), emit=events.append)
    assert result.status == "done"
    assert node.calls[1].words[6] == "13"
    assert result.log == ("nixherd: one", "nixherd: two")


# --- the second Ctrl-C reaches an activation through `aborts` ---


def settled_aborts(aborts: Aborts) -> None:
    deadline = time.monotonic() + 10
    while aborts.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert aborts.pending() == 0


def test_an_activation_registers_its_abort_once_its_watchdog_runs(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    aborts = Aborts()
    aborts.fire()  # the second Ctrl-C came already: the activation is aborted as it launches
    node = fake(
        {
            "start": [started()],
            "wait": [(0, "nixherd: rolling back (aborted)\n" + marker("rolled-back aborted"))],
            "abort": [(0, marker("rolled-back aborted"))],
        }
    )
    with pytest.raises(ActivationError) as info:
        activate(
            connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore, aborts=aborts
        )
    settled_aborts(aborts)
    assert info.value.rolled_back
    assert info.value.message == f"aborted by the deployer; rolled back to {PREV}"
    (call,) = [c for c in node.calls if c.mode == "abort"]
    start_call = next(c for c in node.calls if c.mode == "start")
    assert call.words[4] == start_call.words[4]  # the same activation id
    assert call.words[6:] == [str(ABORT_SECONDS)]
    assert call.input == "interrupted by the deployer (Ctrl-C twice)\n"
    assert aborts.said("web-1") == "aborted: rolled back to its previous system"


def test_an_activation_that_never_started_registers_nothing(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    aborts = Aborts()
    aborts.fire()
    node = fake({"start": [(75, "locked since=2026-01-02T03:04:05Z pid=4242 by=alice@laptop\n")]})
    with pytest.raises(LockHeldError):
        activate(
            connection(), TOP, ActivationOptions(Goal.SWITCH, "web-1"), emit=ignore, aborts=aborts
        )
    assert node.modes() == ["start"] and not aborts.registered("web-1")


def test_a_settled_activation_leaves_nothing_to_abort(
    fake: Callable[[dict[str, list[Reply]]], FakeNode],
) -> None:
    aborts = Aborts()
    node = fake({"start": [started()], "wait": [(0, marker("done"))]})
    activate(connection(), TOP, ActivationOptions(Goal.BOOT, "web-1"), emit=ignore, aborts=aborts)
    assert aborts.registered("web-1")
    assert aborts.fire() == ()  # it removed its registration when it settled
    assert "abort" not in node.modes()

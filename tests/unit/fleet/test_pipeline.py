"""pipeline.py with a fake `process.run`: the exact argv of every step, and what each node ends as.

No nix, no ssh: the fake answers like nix and the probe script would, and records argv. The
activation itself (H5's module) is replaced where a test is about the pipeline around it.
"""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import connkit
import pytest

from nixherd.errors import CommandError
from nixherd.events import (
    Event,
    LogLine,
    NodeFinished,
    Outcome,
    Stage,
    StageFinished,
    StageStarted,
)
from nixherd.fleet import pipeline
from nixherd.fleet.evaluate import NodeEval
from nixherd.fleet.plan import DeployOptions
from nixherd.fleet.rollout import Amount, Rollout
from nixherd.node import activation
from nixherd.node.goal import Goal
from nixherd.node.probe import SCRIPT
from nixherd.run import process
from nixherd.run.process import Result
from nixherd.run.ssh import Connection

FLAKE = "path:/srv/fleet"
EXP = ("--extra-experimental-features", "nix-command flakes")


def drv(name: str) -> str:
    return f"/nix/store/{'d' * 32}-{name}.drv"


def out(name: str) -> str:
    return f"/nix/store/{'o' * 32}-{name}"


OLD = f"/nix/store/{'p' * 32}-old"
ACT_ID = "0123456789abcdef"
REAL_ACTIVATE = activation.activate


@dataclass(frozen=True)
class FakeNode(connkit.FakeNode):
    ssh_config: str | None = "/lab/ssh_config"


@dataclass
class Remote:
    """How a fake node answers: its state, and whether ssh reaches it."""

    current: str | None = OLD
    profile: str | None = OLD
    valid: bool = False
    reachable: bool = True
    # An activation in flight (another run's): the system it activates, and what the node runs
    # once it has settled (its `wait` answers with `settles_to`).
    in_flight: str | None = None
    settles_to: tuple[str, str] = ("confirmed", "")


@dataclass
class Fake:
    """A stand-in for process.run that answers nix and ssh like the real ones."""

    nodes: dict[str, Remote] = field(default_factory=dict)
    eval_errors: dict[str, str] = field(default_factory=dict)
    build_fails: set[str] = field(default_factory=set)
    calls: list[tuple[tuple[str, ...], dict[str, Any]]] = field(default_factory=list)
    evals: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    hook: Callable[[tuple[str, ...]], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, argv: Sequence[str], **kw: Any) -> Result:
        args = tuple(argv)
        with self.lock:
            self.calls.append((args, kw))
        if self.hook is not None:
            self.hook(args)
        if args[:2] == ("nix-store", "--realise"):
            failing = [a for a in args if any(a == drv(n) for n in self.build_fails)]
            if failing:
                raise CommandError(args, 1, f"error: builder for '{failing[0]}' failed")
            return self._ok(args, "\n".join(a[:-4] for a in args if a.endswith(".drv")))
        if args[:2] == ("nix-store", "--check-validity"):
            bad = [out(n) for n in self.build_fails]
            return self._ok(args, "\n".join(a for a in args if a in bad))
        if args[:1] == ("nix",) and "copy" in args:
            return self._ok(args, "")
        if args[:1] == ("ssh",):
            return self._ssh(args, kw)
        raise AssertionError(f"unexpected command {args}")

    def evaluate(self, flake: str, names: Sequence[str]) -> dict[str, NodeEval]:
        """Stands in for fleet.eval_nodes (one nix process; its argv is fleet's own test)."""
        self.evals.append((flake, tuple(names)))
        return {
            n: NodeEval(n, error=self.eval_errors[n])
            if n in self.eval_errors
            else NodeEval(n, drv(n), out(n))
            for n in names
        }

    def _ssh(self, args: tuple[str, ...], kw: Mapping[str, Any]) -> Result:
        node = kw.get("node")
        assert isinstance(node, str)
        remote = self.nodes[node]
        if not remote.reachable:
            raise CommandError(args, 255, "ssh: connect to host: Connection refused", node=node)
        words = shlex.split(args[-1])
        if words[:3] == ["sh", "-c", SCRIPT]:
            lines = [f"current={remote.current or ''}", f"profile={remote.profile or ''}"]
            lines += ["boot_id=b", "pid1="]
            if remote.valid or words[4] == remote.current:
                lines.append("valid=1")
            if remote.in_flight is not None:
                lines.append(f"lock={ACT_ID} 99 2026-11-30T12:00:00Z other@host")
                lines.append(f"lock_toplevel={remote.in_flight}")
            return self._ok(args, "\n".join(lines) + "\n")
        if words[:2] == ["sh", "-c"] and words[4:6] == [ACT_ID, "wait"]:
            status, now = remote.settles_to
            remote.in_flight = None
            remote.current = remote.profile = now or remote.current
            marker = f"\n@nixherd status={status} offset=none boot=b/\n"
            on_line = kw.get("on_line")
            if on_line is not None:
                for line in marker.splitlines():
                    on_line(line)
            return self._ok(args, marker)
        return self._ok(args, "")

    def _ok(self, args: tuple[str, ...], stdout: str) -> Result:
        return Result(args, 0, stdout, "")

    def commands(self, first: str) -> list[tuple[str, ...]]:
        return [a for a, _ in self.calls if a[:1] == (first,)]

    def remote_words(self) -> list[list[str]]:
        return [shlex.split(a[-1]) for a in self.commands("ssh")]


@dataclass
class Activations:
    calls: list[tuple[str, str, activation.ActivationOptions]] = field(default_factory=list)
    fail: dict[str, activation.ActivationError] = field(default_factory=dict)

    def __call__(
        self,
        conn: Any,
        toplevel: str,
        options: activation.ActivationOptions,
        *,
        checks: Sequence[Any] = (),
        emit: Callable[[Event], None],
        aborts: Any = None,
    ) -> activation.ActivationResult:
        del checks, aborts
        self.calls.append((conn.target.node, toplevel, options))
        emit(StageStarted(options.node, Stage.ACTIVATE))
        emit(StageFinished(options.node, Stage.ACTIVATE, 0.5))
        if options.node in self.fail:
            raise self.fail[options.node]
        return activation.ActivationResult(previous=OLD)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Fake:
    f = Fake()
    monkeypatch.setattr(process, "run", f)
    return f


@pytest.fixture(autouse=True)
def acts(monkeypatch: pytest.MonkeyPatch) -> Activations:
    a = Activations()
    monkeypatch.setattr(activation, "activate", a)
    return a


def run(
    fake: Fake,
    names: Sequence[str],
    *,
    events: list[Event] | None = None,
    cancel: threading.Event | None = None,
    nodes: Sequence[FakeNode] | None = None,
    **options: Any,
) -> dict[str, Any]:
    for name in names:
        fake.nodes.setdefault(name, Remote())
    opts = DeployOptions(flake=FLAKE, **({"parallel": 1} | options))
    sink: list[Event] = events if events is not None else []
    report = pipeline.deploy(
        nodes or [FakeNode(n) for n in names],
        opts,
        emit=sink.append,
        cancel=cancel,
        evaluator=fake.evaluate,
    )
    return {r.node: r for r in report.nodes} | {"_report": report}


def test_switch_exact_argv_sequence(fake: Fake, acts: Activations) -> None:
    results = run(fake, ["a", "b"])
    assert fake.evals == [(FLAKE, ("a", "b"))]  # every node in one evaluation
    local = [a for a, _ in fake.calls if a[0] != "ssh"]
    assert local[0] == ("nix-store", "--realise", "--keep-going", drv("a"), drv("b"))
    assert local[1:] == [
        ("nix", *EXP, "copy", "--to", "ssh://root@192.0.2.10", out("a")),
        ("nix", *EXP, "copy", "--to", "ssh://root@192.0.2.10", out("b")),
    ]
    # One probe per node, through the node's ControlMaster, which nix copy rides too.
    probes = [a for a in fake.commands("ssh")]
    assert [shlex.split(p[-1])[:5] for p in probes] == [
        ["sh", "-c", SCRIPT, "nixherd-probe", out("a")],
        ["sh", "-c", SCRIPT, "nixherd-probe", out("b")],
    ]
    copy_env = next(kw["env"] for a, kw in fake.calls if "copy" in a)
    control = next(a for a in probes[0] if a.startswith("ControlPath="))
    assert control in copy_env["NIX_SSHOPTS"].split()
    assert "-F /lab/ssh_config" in copy_env["NIX_SSHOPTS"]
    assert [(n, t, o.goal, o.rollback) for n, t, o in acts.calls] == [
        ("a", out("a"), Goal.SWITCH, True),
        ("b", out("b"), Goal.SWITCH, True),
    ]
    assert results["a"].outcome is Outcome.OK and results["a"].previous == OLD
    assert set(results["a"].stages) >= {"eval", "build", "probe", "copy", "activate"}


def test_activation_start_argv_through_sudo(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real activation module: its first remote step fails here, which fails the node.
    monkeypatch.setattr(activation, "activate", REAL_ACTIVATE)

    def hook(args: tuple[str, ...]) -> None:
        if args[0] == "ssh" and "start" in shlex.split(args[-1]):
            raise CommandError(args, 1, "boom")

    fake.hook = hook
    node = FakeNode("a", user="deploy", port=2222)
    results = run(fake, ["a"], nodes=[node], confirm_timeout=12, rollback=False)
    starts = [w for w in fake.remote_words() if "start" in w]
    assert len(starts) == 1
    words = starts[0]
    assert words[:3] == ["sudo", "-n", "--"]
    assert words[3:5] == ["sh", "-c"]
    assert words[words.index("start") + 1 : words.index("start") + 5] == [
        "switch",
        out("a"),
        "set",
        "0",
    ]
    assert results["a"].outcome is Outcome.FAILED


def test_up_to_date_node_copies_and_activates_nothing(fake: Fake, acts: Activations) -> None:
    fake.nodes["a"] = Remote(current=out("a"), profile=out("a"))
    fake.nodes["b"] = Remote()
    results = run(fake, ["a", "b"])
    assert results["a"].outcome is Outcome.UP_TO_DATE
    assert results["b"].outcome is Outcome.OK
    copies = [a for a, _ in fake.calls if "copy" in a]
    assert copies == [("nix", *EXP, "copy", "--to", "ssh://root@192.0.2.10", out("b"))]
    assert [n for n, _, _ in acts.calls] == ["b"]


def test_closure_already_there_is_not_copied_but_activated(fake: Fake, acts: Activations) -> None:
    fake.nodes["a"] = Remote(valid=True)
    results = run(fake, ["a"])
    assert not [a for a, _ in fake.calls if "copy" in a]
    assert [n for n, _, _ in acts.calls] == ["a"]
    assert results["a"].outcome is Outcome.OK


def test_boot_up_to_date_means_profile_only(fake: Fake, acts: Activations) -> None:
    fake.nodes["a"] = Remote(current=OLD, profile=out("a"), valid=True)
    results = run(fake, ["a"], goal=Goal.BOOT)
    assert results["a"].outcome is Outcome.UP_TO_DATE
    assert not acts.calls


def test_push_copies_and_never_activates(fake: Fake, acts: Activations) -> None:
    results = run(fake, ["a"], goal=Goal.PUSH)
    assert [a for a, _ in fake.calls if "copy" in a]
    assert not acts.calls
    assert results["a"].outcome is Outcome.OK


def test_build_goal_touches_no_node_and_keeps_roots(fake: Fake, acts: Activations) -> None:
    results = run(fake, ["a", "b"], goal=Goal.BUILD, keep_result=True, results_dir="/r")
    assert not fake.commands("ssh") and not acts.calls
    roots = [a for a, _ in fake.calls if "--add-root" in a]
    assert roots == [
        ("nix-store", "--realise", "--add-root", "/r/a", "--indirect", out("a")),
        ("nix-store", "--realise", "--add-root", "/r/b", "--indirect", out("b")),
    ]
    assert results["a"].store_path == out("a") and results["a"].outcome is Outcome.OK


def test_build_on_target_copies_derivations_and_realises_remotely(fake: Fake) -> None:
    node = FakeNode("a", user="deploy")
    results = run(fake, ["a"], nodes=[node], build_on_target=True)
    assert not [a for a, _ in fake.calls if a[:2] == ("nix-store", "--realise")]
    copies = [a for a, _ in fake.calls if "copy" in a]
    assert copies == [
        ("nix", *EXP, "copy", "--to", "ssh://deploy@192.0.2.10", "--derivation", drv("a"))
    ]
    assert ["sudo", "-n", "--", "nix-store", "--realise", drv("a")] in fake.remote_words()
    assert results["a"].outcome is Outcome.OK


def test_substitute_on_destination_is_passed(fake: Fake) -> None:
    run(fake, ["a"], substitute_on_destination=True)
    (copy,) = [a for a, _ in fake.calls if "copy" in a]
    assert "--substitute-on-destination" in copy


def test_eval_error_fails_that_node_only(fake: Fake) -> None:
    fake.eval_errors["b"] = "attribute 'nope' missing"
    results = run(fake, ["a", "b"])
    assert results["b"].outcome is Outcome.FAILED
    assert "attribute 'nope' missing" in results["b"].error.message
    assert results["a"].outcome is Outcome.OK
    (realise,) = [a for a, _ in fake.calls if a[:2] == ("nix-store", "--realise")]
    assert drv("b") not in realise


def test_build_failure_fails_that_node_only(fake: Fake, acts: Activations) -> None:
    fake.build_fails.add("b")
    results = run(fake, ["a", "b", "c"])
    assert results["b"].outcome is Outcome.FAILED
    assert results["b"].error.command.startswith("nix-store --realise --keep-going")
    assert "builder for" in (results["b"].error.output or "")
    assert set(results["b"].stages) == {"eval", "build"}
    assert [n for n, _, _ in acts.calls] == ["a", "c"]
    assert results["_report"].failed == (results["b"],)


def test_unreachable_node_fails_readably_others_deploy(fake: Fake) -> None:
    fake.nodes["b"] = Remote(reachable=False)
    results = run(fake, ["a", "b", "c"])
    assert results["b"].outcome is Outcome.FAILED
    assert "cannot reach root@192.0.2.10 port 22" in results["b"].error.message
    assert results["a"].outcome is Outcome.OK and results["c"].outcome is Outcome.OK


def test_rolled_back_activation_is_reported(fake: Fake, acts: Activations) -> None:
    acts.fail["a"] = activation.ActivationError(
        "a", "health check failed", rolled_back=True, previous=OLD, reason="check", log=["x"]
    )
    results = run(fake, ["a"])
    result = results["a"]
    assert result.outcome is Outcome.ROLLED_BACK and result.rolled_back
    assert result.rollback_reason == "check"
    assert result.previous == OLD
    assert result.stages["activate"] == pytest.approx(0.5)
    assert result.to_data()["error"]["output"] == "x"


def test_failed_canary_stops_the_rollout(fake: Fake, acts: Activations) -> None:
    names = ["a", "b", "c", "d"]
    fake.nodes["a"] = Remote(reachable=False)
    results = run(fake, names, rollout=Rollout(canary=1, batch=Amount(1)))
    assert results["a"].outcome is Outcome.FAILED
    assert [results[n].outcome for n in "bcd"] == [Outcome.NOT_ATTEMPTED] * 3
    assert results["_report"].to_data()["not_attempted"] == ["b", "c", "d"]
    assert not acts.calls


def test_max_failures_stops_starting_new_nodes(fake: Fake) -> None:
    names = ["a", "b", "c", "d", "e"]
    fake.nodes["a"] = Remote(reachable=False)
    fake.nodes["b"] = Remote(reachable=False)
    results = run(fake, names, rollout=Rollout(max_failures=Amount(1)))
    assert [results[n].outcome for n in names] == [
        Outcome.FAILED,
        Outcome.FAILED,
        Outcome.NOT_ATTEMPTED,
        Outcome.NOT_ATTEMPTED,
        Outcome.NOT_ATTEMPTED,
    ]


def test_interrupt_mid_copy_leaves_the_rest_untouched(fake: Fake, acts: Activations) -> None:
    cancel = threading.Event()

    def hook(args: tuple[str, ...]) -> None:
        if "copy" in args:
            cancel.set()  # what the scheduler does on Ctrl-C

    fake.hook = hook
    results = run(fake, ["a", "b"], cancel=cancel)
    assert results["a"].outcome is Outcome.INTERRUPTED
    assert results["a"].detail == "interrupted before activation"
    assert results["b"].outcome is Outcome.NOT_ATTEMPTED
    assert not acts.calls
    assert results["_report"].interrupted


def test_events_finish_every_node_once(fake: Fake) -> None:
    fake.nodes["c"] = Remote(reachable=False)
    events: list[Event] = []
    run(fake, ["a", "b", "c"], events=events, rollout=Rollout(max_failures=Amount(0)))
    finished = [e.node for e in events if isinstance(e, NodeFinished)]
    assert sorted(finished) == ["a", "b", "c"]


def test_report_json_shape(fake: Fake) -> None:
    fake.nodes["b"] = Remote(reachable=False)
    report = run(fake, ["a", "b"])["_report"]
    data = json.loads(json.dumps(report.to_data()))
    assert data["goal"] == "switch" and data["flake"] == FLAKE and data["ok"] is False
    assert data["failed"] == ["b"]
    assert data["counts"] == {"ok": 1, "failed": 1}
    a, b = data["nodes"]
    assert a["result"] == "ok" and a["store_path"] == out("a") and a["previous"] == OLD
    assert set(a["seconds"]) >= {"eval", "build", "probe", "copy", "activate"}
    assert b["error"]["message"].startswith("cannot reach")
    assert data["options"]["parallel"] == 1


def test_report_places_each_nodes_stages_on_the_run_clock(fake: Fake) -> None:
    # The deploy timeline (`report --html`): every stage a node went through, when it started
    # (seconds after the run's start) and how long it took, in the order they started.
    report = run(fake, ["a", "b"])["_report"]
    data = json.loads(json.dumps(report.to_data()))
    for node in data["nodes"]:
        spans = node["spans"]
        stages = [s["stage"] for s in spans]
        # The early probe may start while the build runs, never before the evaluation.
        assert stages[0] == "eval", stages
        assert stages.index("build") < stages.index("copy") < stages.index("activate")
        assert stages.index("probe") < stages.index("copy")
        starts = [s["start"] for s in spans]
        assert starts == sorted(starts) and starts[0] >= 0
        assert all(s["seconds"] >= 0 for s in spans)
        assert all(s["start"] <= data["seconds"] for s in spans)
        assert {s["stage"] for s in spans} == set(node["seconds"])
    # parallel=1: b's copy starts after a's copy ended.
    copy = {n["node"]: next(s for s in n["spans"] if s["stage"] == "copy") for n in data["nodes"]}
    assert copy["b"]["start"] >= copy["a"]["start"] + copy["a"]["seconds"]


def test_declined_confirmation_touches_no_node(fake: Fake, acts: Activations) -> None:
    asked: list[dict[str, Any]] = []

    def confirm(systems: Mapping[str, Any]) -> bool:
        asked.append(dict(systems))
        return False

    fake.nodes.update(a=Remote(), b=Remote())
    report = pipeline.deploy(
        [FakeNode("a"), FakeNode("b")],
        DeployOptions(flake=FLAKE),
        emit=lambda _e: None,
        evaluator=fake.evaluate,
        confirm=confirm,
    )
    assert [sorted(s) for s in asked] == [["a", "b"]]
    assert [s.out_path for s in asked[0].values()] == [out("a"), out("b")]
    assert not fake.commands("ssh") and not acts.calls
    assert [(r.outcome, r.detail) for r in report.nodes] == [
        (Outcome.NOT_ATTEMPTED, "declined")
    ] * 2


def test_real_evaluator_makes_one_nix_process_for_all_nodes(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through fleet.eval_nodes itself: one `nix eval` whatever the number of nodes.
    evals: list[tuple[str, ...]] = []
    plain = Fake.__call__

    def answer(self: Fake, argv: Sequence[str], **kw: Any) -> Result:
        args = tuple(argv)
        if args[:1] == ("nix",) and "eval" in args:
            evals.append(args)
            # Both spellings of the keys, so this test does not pin fleet's private protocol.
            data = {
                n: {"drv": drv(n), "out": out(n), "drvPath": drv(n), "outPath": out(n)}
                for n in ("a", "b", "c")
            }
            return Result(args, 0, json.dumps(data), "")
        return plain(self, argv, **kw)

    monkeypatch.setattr(Fake, "__call__", answer)
    fake.nodes.update(a=Remote(), b=Remote(), c=Remote())
    report = pipeline.deploy(
        [FakeNode(n) for n in "abc"], DeployOptions(flake=FLAKE, goal=Goal.BUILD)
    )
    (argv,) = evals
    assert argv[:6] == ("nix", *EXP, "eval", "--json", f"{FLAKE}#nixosConfigurations")
    assert [r.store_path for r in report.nodes] == [out("a"), out("b"), out("c")]


def test_first_nodes_are_probed_while_the_build_runs(fake: Fake) -> None:
    probed = threading.Semaphore(0)

    def hook(args: tuple[str, ...]) -> None:
        if args[0] == "ssh" and SCRIPT in shlex.split(args[-1]):
            probed.release()
        if args[:2] == ("nix-store", "--realise") and "--add-root" not in args:
            # The build waits for the probes of the first wave (up to --parallel): they overlap.
            assert probed.acquire(timeout=5) and probed.acquire(timeout=5)

    fake.hook = hook
    results = run(fake, ["a", "b", "c"], rollout=Rollout(canary=2), parallel=0)
    assert [results[n].outcome for n in "abc"] == [Outcome.OK] * 3
    probes = [w for w in fake.remote_words() if w[:3] == ["sh", "-c", SCRIPT]]
    assert len(probes) == 3  # one per node, early or not
    assert all("probe" in results[n].stages for n in "abc")


def test_early_probe_of_a_node_whose_build_failed_is_closed(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []
    real_close = Connection.close

    def close(self: Connection) -> None:
        closed.append(self.target.node)
        real_close(self)

    monkeypatch.setattr(Connection, "close", close)
    fake.build_fails.add("b")
    results = run(fake, ["a", "b"], parallel=0)
    assert results["b"].outcome is Outcome.FAILED
    assert sorted(closed) == ["a", "b"]


def test_activation_in_flight_of_the_same_system_is_waited_for(
    fake: Fake, acts: Activations
) -> None:
    # The node runs the system already, but another run's activation of it is unconfirmed: not
    # "up to date" until it settles. It is confirmed: now the node is up to date.
    fake.nodes["a"] = Remote(current=out("a"), profile=out("a"), in_flight=out("a"))
    events: list[Event] = []
    results = run(fake, ["a"], events=events)
    assert results["a"].outcome is Outcome.UP_TO_DATE
    waits = [w for w in fake.remote_words() if w[4:6] == [ACT_ID, "wait"]]
    assert len(waits) == 1 and waits[0][6:] == ["none", "120", "1"]
    probes = [w for w in fake.remote_words() if w[:3] == ["sh", "-c", SCRIPT]]
    assert len(probes) == 2  # again once the other run's activation settled
    assert acts.calls == []
    lines = [e.line for e in events if isinstance(e, LogLine)]
    assert any("other@host" in x and "waiting for it to settle" in x for x in lines)


def test_activation_in_flight_that_rolls_back_is_followed_by_our_own(
    fake: Fake, acts: Activations
) -> None:
    fake.nodes["a"] = Remote(
        current=out("a"),
        profile=OLD,
        in_flight=out("a"),
        settles_to=("rolled-back aborted", OLD),
        valid=True,
    )
    results = run(fake, ["a"])
    assert results["a"].outcome is Outcome.OK
    assert [c[:2] for c in acts.calls] == [("a", out("a"))]


def test_activation_in_flight_of_another_system_is_not_waited_for(
    fake: Fake, acts: Activations
) -> None:
    # Ours is another system: the activation fails on the lock at once (the watchdog's answer).
    fake.nodes["a"] = Remote(in_flight=OLD)
    results = run(fake, ["a"])
    assert not [w for w in fake.remote_words() if w[4:6] == [ACT_ID, "wait"]]
    assert [c[:2] for c in acts.calls] == [("a", out("a"))]
    assert results["a"].outcome is Outcome.OK


def test_probe_is_elevated_for_a_non_root_user(fake: Fake) -> None:
    # The watchdog's lock is root's alone: the probe reads it through sudo.
    run(fake, ["a"], nodes=[FakeNode("a", user="deploy")])
    probes = [w for w in fake.remote_words() if SCRIPT in w]
    assert probes and all(w[:3] == ["sudo", "-n", "--"] for w in probes)


@dataclass
class Reboots:
    """Stands in for node.reboot.reboot: records each reboot, comes back on the wanted system."""

    calls: list[tuple[str, str | None, float]] = field(default_factory=list)

    def __call__(self, conn: Connection, **kw: Any) -> None:
        self.calls.append((conn.target.node, kw["expect"], kw["timeout"]))


@pytest.fixture
def reboots(monkeypatch: pytest.MonkeyPatch) -> Reboots:
    from nixherd.node import reboot as reboot_mod

    r = Reboots()
    monkeypatch.setattr(reboot_mod, "reboot", r)
    return r


def test_boot_set_but_not_booted_is_only_rebooted(
    fake: Fake, acts: Activations, reboots: Reboots
) -> None:
    # An earlier `apply boot` set the profile; the node still runs (booted) the old system.
    fake.nodes["a"] = Remote(current=OLD, profile=out("a"), valid=True)
    results = run(fake, ["a"], goal=Goal.BOOT, reboot=True, reboot_timeout=42)
    assert results["a"].outcome is Outcome.OK
    assert reboots.calls == [("a", out("a"), 42)]
    assert not acts.calls and not [c for c, _ in fake.calls if "copy" in c]


def test_a_check_failing_after_the_reboot_fails_the_node(
    fake: Fake, acts: Activations, reboots: Reboots
) -> None:
    from nixherd.inventory.entries import CheckKind, HealthCheck

    check = HealthCheck("up", CheckKind.COMMAND, command=("false",), retries=0)
    node = FakeNode("a", checks={"up": check})
    failing = fake.hook

    def hook(args: tuple[str, ...]) -> None:
        if args[:1] == ("ssh",) and shlex.split(args[-1]) == ["false"]:
            raise CommandError(args, None, "")  # the check times out on the rebooted node
        if failing is not None:
            failing(args)

    fake.hook = hook
    results = run(fake, ["a"], nodes=[node], reboot=True)
    assert [n for n, _, _ in acts.calls] == ["a"]  # activated (its checks are the fake's)
    assert reboots.calls == [("a", out("a"), 300.0)]
    assert results["a"].outcome is Outcome.FAILED
    error = results["a"].error
    assert error is not None
    assert error.message == (
        "health check failed after the reboot (up: timed out after 5s); the node keeps it"
    )

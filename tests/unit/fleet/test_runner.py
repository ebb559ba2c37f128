"""The fleet runner: its engine (parallel limit, stopping, Ctrl-C) and run_nodes, its report."""

from __future__ import annotations

import _thread
import threading
import time
from dataclasses import dataclass

import pytest

from nixherd.errors import NixherdError
from nixherd.events import Event, Interrupted, NodeFinished, Outcome
from nixherd.fleet.report import NodeResult
from nixherd.fleet.runner import fan_out, run_nodes
from nixherd.node.abort import Aborts

NAMES = [f"n{i}" for i in range(12)]


def test_never_more_than_parallel_at_once() -> None:
    lock = threading.Lock()
    running = peak = 0

    def work(name: str) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return name.upper()

    result = fan_out(NAMES, work, parallel=3, cancel=threading.Event())
    assert peak == 3
    assert result.results == {n: n.upper() for n in NAMES}
    assert result.not_started == () and not result.interrupted


def test_zero_means_all_at_once() -> None:
    barrier = threading.Barrier(len(NAMES), timeout=5)

    def work(name: str) -> str:
        barrier.wait()  # deadlocks (and times out) unless every node runs at the same time
        return name

    assert len(fan_out(NAMES, work, parallel=0, cancel=threading.Event()).results) == len(NAMES)


def test_a_slow_node_does_not_hold_the_others() -> None:
    done: list[str] = []

    def work(name: str) -> str:
        time.sleep(0.5 if name == "n0" else 0.01)
        done.append(name)
        return name

    fan_out(NAMES, work, parallel=2, cancel=threading.Event())
    assert done[-1] == "n0"  # the other 11 went through the second slot meanwhile


def test_stop_starts_no_new_node() -> None:
    def work(name: str) -> bool:
        return name != "n1"  # n1 "fails"

    result = fan_out(NAMES, work, parallel=1, cancel=threading.Event(), stop=lambda _n, ok: not ok)
    assert set(result.results) == {"n0", "n1"}
    assert result.not_started == tuple(NAMES[2:])
    assert not result.interrupted


def test_ctrl_c_in_the_scheduler_waits_for_running_nodes() -> None:
    cancel = threading.Event()
    finished: list[str] = []
    second_started = threading.Event()

    def work(name: str) -> str:
        if name == "n1":
            second_started.set()
        if name == "n0":
            assert second_started.wait(5)
            _thread.interrupt_main()  # a Ctrl-C arrives while n0 and n1 run
        time.sleep(0.3)
        finished.append(name)
        return name

    result = fan_out(NAMES, work, parallel=2, cancel=cancel)
    assert result.interrupted and cancel.is_set()
    assert sorted(finished) == ["n0", "n1"]  # in-flight nodes finished, none started after
    assert set(result.results) == {"n0", "n1"}
    assert result.not_started == tuple(NAMES[2:])


def test_empty() -> None:
    result = fan_out([], lambda n: n, parallel=4, cancel=threading.Event())
    assert result.results == {} and result.not_started == ()


# --- run_nodes: the runner every fleet command uses ---


@dataclass(frozen=True)
class Named:
    name: str


def test_run_nodes_reports_every_node_in_order_and_announces_each() -> None:
    events: list[Event] = []

    def work(node: Named) -> int:
        time.sleep(0.05 if node.name == "n0" else 0.0)  # n0 ends last, is reported first
        if node.name == "n3":
            raise NixherdError("n3: no route to host")
        return int(node.name[1:])

    def result(name: str, value: int) -> NodeResult:
        return NodeResult(name, Outcome.OK, detail=f"got {value}")

    run = run_nodes(
        [Named(n) for n in NAMES[:5]],
        work,
        command="probe",
        result=result,
        parallel=0,
        emit=events.append,
        options={"parallel": 0},
    )
    report = run.report
    assert [r.node for r in report.nodes] == NAMES[:5]
    assert report.command == "probe" and report.options == {"parallel": 0}
    assert not report.interrupted
    failed = report.nodes[3]
    assert failed.outcome is Outcome.FAILED
    assert failed.error is not None and failed.error.message == "n3: no route to host"
    assert [r.detail for r in report.nodes if r.node != "n3"] == [
        "got 0",
        "got 1",
        "got 2",
        "got 4",
    ]
    assert run.values == {"n0": 0, "n1": 1, "n2": 2, "n4": 4}
    assert list(run.errors) == ["n3"]
    assert list(run.outcomes()) == NAMES[:5]  # values and errors, in the nodes' order
    finished = {e.node: e for e in events if isinstance(e, NodeFinished)}
    assert set(finished) == set(NAMES[:5])
    assert (
        finished["n3"].outcome is Outcome.FAILED and finished["n3"].error == "n3: no route to host"
    )
    assert finished["n1"].outcome is Outcome.OK and finished["n1"].error == "got 1"


def test_run_nodes_after_ctrl_c_starts_no_node_and_reports_the_rest_not_attempted() -> None:
    cancel = threading.Event()
    events: list[Event] = []
    started: list[str] = []

    def work(node: Named) -> str:
        started.append(node.name)
        if node.name == "n0":
            cancel.set()  # what the runner's SIGINT handler does on the first Ctrl-C
            time.sleep(0.3)  # still in flight: it must finish and be reported
        return node.name

    run = run_nodes(
        [Named(n) for n in NAMES],
        work,
        command="exec",
        result=reported_ok,
        parallel=2,
        emit=events.append,
        cancel=cancel,
    )
    report = run.report
    assert report.interrupted
    ran = set(started)
    assert "n0" in ran and len(ran) <= 2  # the node beside n0 may have started, no other
    by = {r.node: r for r in report.nodes}
    assert all(by[n].outcome is Outcome.OK for n in ran)
    rest = [n for n in NAMES if n not in ran]
    assert rest and all(by[n].outcome is Outcome.NOT_ATTEMPTED for n in rest)
    assert all(by[n].detail == "interrupted" for n in rest)
    announced = [e.node for e in events if isinstance(e, NodeFinished)]
    assert sorted(announced) == sorted(NAMES)
    with pytest.raises(KeyboardInterrupt):
        run.completed()


def reported_ok(name: str, _value: str) -> NodeResult:
    return NodeResult(name, Outcome.OK)


# --- the second Ctrl-C: aborts, and nodes given up on ---


def press_ctrl_c() -> None:
    """What a Ctrl-C on the terminal does to the main thread (its SIGINT handler runs)."""
    _thread.interrupt_main()


@pytest.fixture
def quick_abort(monkeypatch: pytest.MonkeyPatch) -> None:
    from nixherd.fleet import runner

    monkeypatch.setattr(runner, "ABORT_GRACE", 5.0)
    monkeypatch.setattr(runner, "ABORT_SETTLE", 0.3)


def test_the_first_ctrl_c_is_announced_at_once_with_the_nodes_in_flight() -> None:
    events: list[Event] = []
    announced = threading.Event()
    both = threading.Barrier(3, timeout=5)

    def emit(event: Event) -> None:
        events.append(event)
        if isinstance(event, Interrupted):
            announced.set()

    def work(name: str) -> str:
        if name in ("n0", "n1"):
            both.wait()
            # Still in flight when the notice must come: it may not wait for this node.
            assert announced.wait(5), "the first Ctrl-C was not announced while nodes ran"
        return name

    def press_when_both_run() -> None:
        both.wait()
        press_ctrl_c()

    presser = threading.Thread(target=press_when_both_run)
    presser.start()
    result = fan_out(NAMES, work, parallel=2, cancel=threading.Event(), emit=emit)
    presser.join()
    notices = [e for e in events if isinstance(e, Interrupted)]
    assert notices == [Interrupted(("n0", "n1"), aborting=False)]
    assert result.interrupted and set(result.results) == {"n0", "n1"}
    assert result.abandoned == ()


@pytest.mark.usefixtures("quick_abort")
def test_the_second_ctrl_c_fires_the_aborts_and_waits_for_the_nodes_they_end() -> None:
    aborts = Aborts()
    events: list[Event] = []
    ended = threading.Event()
    in_flight = threading.Event()

    def work(name: str) -> str:
        # An activation that never ends by itself; its abort ends it (the node rolls back).
        def hook() -> str:
            ended.set()
            return "aborted: rolled back to its previous system"

        aborts.add(name, hook)
        in_flight.set()
        assert ended.wait(10)
        return "rolled back"

    def press_twice() -> None:
        assert in_flight.wait(5)
        press_ctrl_c()
        time.sleep(0.5)
        press_ctrl_c()

    presser = threading.Thread(target=press_twice)
    presser.start()
    started = time.monotonic()
    result = fan_out(
        ["n0", "n1"], work, parallel=1, cancel=threading.Event(), emit=events.append, aborts=aborts
    )
    presser.join()
    assert time.monotonic() - started < 5
    assert result.results == {"n0": "rolled back"}  # its own worker reported it
    assert result.not_started == ("n1",) and result.abandoned == ()
    assert [e for e in events if isinstance(e, Interrupted)] == [
        Interrupted(("n0",), aborting=False),
        Interrupted(("n0",), aborting=True),
    ]
    assert aborts.said("n0") == "aborted: rolled back to its previous system"


@pytest.mark.usefixtures("quick_abort")
def test_after_the_second_ctrl_c_a_node_that_does_not_end_is_given_up() -> None:
    never = threading.Event()
    events: list[Event] = []

    def work(node: Named) -> str:
        never.wait(60)  # a copy or a check that takes its time, nothing to abort
        return node.name

    def press_twice() -> None:
        time.sleep(0.3)
        press_ctrl_c()
        time.sleep(0.3)
        press_ctrl_c()

    presser = threading.Thread(target=press_twice)
    presser.start()
    started = time.monotonic()
    try:
        run = run_nodes(
            [Named("n0"), Named("n1")],
            work,
            command="exec",
            result=reported_ok,
            parallel=1,
            emit=events.append,
        )
    finally:
        never.set()
        presser.join()
    assert time.monotonic() - started < 3  # the settle time, not the work's minute
    report = run.report
    assert report.interrupted
    by = {r.node: r for r in report.nodes}
    assert by["n0"].outcome is Outcome.INTERRUPTED
    assert by["n0"].detail == "abandoned in flight after a second Ctrl-C: the outcome is unknown"
    assert by["n1"].outcome is Outcome.NOT_ATTEMPTED
    finished = {e.node: e.outcome for e in events if isinstance(e, NodeFinished)}
    assert finished == {"n0": Outcome.INTERRUPTED, "n1": Outcome.NOT_ATTEMPTED}


def test_an_abort_registered_after_the_firing_runs_at_once() -> None:
    aborts = Aborts()
    assert aborts.fire() == ()
    done = threading.Event()

    def hook() -> str:
        done.set()
        return "aborted"

    aborts.add("late", hook)
    assert done.wait(5)
    deadline = time.monotonic() + 5
    while aborts.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert aborts.said("late") == "aborted" and aborts.registered("late")


def test_a_removed_abort_is_not_fired() -> None:
    aborts = Aborts()
    token = aborts.add("done", lambda: "should not run")
    aborts.remove(token)
    assert aborts.fire() == ()
    assert aborts.said("done") is None

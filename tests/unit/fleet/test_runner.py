"""The fleet runner's engine: the parallel limit, stopping, cancelling, a Ctrl-C in the scheduler."""

from __future__ import annotations

import _thread
import threading
import time

from nixherd.fleet.runner import fan_out

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

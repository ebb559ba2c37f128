"""rollout.py: amounts, waves (canaries then batches) and when a rollout stops."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nixherd.errors import UsageError
from nixherd.fleet.rollout import Amount, Rollout, WaveKind

NAMES = [f"n{i:02d}" for i in range(10)]


@pytest.mark.parametrize(
    ("text", "amount"),
    [("3", Amount(3)), ("25%", Amount(25, True)), (" 0 ", Amount(0)), ("100%", Amount(100, True))],
)
def test_amount_parses(text: str, amount: Amount) -> None:
    assert Amount.parse(text) == amount


@pytest.mark.parametrize("text", ["", "-1", "1.5", "x", "101%", "%", "5%%", "1e3"])
def test_amount_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="--batch"):
        Amount.parse(text, option="--batch")


def test_percent_rounds_up() -> None:
    assert Amount(25, True).of(10) == 3
    assert Amount(10, True).of(5) == 1
    assert Amount(0, True).of(5) == 0
    assert Amount(7).of(3) == 7


def test_no_options_is_one_wave_of_everything() -> None:
    waves = Rollout().waves(NAMES)
    assert [(w.kind, w.nodes) for w in waves] == [(WaveKind.BATCH, tuple(NAMES))]


def test_canaries_then_batches_in_order() -> None:
    waves = Rollout(canary=2, batch=Amount(3)).waves(NAMES)
    assert [w.kind for w in waves] == [WaveKind.CANARY] + [WaveKind.BATCH] * 3
    assert [len(w.nodes) for w in waves] == [2, 3, 3, 2]
    assert [n for w in waves for n in w.nodes] == NAMES


def test_batch_percent_is_of_the_whole_selection() -> None:
    waves = Rollout(batch=Amount(50, True)).waves(NAMES)
    assert [len(w.nodes) for w in waves] == [5, 5]


def test_zero_batch_still_progresses() -> None:
    assert len(Rollout(batch=Amount(0)).waves(NAMES)) == len(NAMES)


def test_more_canaries_than_nodes() -> None:
    waves = Rollout(canary=20).waves(NAMES[:3])
    assert [(w.kind, len(w.nodes)) for w in waves] == [(WaveKind.CANARY, 3)]


def test_stop_rules() -> None:
    unlimited = Rollout()
    assert not unlimited.should_stop(failures=9, total=10, canary_failed=False)
    assert unlimited.should_stop(failures=0, total=10, canary_failed=True)
    zero = Rollout(max_failures=Amount(0))
    assert not zero.should_stop(failures=0, total=10, canary_failed=False)
    assert zero.should_stop(failures=1, total=10, canary_failed=False)
    share = Rollout(max_failures=Amount(20, True))  # 2 of 10 tolerated
    assert not share.should_stop(failures=2, total=10, canary_failed=False)
    assert share.should_stop(failures=3, total=10, canary_failed=False)


@given(
    n=st.integers(0, 60),
    canary=st.integers(0, 70),
    batch=st.none()
    | st.integers(0, 70).map(Amount)
    | st.integers(0, 100).map(lambda p: Amount(p, True)),
)
def test_waves_partition_the_selection(n: int, canary: int, batch: Amount | None) -> None:
    names = [f"n{i}" for i in range(n)]
    waves = Rollout(canary=canary, batch=batch).waves(names)
    assert [x for w in waves for x in w.nodes] == names
    assert all(w.nodes for w in waves)
    assert sum(1 for w in waves if w.kind is WaveKind.CANARY) == (1 if canary and n else 0)

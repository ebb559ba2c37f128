"""fleet/evaluate.py without nix: the `nix eval` argv, the worker processes (how many, how big,
how many at once), the results streamed as Nix traces them, failures pinned on their node, and
Nix's messages cleaned up.

The evaluation itself (tryEval, isolating failures, the memory of real processes) runs against
the real nix in tests/nix/test_fleet_eval.py and tests/nix/test_eval_workers.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from evalkit import FakeEval, names_of, system, timing_out

from nixherd.errors import CommandError, UsageError
from nixherd.fleet import evaluate as fleet
from nixherd.fleet import nixerror
from nixherd.run import nix, process
from nixherd.run.process import Result

ONE = fleet.EvalLimits(workers=1, node_limit=0)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeEval:
    f = FakeEval()
    monkeypatch.setattr(process, "run", f)
    return f


def test_one_nix_eval_for_all_nodes_with_one_worker(fake: FakeEval) -> None:
    fake.answers["db.eu"] = {"error": "no nixosConfigurations.db.eu in the flake"}
    results = fleet.eval_nodes("/srv/fleet", ["web-1", "db.eu", "web-1"], limits=ONE)
    assert fake.calls == [["web-1", "db.eu"]]  # the names reach Nix as string literals, once
    (kw,) = fake.kwargs
    assert kw["check"] is False and kw["what"] == "nix eval"
    assert list(results) == ["web-1", "db.eu"]
    web = results["web-1"]
    assert (web.drv_path, web.out_path, web.error) == (*system("web-1").values(), None)
    assert web.seconds is not None and web.seconds >= 0
    assert results["db.eu"].to_data() == {
        "name": "db.eu",
        "ok": False,
        "drv_path": None,
        "out_path": None,
        "error": "no nixosConfigurations.db.eu in the flake",
    }


def test_the_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, ...]] = []
    real = FakeEval()

    def spy(argv: Sequence[str], **kw: Any) -> Result:
        seen.append(tuple(argv))
        return real(argv, **kw)

    monkeypatch.setattr(process, "run", spy)
    fleet.eval_nodes("/srv/fleet", ["web-1", "db.eu"], limits=ONE)
    (argv,) = seen
    assert argv[:7] == (
        "nix",
        "--extra-experimental-features",
        "nix-command flakes",
        "eval",
        "--json",
        "/srv/fleet#nixosConfigurations",
        "--apply",
    )
    assert len(argv) == 8
    assert argv[7].startswith("configs: builtins.foldl' ")  # forced in order, one by one
    assert argv[7].endswith('[ "web-1" "db.eu" ]')


def test_workers_and_chunks_bound_every_process(fake: FakeEval) -> None:
    names = [f"n{i:02}" for i in range(10)]
    gate = threading.Barrier(3, timeout=5)
    fake.hold = lambda _names: gate.wait() if len(fake.calls) <= 3 else None
    results, stats = fleet.eval_fleet(
        "/srv/fleet", names, limits=fleet.EvalLimits(workers=3, node_limit=2)
    )
    assert sorted(n for chunk in fake.calls for n in chunk) == names  # each node once
    assert all(len(chunk) <= 2 for chunk in fake.calls)
    assert len(fake.calls) == 5
    assert fake.most_at_once == 3  # the first three met at the barrier: three at once
    assert list(results) == names and all(r.ok for r in results.values())
    assert (stats.workers, stats.node_limit, stats.processes) == (3, 2, 5)
    assert stats.peak_rss == 2 * fake.rss_per_node  # the largest process's, not their sum
    assert stats.to_data()["peak_rss_bound_bytes"] == 3 * 2 * fake.rss_per_node


def test_no_limit_shares_the_nodes_evenly(fake: FakeEval) -> None:
    names = [f"n{i}" for i in range(7)]
    fleet.eval_nodes("/srv/fleet", names, limits=fleet.EvalLimits(workers=2, node_limit=0))
    assert sorted(len(c) for c in fake.calls) == [3, 4]


def test_each_result_is_handed_on_while_its_process_still_runs(fake: FakeEval) -> None:
    handed: list[str] = []
    seen_while_running: list[list[str]] = []
    fake.hold = lambda _names: seen_while_running.append(list(handed))
    fleet.eval_fleet("/srv/fleet", ["a", "b"], limits=ONE, on_node=lambda r: handed.append(r.name))
    assert seen_while_running == [["a"]]  # a was out before the process got to b
    assert handed == ["a", "b"]


def test_an_error_that_ends_the_process_is_its_nodes_and_the_rest_go_on(fake: FakeEval) -> None:
    fake.answers["b"] = "attribute 'nope' missing\n\n       at /f/b.nix:1:2:"
    results, stats = fleet.eval_fleet("/srv/fleet", ["a", "b", "c"], limits=ONE)
    assert fake.calls == [["a", "b", "c"], ["c"]]  # a is not evaluated again
    assert results["a"].ok and results["c"].ok
    assert results["b"].error == "attribute 'nope' missing\n\n       at /f/b.nix:1:2:"
    assert stats.processes == 2
    assert fake.flake_checks == 0  # a came out: the flake evaluates


def test_a_killed_process_names_the_node_it_was_on(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def killed_at_b(argv: Sequence[str], **kw: Any) -> Result:
        calls.append(names_of(argv))
        if calls[-1][0] == "a":
            kw["on_line"]("trace: nixherd-eval " + json.dumps({"name": "a", **system("a")}))
            return Result(tuple(argv), -9, "", "")  # the OOM killer, say
        return FakeEval()(argv, **kw)

    monkeypatch.setattr(process, "run", killed_at_b)
    results = fleet.eval_nodes("/srv/fleet", ["a", "b", "c"], limits=ONE)
    assert calls == [["a", "b", "c"], ["c"]]
    assert results["a"].ok and results["c"].ok
    assert results["b"].error == (
        "nix eval was killed by signal 9 while evaluating this node (out of memory? fewer nodes "
        "per process: --eval-node-limit)"
    )


def test_restarts_are_rationed(fake: FakeEval) -> None:
    fake.answers.update(a="boom a", b="boom b")
    results = fleet.eval_nodes("/srv/fleet", ["a", "b", "c"], limits=ONE, max_diagnoses=1)
    assert fake.calls == [["a", "b", "c"], ["b", "c"]]
    assert fake.flake_checks == 1  # nothing came out of the first process: is it the flake?
    assert results["a"].error == "boom a" and results["b"].error == "boom b"
    error = results["c"].error
    assert error is not None and error.startswith("not evaluated: the nix process")
    assert "stopped at b's error" in error


def test_limits_are_checked_and_planned() -> None:
    with pytest.raises(UsageError):
        fleet.EvalLimits(workers=0)
    with pytest.raises(UsageError):
        fleet.EvalLimits(node_limit=-1)
    assert fleet.EvalLimits(workers=4, node_limit=10).plan(100) == (4, 10)
    assert fleet.EvalLimits(workers=4, node_limit=10).plan(3) == (3, 1)
    assert fleet.EvalLimits(workers=2, node_limit=0).plan(100) == (2, 50)
    assert fleet.EvalLimits(workers=1, node_limit=0).plan(0) == (1, 1)


def test_the_automatic_node_limit_is_colmenas_heuristic_shared(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 25000000 kB\nMemAvailable:   11534336 kB\n")  # 11 GiB
    assert fleet.auto_node_limit(1, str(meminfo)) == 20  # (11264 - 1024) // 512
    assert fleet.auto_node_limit(4, str(meminfo)) == 5
    meminfo.write_text("MemAvailable: 524288 kB\n")  # less than the reserve: still one
    assert fleet.auto_node_limit(2, str(meminfo)) == 1
    assert fleet.auto_node_limit(2, str(tmp_path / "none")) == fleet.FALLBACK_NODE_LIMIT


def test_names_are_quoted_as_nix_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    odd = 'x"${builtins.throw "no"}\\'
    seen: list[str] = []

    def fake(argv: Sequence[str], **kw: Any) -> Result:
        seen.append(argv[-1])
        kw["on_line"]("trace: nixherd-eval " + json.dumps({"name": odd, "error": "absent"}))
        return Result(tuple(argv), 0, "1\n", "")

    monkeypatch.setattr(process, "run", fake)
    assert fleet.eval_nodes("path:/f", [odd])[odd].error == "absent"
    assert seen[0].endswith(f"[ {nix.nix_string(odd)} ]")


def test_no_names_no_nix(fake: FakeEval) -> None:
    assert fleet.eval_nodes("/srv/fleet", []) == {}
    assert fake.calls == []


def test_huge_selections_are_split_under_the_argv_limit(
    fake: FakeEval, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"node-{i:05}-" + "x" * 50 for i in range(10_000)]
    sizes: list[int] = []
    real = FakeEval.__call__

    def measure(self: FakeEval, argv: Sequence[str], **kw: Any) -> Result:
        sizes.append(len(argv[-1].encode()))
        return real(self, argv, **kw)

    monkeypatch.setattr(FakeEval, "__call__", measure)
    results = fleet.eval_nodes("/srv/fleet", names, limits=ONE)
    assert all(size < 128 * 1024 for size in sizes)  # Linux's MAX_ARG_STRLEN
    assert 2 <= len(fake.calls) <= 10
    assert [name for chunk in fake.calls for name in chunk] == names
    assert list(results) == names
    assert results[names[-1]].drv_path == system(names[-1])["drv"]


def test_timeout_is_raised_not_bisected(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float | None] = []

    def fake(argv: Sequence[str], **kw: Any) -> Result:
        calls.append(kw.get("timeout"))
        return timing_out(argv)

    monkeypatch.setattr(process, "run", fake)
    with pytest.raises(CommandError):
        fleet.eval_nodes("/srv/fleet", ["a", "b", "c"], timeout=30, limits=ONE)
    assert calls == [30]


def test_names_of_reads_what_the_fake_needs() -> None:
    assert names_of(["x", 'configs: 0 [ "a" "b.c" ]']) == ["a", "b.c"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (
            "error: nixherd: node 'db': module 'x.nix' not found (looked for /nix/store/s/x.nix)\n"
            "(use '--show-trace' to show detailed location information)\n",
            "nixherd: node 'db': module 'x.nix' not found (looked for /nix/store/s/x.nix)\n"
            "(use '--show-trace' to show detailed location information)",
        ),
        # stdout (partial JSON) comes before stderr; a warning before the error.
        (
            "{\"drv\":warning: Git tree is dirty\nerror: attribute 'nope' missing\n\n"
            "       at /nix/store/s/db.nix:1:3:\n",
            "attribute 'nope' missing\n\n       at /nix/store/s/db.nix:1:3:",
        ),
        ("", "nix eval failed without a message"),
        ("Killed\n", "Killed"),
    ],
)
def test_error_message(output: str, message: str) -> None:
    assert fleet.error_message(output) == message


def test_flake_for_is_the_inventory_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "flake.nix").write_text("{ outputs = _: { }; }")
    monkeypatch.chdir(tmp_path)
    assert fleet.flake_for("inventory.toml") == str(tmp_path)
    assert fleet.flake_for(str(tmp_path / "inventory.toml")) == str(tmp_path)
    # Without a flake.nix beside it, nix would go looking for one further up: refuse.
    with pytest.raises(fleet.FlakeError, match=r"no flake.nix next to the inventory in /"):
        fleet.flake_for("sub/inventory.toml")


def test_the_error_is_the_first_line_that_starts_with_error() -> None:
    # A substituter's retry warning holds "error:" too; Nix's error is the line that starts so.
    output = (
        "warning: error: unable to download 'https://cache.nixos.org/nix-cache-info': "
        "Couldn't resolve host name (6); retrying in 291 ms\n"
        "error: attribute 'http_prot' missing\n\n       at /nix/store/s-source/web.nix:4:5:\n"
    )
    assert fleet.error_message(output) == (
        "attribute 'http_prot' missing\n\n       at /nix/store/s-source/web.nix:4:5:"
    )


def frame(i: int) -> list[str]:
    """One trace frame as Nix prints it: what, where, and four lines of code."""
    return [
        f"       … while evaluating the attribute 'a{i}'",
        "",
        f"       at /nix/store/s-source/m{i}.nix:{i}:3:",
        "",
        f"           {i}|   a{i} = b;",
        "             |   ^",
        "",
    ]


HINT = "(use '--show-trace' to show detailed location information)"


def test_a_long_trace_is_bounded_and_keeps_every_position() -> None:
    # Nix 2.8: the error, its position and code, then the trace.
    head = ["error: attribute 'x' missing", "", "       at /nix/store/s-source/web.nix:4:5:"]
    lines = head + [line for i in range(1, 41) for line in frame(i)]
    message = fleet.error_message("\n".join(lines)).splitlines()
    assert len(message) <= fleet.MAX_ERROR_LINES + nixerror._MAX_FRAME_LINES
    assert message[0] == "attribute 'x' missing"
    assert "       at /nix/store/s-source/web.nix:4:5:" in message
    for i in range(1, 41):
        assert f"       at /nix/store/s-source/m{i}.nix:{i}:3:" in message
    assert any("lines of Nix's message left out" in line for line in message)
    # Under the bound, the message is Nix's whole.
    whole = "\n".join(["attribute 'x' missing", *lines[1:40]]).rstrip()
    assert fleet.error_message("\n".join(lines[:40])) == whole


def test_a_long_trace_of_newer_nix_keeps_the_error_at_its_end() -> None:
    # Nix 2.16+: a bare "error:", the trace, then the error itself last.
    lines = ["error:", *[line for i in range(1, 41) for line in frame(i)]]
    lines += ["       error: attribute 'x' missing", "", "       at /f/web.nix:4:5:"]
    message = fleet.error_message("\n".join(lines)).splitlines()
    assert message[-3:] == ["       error: attribute 'x' missing", "", "       at /f/web.nix:4:5:"]
    assert message[0].startswith("       … while evaluating")


def test_a_huge_trace_keeps_its_first_and_last_frames() -> None:
    lines = ["error: deep", *[line for i in range(1, 1001) for line in frame(i)], HINT]
    message = fleet.error_message("\n".join(lines)).splitlines()
    assert len(message) <= fleet.MAX_ERROR_LINES + nixerror._MAX_FRAME_LINES
    assert message[-1] == HINT
    assert "       at /nix/store/s-source/m6.nix:6:3:" in message
    assert "       at /nix/store/s-source/m994.nix:994:3:" in message
    assert any(line.endswith("more trace lines") for line in message)

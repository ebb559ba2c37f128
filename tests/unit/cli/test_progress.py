"""cli/progress.py: plain `node | line` output, per-node log files, the live view, the summary."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from nixherd.cli.progress import Progress, new_log_dir, print_summary
from nixherd.events import (
    RUN_WIDE,
    Interrupted,
    LogLine,
    NodeFinished,
    Outcome,
    Stage,
    StageFinished,
    StageStarted,
)
from nixherd.fleet.report import ErrorInfo, NodeResult, RunReport


def feed(view: Progress) -> None:
    for name in ("web-1", "db"):
        view(StageStarted(name, Stage.EVAL))
    view(LogLine(RUN_WIDE, "building '/nix/store/x.drv'..."))
    view(StageStarted("web-1", Stage.COPY))
    view(LogLine("web-1", "copying 3 paths"))
    view(StageFinished("web-1", Stage.COPY, 1.25))
    view(NodeFinished("web-1", Outcome.OK, "switched"))
    view(NodeFinished("db", Outcome.FAILED, "cannot reach root@db port 22\nsecond line"))


def test_plain_lines() -> None:
    out = io.StringIO()
    with Progress(["web-1", "db"], title="apply", live=False, stream=out, log_dir=None) as view:
        feed(view)
    lines = out.getvalue().splitlines()
    assert lines[0] == "*     | eval (2 nodes)"  # said once for the whole run
    assert "*     | building '/nix/store/x.drv'..." in lines
    assert "web-1 | copy" in lines
    assert "web-1 | copying 3 paths" in lines
    assert any(line.startswith("web-1 | ok: switched (") for line in lines)
    assert any(line.startswith("db    | failed: cannot reach root@db port 22") for line in lines)
    assert "db    |   second line" in lines


def test_log_file_per_node(tmp_path: Path) -> None:
    log_dir = new_log_dir(str(tmp_path / "logs"))
    assert Path(log_dir).parent == tmp_path / "logs"
    with Progress(
        ["web-1", "db"], title="apply", live=False, stream=io.StringIO(), log_dir=log_dir
    ) as v:
        feed(v)
    web = (Path(log_dir) / "web-1.log").read_text()
    assert "> copy" in web and "copying 3 paths" in web and "< copy (1.25 s)" in web
    assert "= ok: switched" in web
    assert "cannot reach" in (Path(log_dir) / "db.log").read_text()
    assert "building" in (Path(log_dir) / "run.log").read_text()
    # A second run in the same second gets its own directory.
    assert new_log_dir(str(tmp_path / "logs")) != log_dir


def test_stages_can_be_silenced_for_exec() -> None:
    out = io.StringIO()
    with Progress(["a"], title="exec", live=False, stream=out, show_stages=False) as view:
        view(StageStarted("a", Stage.EXEC))
        view(LogLine("a", "Linux"))
        view(NodeFinished("a", Outcome.OK, "exit 0"))
    assert out.getvalue() == "a | Linux\n"


def test_live_view_draws_every_node() -> None:
    out = io.StringIO()
    view = Progress(["web-1", "db"], title="apply", live=True, stream=out)
    with view:
        feed(view)
        table = view._render()
    from rich.console import Console

    console = Console(file=io.StringIO(), width=120)
    console.print(table)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "apply: 2/2 done" in text
    assert "web-1" in text and "db" in text and "failed" in text


def report(*results: NodeResult, log_dir: str | None = None) -> RunReport:
    now = time.time()
    return RunReport("apply", "switch", ".", now - 3, now, tuple(results), log_dir=log_dir)


def test_summary_plain_with_failure_details() -> None:
    out = io.StringIO()
    error = ErrorInfo(
        "nix copy failed (exited with 1)",
        "nix copy --to ssh://x /nix/store/y",
        1,
        "a\nerror: disk full",
    )
    print_summary(
        report(
            NodeResult(
                "web-1", Outcome.OK, stages={"copy": 1.0, "activate": 0.5}, detail="switched"
            ),
            NodeResult("db", Outcome.FAILED, error=error),
            NodeResult("c", Outcome.NOT_ATTEMPTED, detail="rollout stopped"),
            log_dir="/tmp/logs/1",
        ),
        stream=out,
        rich=False,
    )
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].split() == ["node", "result", "seconds", "note"]
    assert lines[1].split()[:3] == ["web-1", "ok", "1.5"]
    assert "nix copy failed (exited with 1): error: disk full" in lines[2]
    assert "  command: nix copy --to ssh://x /nix/store/y" in lines
    assert "  | error: disk full" in lines
    assert "3 nodes: 1 ok, 1 failed, 1 not attempted in 3.0 s" in text
    assert "logs: /tmp/logs/1" in lines


def test_a_ctrl_c_is_said_at_once_with_each_node_in_flight_and_its_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()  # the command's own output (exec's is stdout): the notice is not in it
    logs = tmp_path / "logs"
    logs.mkdir()
    with Progress(
        ["web-1", "db", "cache"], title="apply", live=False, stream=out, log_dir=str(logs)
    ) as view:
        view(StageStarted("web-1", Stage.ACTIVATE))
        view(StageStarted("db", Stage.COPY))
        view(Interrupted(("web-1", "db"), aborting=False))
        first = capsys.readouterr().err
        view(Interrupted(("web-1",), aborting=True))
        second = capsys.readouterr().err
    assert first == (
        "nixherd: Ctrl-C: no new node starts; in flight: web-1 (activate), db (copy). They "
        "finish; Ctrl-C again aborts them (activations roll back)\n"
    )
    assert second.startswith(
        "nixherd: Ctrl-C again: aborting the nodes in flight: web-1 (activate);"
    )
    assert "Ctrl-C" not in out.getvalue()
    assert "Ctrl-C: no new node starts" in (logs / "run.log").read_text()


def test_events_after_the_view_is_closed_are_dropped() -> None:
    out = io.StringIO()
    view = Progress(["web-1"], title="apply", live=False, stream=out)
    with view:
        view(NodeFinished("web-1", Outcome.INTERRUPTED, "abandoned"))
    # A node given up on after a second Ctrl-C ends later, while the summary is printed.
    view(NodeFinished("web-1", Outcome.ROLLED_BACK, "rolled back"))
    assert "rolled back" not in out.getvalue()


def test_build_logs_show_the_build_in_the_live_view_and_where_lines_are_hidden() -> None:
    # -L: the build's lines (run-wide) come out as they arrive, also in the live view (else
    # only with -v) and in diff's view (which hides output lines).
    for kwargs, shown in (
        ({"live": True}, False),
        ({"live": True, "build_logs": True}, True),
        ({"live": False, "show_lines": False}, False),
        ({"live": False, "show_lines": False, "build_logs": True}, True),
    ):
        out = io.StringIO()
        with Progress(["web-1", "db"], title="apply", stream=out, **kwargs) as view:  # type: ignore[arg-type]
            feed(view)
        text = out.getvalue()
        assert ("building '/nix/store/x.drv'..." in text) is shown, kwargs
        assert "copying 3 paths" not in text  # a node's lines stay -v's


NIX_ERROR = (
    "evaluation failed: attribute 'http_prot' missing\n\n"
    "       at /nix/store/s-source/web.nix:4:5:\n\n"
    "            4|     node.vars.http_prot;\n"
    "(use '--show-trace' to show detailed location information)"
)


def test_failure_details_whole_and_on_their_own_stream() -> None:
    out, details = io.StringIO(), io.StringIO()
    print_summary(
        report(
            NodeResult("web-1", Outcome.FAILED, error=ErrorInfo(NIX_ERROR)),
            NodeResult("db", Outcome.FAILED, error=ErrorInfo("cannot reach db")),
        ),
        stream=out,
        rich=False,
        details=details,
    )
    table = out.getvalue()
    assert "evaluation failed: attribute 'http_prot' missing" in table  # the note: line one
    assert "web.nix" not in table
    assert details.getvalue() == (
        "\nweb-1: evaluation failed: attribute 'http_prot' missing\n\n"
        "         at /nix/store/s-source/web.nix:4:5:\n\n"
        "              4|     node.vars.http_prot;\n"
        "  (use '--show-trace' to show detailed location information)\n"
    )


def rendered(view: Progress, width: int = 120) -> list[str]:
    """The live view's current frame, as plain lines."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(view._render())
    return console.export_text().splitlines()


def test_live_view_drops_the_build_line_once_the_build_is_over() -> None:
    view = Progress(["web-1", "db"], title="apply", live=True, stream=io.StringIO())
    with view:
        for name in ("web-1", "db"):
            view(StageStarted(name, Stage.BUILD))
        view(LogLine(RUN_WIDE, "building '/nix/store/x.drv'..."))
        assert "building '/nix/store/x.drv'" in rendered(view)[0]
        for name in ("web-1", "db"):
            view(StageFinished(name, Stage.BUILD, 2.0))
        view(StageStarted("web-1", Stage.COPY))
        head = rendered(view)[0]
    assert head.startswith("apply: 0/2 done")
    assert "building" not in head


def test_live_view_keeps_the_nodes_in_their_order_as_they_finish() -> None:
    names = ["a-1", "b-2", "c-3"]
    view = Progress(names, title="apply", live=True, stream=io.StringIO())
    with view:
        for name in names:
            view(StageStarted(name, Stage.COPY))
        view(NodeFinished("a-1", Outcome.OK, "switched"))
        view(NodeFinished("c-3", Outcome.FAILED, "boom"))
        lines = rendered(view)
    rows = [line.split()[0] for line in lines[1:]]
    assert rows == names


def test_live_view_with_more_nodes_than_rows_shows_the_busy_ones_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = [f"n{i}" for i in range(6)]
    view = Progress(names, title="apply", live=True, stream=io.StringIO())
    monkeypatch.setattr(view, "_size", lambda: (100, 3))
    with view:
        for name in names:
            view(StageStarted(name, Stage.COPY))
        for name in ("n0", "n1", "n3"):
            view(NodeFinished(name, Outcome.OK, "switched"))
        view(NodeFinished("n4", Outcome.FAILED, "boom"))
        lines = rendered(view)
    # At work (n2, n5) and failed (n4) come first in importance, shown in the selection's order.
    assert [line.split()[0] for line in lines[1:4]] == ["n2", "n4", "n5"]
    assert "3 more" in lines[4]


def test_summary_says_the_rollback_once() -> None:
    prev = "/nix/store/" + "b" * 32 + "-nixos-system-web-1-1"
    error = ErrorInfo(
        f"activation failed (exit 1); rolled back to {prev}",
        output=f"switching: boom\nnixherd: re-activating\nnixherd: rolled back to {prev}",
    )
    out = io.StringIO()
    print_summary(
        report(
            NodeResult(
                "web-1",
                Outcome.ROLLED_BACK,
                error=error,
                rolled_back=True,
                rollback_reason="activation failed (exit 1)",
            )
        ),
        stream=out,
        rich=False,
        details=io.StringIO(),
    )
    row = out.getvalue().splitlines()[1]
    assert row.count("rolled back to") == 1, row
    assert error.summary().count("rolled back to") == 1

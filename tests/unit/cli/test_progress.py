"""cli/progress.py: plain `node | line` output, per-node log files, the live view, the summary."""

from __future__ import annotations

import io
import time
from pathlib import Path

from nixherd.cli.progress import Progress, new_log_dir, print_summary
from nixherd.events import (
    RUN_WIDE,
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

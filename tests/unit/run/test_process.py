"""process.run: exit codes, captured and streamed output, stdin, timeouts, missing programs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nixherd.errors import CommandError
from nixherd.run import process

PY = sys.executable


def test_captures_stdout_and_stderr_apart() -> None:
    result = process.run([PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)"])
    assert result.ok
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


def test_failure_raises_with_command_line_and_tail() -> None:
    with pytest.raises(CommandError) as info:
        process.run(
            [PY, "-c", "import sys; print('boom'); sys.exit(3)"], what="probe", node="web-1"
        )
    err = info.value
    assert err.returncode == 3
    assert "boom" in err.output
    text = err.render()
    assert text.startswith("web-1: probe failed (exited with 3): ")
    assert "-c" in text and "boom" in text


def test_check_false_returns_result() -> None:
    result = process.run([PY, "-c", "raise SystemExit(4)"], check=False)
    assert result.returncode == 4
    assert not result.ok


def test_input_reaches_stdin_not_argv() -> None:
    result = process.run([PY, "-c", "import sys; print(sys.stdin.read()[::-1])"], input="abc")
    assert result.stdout.strip() == "cba"
    assert "abc" not in " ".join(result.argv)


def test_streaming_hands_every_line_in_order() -> None:
    seen: list[str] = []
    result = process.run(
        [
            PY,
            "-c",
            "import sys\nfor i in range(3):\n print(i, flush=True)\nprint('e', file=sys.stderr)",
        ],
        on_line=seen.append,
    )
    assert seen[:3] == ["0", "1", "2"]
    assert "e" in seen
    assert result.stdout.splitlines() == seen


def test_timeout_kills_and_raises() -> None:
    with pytest.raises(CommandError) as info:
        process.run([PY, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert info.value.returncode is None
    assert "timed out" in info.value.render()


def test_streaming_timeout_kills_and_raises() -> None:
    with pytest.raises(CommandError) as info:
        process.run([PY, "-c", "import time; time.sleep(30)"], timeout=0.5, on_line=lambda _: None)
    assert info.value.returncode is None


def test_missing_program_is_a_command_error() -> None:
    with pytest.raises(CommandError) as info:
        process.run(["/nonexistent/program-nixherd"])
    assert info.value.returncode == 127


def test_children_run_in_their_own_session() -> None:
    # A Ctrl-C on the terminal must reach nixherd only; children are not in our session.
    import os

    result = process.run([PY, "-c", "import os; print(os.getsid(0))"])
    assert int(result.stdout) != os.getsid(0)


def test_timeout_does_not_wait_for_a_pipe_held_open_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Like a multiplexed ssh: the command dies but another process (here a detached grandchild,
    # in its own session so the group kill misses it) keeps our pipe open. run() must still return.
    import time

    monkeypatch.setattr(process, "_DRAIN_SECONDS", 0.5)
    script = (
        "import os, subprocess, time\n"
        "subprocess.Popen(['sleep', '30'], start_new_session=True)\n"
        "time.sleep(30)\n"
    )
    for streaming in (False, True):
        start = time.monotonic()
        with pytest.raises(CommandError) as info:
            process.run(
                [PY, "-c", script],
                timeout=0.5,
                on_line=(lambda _: None) if streaming else None,
            )
        assert info.value.returncode is None
        assert time.monotonic() - start < 5


# --- children die with nixherd ------------------------------------------------------------------

# A deployer that starts a command from a worker thread (as the pipeline does), a long-lived
# process meant to outlive it (`spawn`, as for lab hosts) and a control directory, says so on
# stdout, then waits to be killed. Both processes write their own pid first, so the test knows
# exactly which processes it watches.
DEPLOYER = """
import sys, threading, time
from nixherd.run import process
from nixherd.run import ssh
command_pid, lasting_pid = sys.argv[1:]
script = 'echo $$ > "$1.tmp" && mv "$1.tmp" "$1" && exec sleep 300'
process.spawn(["sh", "-c", script, "sh", lasting_pid])
worker = threading.Thread(target=process.run, args=(["sh", "-c", script, "sh", command_pid],))
worker.daemon = True
worker.start()
print(ssh._short_dir(), flush=True)
time.sleep(300)
"""


def _start_time(pid: int) -> int | None:
    """When `pid` started, or None if it is gone or a zombie (dead, its parent never reaped it:
    a child orphaned by a killed parent may wait for reaping by an init that does not reap)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_children_and_control_dirs_do_not_outlive_a_killed_deployer(tmp_path: Path) -> None:
    pid_files = [tmp_path / "command.pid", tmp_path / "lasting.pid"]
    deployer = subprocess.Popen(
        [PY, "-c", DEPLOYER, *map(str, pid_files)], stdout=subprocess.PIPE, text=True
    )
    started: dict[int, int | None] = {}
    control_dir = ""
    try:
        assert deployer.stdout is not None
        control_dir = deployer.stdout.readline().strip()
        assert control_dir.startswith("/tmp/nh-") and os.path.isdir(control_dir)
        assert _wait(lambda: all(f.exists() for f in pid_files), 10), "no process started"
        command, lasting = (int(f.read_text()) for f in pid_files)
        started = {pid: _start_time(pid) for pid in (command, lasting)}
        assert None not in started.values()
        deployer.kill()  # SIGKILL: nothing of nixherd's own runs after this
        deployer.wait()
        assert _wait(lambda: _start_time(command) is None, 10), "the command outlived nixherd"
        assert _wait(lambda: not os.path.exists(control_dir), 10), "the control dir stayed"
        # What `spawn` started is meant to outlive nixherd (lab hosts): the guardian, done by
        # now (it removed the directory last), left it alone.
        assert _start_time(lasting) == started[lasting]
    finally:
        if deployer.poll() is None:
            deployer.kill()
            deployer.wait()
        for pid, born in started.items():  # the test's own (and, before the fix, leftovers)
            if born is not None and _start_time(pid) == born:
                os.kill(pid, signal.SIGKILL)
        if deployer.stdout is not None:
            deployer.stdout.close()
        if control_dir.startswith("/tmp/nh-") and os.path.isdir(control_dir):
            os.rmdir(control_dir)


def test_the_guardian_kills_what_still_runs_and_spares_reused_pids(tmp_path: Path) -> None:
    # The guardian alone, told by hand what nixherd would tell it, then the end of its input.
    procs = [subprocess.Popen(["sleep", "300"], start_new_session=True) for _ in range(3)]
    try:
        running, ended, reused = procs
        born = {p.pid: process.start_time(p.pid) or 0 for p in procs}
        control = tmp_path / "nh-control"
        control.mkdir()
        (control / "stale-socket-name").write_text("")  # not a socket: no ssh asked about it
        lines = [
            f"+ {running.pid} {born[running.pid]}",
            f"- {running.pid} {born[running.pid] + 1}",  # a late end of an older holder of the pid
            f"+ {ended.pid} {born[ended.pid]}",
            f"- {ended.pid} {born[ended.pid]}",  # it ended: forgotten
            f"+ {reused.pid} {born[reused.pid] - 1}",  # the pid now names another process
            f"d {control}",
            "+ 12",  # a line torn by a kill mid-write
        ]
        guardian = [PY, "-c", "from nixherd.run import process; process.guard()"]
        subprocess.run(guardian, input="\n".join(lines).encode(), timeout=30, check=True)
        assert running.wait(timeout=5) == -signal.SIGKILL
        assert ended.poll() is None and reused.poll() is None
        assert not control.exists()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_streaming_run_tells_the_peak_memory_and_reap_survives_a_reaped_child() -> None:
    import subprocess

    from nixherd.run.reap import reap

    # 64 MiB touched: the kernel's figure is at least that.
    grow = "b = bytearray(64 << 20); print(len(b))"
    result = process.run([PY, "-c", grow], on_line=lambda _: None)
    assert result.max_rss is not None and result.max_rss >= 64 << 20
    # A child Popen reaped already (as kill()'s poll does): no second wait, no ChildProcessError.
    proc = subprocess.Popen([PY, "-c", "pass"])
    proc.wait()
    assert reap(proc) is None and proc.returncode == 0

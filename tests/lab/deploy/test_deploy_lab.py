"""Deploying to real lab hosts: every goal, failures isolated, no-op redeploys, no injection,
build on target, reboot, staged rollouts, Ctrl-C, exec and status. Runs `nixherd` as a process.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonkit
import pytest
from deploykit import HOSTS, Fleet, by_node, make_fleet
from labkit import LabFactory, LabHosts, http_json

from nixherd.cli import state
from nixherd.run import nix, process
from nixherd.run.process import Result

pytestmark = [pytest.mark.lab, pytest.mark.nix]

HOSTILE = (
    "$(touch /tmp/nixherd-pwned); `touch /tmp/nixherd-pwned`; a;b && c | d 'q' \"dq\" \\ $HOME"
)


@pytest.fixture(scope="session")
def deploy_lab(lab_hosts: LabFactory) -> Iterator[LabHosts]:
    # Unreachable substituters (cache.nixos.org) would cost every build seconds of retries.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NIX_CONFIG", "substituters =")
        yield lab_hosts(HOSTS, fresh=True)


@pytest.fixture
def fleet(tmp_path: Path, deploy_lab: LabHosts) -> Fleet:
    return make_fleet(tmp_path / "fleet", deploy_lab)


def explain(result: Result, report: dict[str, Any]) -> str:
    errors = {n["node"]: n["error"] for n in report.get("nodes", []) if n.get("error")}
    return f"{result.stdout}\n{result.stderr}\n{json.dumps(errors, indent=1)}"


def store_paths(fleet: Fleet, name: str) -> list[str]:
    return sorted(fleet.lab.ssh(name, "ls", "/nix/store").stdout.split())


def test_switch_gives_every_node_its_own_system(fleet: Fleet) -> None:
    names = ["lab-1", "lab-2", "lab-3"]
    fleet.write(names, users={"lab-3": "deploy"}, service=["lab-2"])
    result, report = fleet.apply("switch", "--parallel", "0")
    assert result.returncode == 0, explain(result, report)
    nodes = by_node(report)
    paths = {name: nodes[name]["store_path"] for name in names}
    assert len(set(paths.values())) == 3
    for name in names:
        assert nodes[name]["result"] == "ok"
        assert fleet.current(name) == paths[name]  # its own build, not a neighbour's
        assert fleet.profile(name) == paths[name]
        assert set(nodes[name]["seconds"]) >= {"eval", "build", "probe", "copy", "activate"}
    port = fleet.nodes["lab-2"]["vars"]["http_port"]
    answer = http_json(port)
    assert answer["node"] == "lab-2" and answer["version"] == fleet.version
    assert report["ok"] is True and report["goal"] == "switch"
    # The log directory holds one file per node, and its path is printed at the end.
    log_dir = fleet.work / report["log_dir"]
    assert "> copy" in (log_dir / "lab-3.log").read_text()
    assert f"logs: {report['log_dir']}" in result.stdout


def test_each_goal_does_exactly_its_job(fleet: Fleet) -> None:
    node = ["lab-4"]

    def build() -> str:
        out = fleet.nixherd("build", "--on", "lab-4", check=True).stdout.split()
        return out[-1]

    fleet.write(node)
    result, _ = fleet.apply("switch")
    assert result.returncode == 0, result.stdout
    base = build()
    assert fleet.current("lab-4") == base

    fleet.write(node)  # push: the closure arrives, nothing else changes
    pushed = build()
    result, report = fleet.apply("push")
    assert result.returncode == 0, result.stdout
    assert by_node(report)["lab-4"]["result"] == "ok"
    assert fleet.lab.ssh("lab-4", "nix-store", "--check-validity", pushed, check=False).ok
    assert (fleet.current("lab-4"), fleet.profile("lab-4")) == (base, base)

    fleet.write(node)  # boot: the profile moves, the running system does not
    booted = build()
    result, _ = fleet.apply("boot")
    assert result.returncode == 0, result.stdout
    assert (fleet.current("lab-4"), fleet.profile("lab-4")) == (base, booted)

    fleet.write(node)  # test: the running system moves, the profile does not
    tested = build()
    result, _ = fleet.apply("test")
    assert result.returncode == 0, result.stdout
    assert (fleet.current("lab-4"), fleet.profile("lab-4")) == (tested, booted)

    fleet.write(node)  # dry-activate: nothing moves
    before = fleet.lab.sh("lab-4", "ls -la /nix/var/nix/profiles; cat /nix/var/lab/etc/motd").stdout
    result, report = fleet.apply("dry-activate")
    assert result.returncode == 0, result.stdout
    assert by_node(report)["lab-4"]["result"] == "ok"
    assert (fleet.current("lab-4"), fleet.profile("lab-4")) == (tested, booted)
    after = fleet.lab.sh("lab-4", "ls -la /nix/var/nix/profiles; cat /nix/var/lab/etc/motd").stdout
    assert after == before


def test_a_host_that_is_down_fails_alone(fleet: Fleet) -> None:
    dead_port = fleet.lab.port("lab-4") + 1000  # nothing listens there
    fleet.write(
        ["lab-1", "lab-2"],
        extra_nodes={"gone": {"host": "127.0.0.1", "port": dead_port}},
    )
    result, report = fleet.apply("switch")
    assert result.returncode == 1
    nodes = by_node(report)
    assert nodes["gone"]["result"] == "failed"
    assert nodes["gone"]["error"]["message"].startswith(
        f"cannot reach root@127.0.0.1 port {dead_port}"
    )
    assert nodes["lab-1"]["result"] == nodes["lab-2"]["result"] == "ok"
    assert report["failed"] == ["gone"]
    assert "1 of 3 nodes failed: gone" in result.stderr
    assert fleet.current("lab-1") == nodes["lab-1"]["store_path"]


def test_redeploy_with_nothing_changed_copies_nothing(fleet: Fleet) -> None:
    names = ["lab-1", "lab-2", "lab-3"]
    fleet.write(names, users={"lab-2": "deploy"}, version="noop-" + str(time.time_ns()))
    result, _ = fleet.apply("switch")
    assert result.returncode == 0, result.stdout
    stores = {n: store_paths(fleet, n) for n in names}
    profiles = {
        n: fleet.lab.sh(n, "ls -l --time-style=+%s.%N /nix/var/nix/profiles").stdout for n in names
    }
    started = time.monotonic()
    result, report = fleet.apply("switch")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout
    for name, node in by_node(report).items():
        assert node["result"] == "up to date"
        assert "copy" not in node["seconds"] and "activate" not in node["seconds"]
        assert store_paths(fleet, name) == stores[name]  # nothing arrived
        assert (
            fleet.lab.sh(name, "ls -l --time-style=+%s.%N /nix/var/nix/profiles").stdout
            == profiles[name]
        )
    assert report["counts"] == {"up to date": 3}
    assert took < 10


def test_hostile_values_reach_files_and_commands_verbatim(fleet: Fleet) -> None:
    pwned = Path("/tmp/nixherd-pwned")
    pwned.unlink(missing_ok=True)
    fleet.write(["lab-1", "lab-3"], vars={"lab-1": {"motd": HOSTILE}}, users={"lab-3": "deploy"})
    result, _ = fleet.apply("switch")
    assert result.returncode == 0, result.stdout
    assert fleet.lab.ssh("lab-1", "cat", "/nix/var/lab/etc/motd").stdout == HOSTILE
    words = [HOSTILE, "$(id)", "a;b", "it's", "-oProxyCommand=touch /tmp/nixherd-pwned", "*"]
    result = fleet.nixherd("exec", "--on", "lab-1,lab-3", "--", "printf", "[%s]\\n", *words)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for node in ("lab-1", "lab-3"):
        got = [line.split(" | ", 1)[1] for line in lines if line.startswith(node + " ")]
        assert got == [f"[{w}]" for w in words]
    sudo = fleet.nixherd("exec", "--sudo", "--on", "lab-3", "--", "printf", "%s", HOSTILE)
    assert sudo.stdout.splitlines() == [f"lab-3 | {HOSTILE}"]
    assert not pwned.exists()
    for node in ("lab-1", "lab-3"):
        assert not fleet.lab.ssh(node, "test", "-e", str(pwned), check=False).ok


def test_build_on_target_builds_there_not_here(fleet: Fleet) -> None:
    fleet.write(["lab-2"], users={"lab-2": "deploy"})
    result, report = fleet.apply("switch", "--build-on-target")
    assert result.returncode == 0, result.stdout + result.stderr
    path = by_node(report)["lab-2"]["store_path"]
    assert fleet.current("lab-2") == path
    assert nix.invalid_paths([path]) == {path}  # never built on the deployer


def test_keep_result_keeps_a_gc_root_per_node(fleet: Fleet) -> None:
    fleet.write(["lab-1", "lab-2"])
    result = fleet.nixherd("build", "--keep-result", check=True)
    built = dict(line.split() for line in result.stdout.splitlines())
    for name in ("lab-1", "lab-2"):
        root = state.for_inventory(str(fleet.inventory)) / "results" / name
        assert root.is_symlink() and str(root.resolve()) == built[name]


def test_failing_canary_stops_the_rollout(fleet: Fleet) -> None:
    names = ["lab-1", "lab-2", "lab-3"]
    fleet.write(names, config={"lab-1": {"lab": {"fail": {"activation": True}}}})
    before = {n: fleet.current(n) for n in names}
    result, report = fleet.apply("switch", "--on", "lab-*", "--canary", "1", "--batch", "1")
    assert result.returncode == 1
    nodes = by_node(report)
    assert nodes["lab-1"]["result"] in ("failed", "rolled back")
    assert nodes["lab-2"]["result"] == nodes["lab-3"]["result"] == "not attempted"
    assert report["not_attempted"] == ["lab-2", "lab-3"]
    assert fleet.current("lab-2") == before["lab-2"] and fleet.current("lab-3") == before["lab-3"]


def test_max_failures_stops_new_nodes(fleet: Fleet) -> None:
    fleet.write(
        ["lab-2", "lab-3"],
        extra_nodes={
            "a-gone": {"host": "127.0.0.1", "port": fleet.lab.port("lab-4") + 1001},
            "b-gone": {"host": "127.0.0.1", "port": fleet.lab.port("lab-4") + 1002},
        },
    )
    result, report = fleet.apply("switch", "--parallel", "1", "--max-failures", "1")
    assert result.returncode == 1
    assert [n["result"] for n in report["nodes"]] == [
        "failed",
        "failed",
        "not attempted",
        "not attempted",
    ]


def test_reboot_waits_for_the_node_to_come_back(fleet: Fleet) -> None:
    fleet.write(["lab-4"])
    boots = fleet.lab.status("lab-4").boots
    assert boots is not None
    result, report = fleet.apply("switch", "--reboot", "--reboot-timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    node = by_node(report)["lab-4"]
    assert "reboot" in node["seconds"]
    assert fleet.lab.status("lab-4").boots == boots + 1
    assert fleet.current("lab-4") == node["store_path"]


def test_ctrl_c_finishes_the_node_in_flight_and_starts_no_other(fleet: Fleet) -> None:
    names = ["lab-1", "lab-2", "lab-3"]
    fleet.write(names)
    before = {n: fleet.current(n) for n in names}
    log = fleet.work / "apply.log"
    report_path = fleet.work / "interrupted.json"
    argv = [sys.executable, "-m", "nixherd", "-i", str(fleet.inventory), "apply"]
    argv += ["--parallel", "1", "--flake", fleet.flake, "--report", str(report_path)]
    proc = process.spawn(argv, cwd=str(fleet.work), log_path=str(log))
    try:
        deadline = time.monotonic() + 120
        while "lab-1 | activate" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report = jsonkit.document(report_path.read_text(), "apply")
    nodes = by_node(report)
    assert report["interrupted"] is True
    assert nodes["lab-1"]["result"] == "ok"  # the activation in flight finished
    assert fleet.current("lab-1") == nodes["lab-1"]["store_path"]
    for name in ("lab-2", "lab-3"):
        assert nodes[name]["result"] == "not attempted"
        assert fleet.current(name) == before[name]


def test_exec_reports_exit_codes_per_node(fleet: Fleet) -> None:
    fleet.write(["lab-1", "lab-2", "lab-3"])
    script = 'test "$(hostname)" = lab-2 && echo yes || { echo no; exit 3; }'
    result = fleet.nixherd("exec", "--", "sh", "-c", script)
    assert result.returncode == 1
    assert sorted(result.stdout.splitlines()) == ["lab-1 | no", "lab-2 | yes", "lab-3 | no"]
    assert "exited with 3" in result.stderr
    assert "2 of 3 nodes failed" in result.stderr


def test_ctrl_c_during_exec_lets_the_node_in_flight_finish_and_starts_no_other(
    fleet: Fleet,
) -> None:
    # The fleet runner's one Ctrl-C rule, for a command other than apply.
    fleet.write(["lab-1", "lab-2", "lab-3"])
    log = fleet.work / "exec.log"
    report_path = fleet.work / "exec.json"
    argv = [sys.executable, "-m", "nixherd", "-i", str(fleet.inventory), "exec", "--parallel"]
    argv += [
        "1",
        "--report",
        str(report_path),
        "--",
        "sh",
        "-c",
        "echo started; sleep 2; echo done",
    ]
    proc = process.spawn(argv, cwd=str(fleet.work), log_path=str(log))
    try:
        deadline = time.monotonic() + 60
        while "lab-1 | started" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "lab-1 | done" in log.read_text()  # the command in flight ran to its end
    report = jsonkit.document(report_path.read_text(), "exec")
    nodes = by_node(report)
    assert report["interrupted"] is True
    assert nodes["lab-1"]["result"] == "ok" and nodes["lab-1"]["exit_code"] == 0
    for name in ("lab-2", "lab-3"):
        assert nodes[name]["result"] == "not attempted"
        assert nodes[name]["detail"] == "interrupted"
    assert "lab-2 |" not in log.read_text() and "lab-3 |" not in log.read_text()


def test_status_tells_whether_nodes_match_the_flake(fleet: Fleet) -> None:
    fleet.write(["lab-1", "lab-2"])
    result, _ = fleet.apply("switch")
    assert result.returncode == 0, result.stdout
    fleet.write(["lab-1", "lab-2"])  # a new version: the nodes no longer match
    status = fleet.nixherd("status", "--json", check=True)
    rows = {row["node"]: row for row in jsonkit.document(status.stdout, "status")["nodes"]}
    assert rows["lab-1"]["reachable"] and rows["lab-1"]["matches"] is False
    assert rows["lab-1"]["generation"] >= 1 and rows["lab-1"]["generation_time"] > 0
    result, _ = fleet.apply("switch")
    assert result.returncode == 0
    status = fleet.nixherd("status", "--json")
    rows = {r["node"]: r for r in jsonkit.document(status.stdout, "status")["nodes"]}
    assert rows["lab-1"]["matches"] is True and rows["lab-2"]["matches"] is True


def _apply_confirm_on_a_terminal(fleet: Fleet, answer: str) -> tuple[int, str]:
    """`nixherd apply --confirm` on a real pseudo-terminal: its exit code and all it showed."""
    import os
    import pty
    import select
    import subprocess

    leader, follower = pty.openpty()
    argv = [sys.executable, "-m", "nixherd", "-i", str(fleet.inventory), "apply", "--confirm"]
    argv += ["--flake", fleet.flake]
    proc = subprocess.Popen(
        argv, stdin=follower, stdout=follower, stderr=follower, cwd=str(fleet.work)
    )
    os.close(follower)
    seen = b""
    answered = False
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed: nixherd has exited
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(leader, answer.encode() + b"\n")
                answered = True
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    assert answered, seen.decode(errors="replace")
    return code, seen.decode(errors="replace")


def test_confirm_shows_the_plan_and_a_no_touches_nothing(fleet: Fleet) -> None:
    fleet.write(["lab-1"])
    result, _ = fleet.apply("switch")
    assert result.returncode == 0, result.stdout
    before = fleet.current("lab-1")

    fleet.write(["lab-1"])  # a new version: the plan has a change to show
    target = fleet.nixherd("build", "--on", "lab-1", check=True).stdout.split()[-1]
    assert target != before
    code, shown = _apply_confirm_on_a_terminal(fleet, "n")
    assert code == 1, shown
    plan = shown[: shown.index("[y/N]")]
    assert "1 of 1 nodes change." in plan  # the diff came before the question
    assert "not confirmed: no node was touched" in shown
    assert fleet.current("lab-1") == before

    code, shown = _apply_confirm_on_a_terminal(fleet, "y")
    assert code == 0, shown
    assert fleet.current("lab-1") == target

"""Deployer-side safety on real lab hosts: host keys are verified whatever an ssh_config says
(a wrong key stops the deploy, an unknown one is accepted only where the inventory opts in), and
nothing of a killed `nixherd apply` (its `nix copy`, its ssh ControlMasters, its /tmp/nh-*
control directories) outlives it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rtoml
from safetykit import Fleet, HostPool, by_node, host_pool, make_fleet, out, wait_for

from nixherd.run import process

pytestmark = [pytest.mark.lab, pytest.mark.nix]

POOL_PORTS = 8


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostPool]:
    """This module's own lab, each test on hosts no other test touched; stopped by recorded pid."""
    yield from host_pool(tmp_path_factory, "deployer-safety-lab", POOL_PORTS)


# --- host keys ------------------------------------------------------------------------------------


def own_ssh_config(fleet: Fleet, known_hosts: Path, strict: str) -> Path:
    """An ssh config of the fleet's own: the lab's client key, `known_hosts`, and the
    StrictHostKeyChecking value given (what a careless ~/.ssh/config might say)."""
    config = fleet.dir / "ssh_config"
    config.write_text(
        "Host 127.0.0.1\n"
        f"  IdentityFile {fleet.lab.lab.identity}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known_hosts}\n"
        f"  StrictHostKeyChecking {strict}\n"
    )
    return config


def use_ssh_config(fleet: Fleet, config: Path, **node: Any) -> None:
    """Point the fleet's inventory at `config`; `node` adds fields to node alpha."""
    data = rtoml.load(fleet.inventory)
    data["defaults"]["ssh_config"] = str(config)
    data["nodes"]["alpha"].update(node)
    fleet.inventory.write_text(rtoml.dumps(data))


def real_key(fleet: Fleet, host: str) -> str:
    """The host's public key as the lab's known_hosts holds it (type and base64)."""
    port = fleet.lab.port(host)
    for line in Path(fleet.lab.lab.known_hosts).read_text().splitlines():
        if line.startswith(f"[127.0.0.1]:{port} "):
            return line.split(" ", 1)[1]
    raise AssertionError(f"no key of {host} in the lab's known_hosts")


def test_a_wrong_host_key_stops_the_deploy_whatever_the_ssh_config_says(
    hosts: HostPool, tmp_path: Path
) -> None:
    (host,) = hosts.take(1)
    fleet = make_fleet(tmp_path / "fleet", hosts.lab, {"alpha": host})
    fleet.write({"alpha": {"vars": {"version": "1"}}})
    before = fleet.current("alpha")
    # known_hosts gives the host a key of someone else (a man in the middle, as far as ssh knows),
    # and the ssh config says `StrictHostKeyChecking no`: plain ssh warns and goes on.
    impostor = tmp_path / "impostor"
    process.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)])
    wrong = Path(f"{impostor}.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{hosts.lab.port(host)} {' '.join(wrong)}\n")
    config = own_ssh_config(fleet, known_hosts, "no")
    use_ssh_config(fleet, config)
    plain = process.run(
        ["ssh", "-F", str(config), "-p", str(hosts.lab.port(host)), "root@127.0.0.1", "true"],
        check=False,
    )
    assert plain.ok and "IDENTIFICATION HAS CHANGED" in plain.stderr  # the hazard is real

    result, report = fleet.apply("switch")
    assert result.returncode == 1, out(result)
    node = by_node(report)["alpha"]
    assert node["result"] == "failed"
    assert "host key" in json.dumps(node["error"]).lower()
    assert fleet.current("alpha") == before  # nothing was copied or activated
    assert known_hosts.read_text().split()[1:] == wrong  # and the wrong key is not replaced


def test_an_unknown_host_is_accepted_only_where_the_inventory_opts_in(
    hosts: HostPool, tmp_path: Path
) -> None:
    (host,) = hosts.take(1)
    fleet = make_fleet(tmp_path / "fleet", hosts.lab, {"alpha": host})
    fleet.write({"alpha": {"vars": {"version": "1"}}})
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    # The config says accept-new: without the inventory's opt-in, nixherd stays strict.
    config = own_ssh_config(fleet, known_hosts, "accept-new")
    use_ssh_config(fleet, config)
    refused, report = fleet.apply("switch")
    assert refused.returncode == 1, out(refused)
    assert "host key" in json.dumps(by_node(report)["alpha"]["error"]).lower()
    assert known_hosts.read_text() == ""

    # The config says yes; the node opts in to accept-new: the key is recorded, the deploy works.
    config = own_ssh_config(fleet, known_hosts, "yes")
    use_ssh_config(fleet, config, host_key_policy="accept-new")
    result, _ = fleet.apply("switch")
    assert result.ok, out(result)
    now = fleet.current("alpha")
    assert now is not None and now.endswith("-alpha-1")
    recorded = {line.split(" ", 1)[1] for line in known_hosts.read_text().splitlines()}
    assert recorded == {real_key(fleet, host)}


# --- a killed deployer leaves nothing behind ------------------------------------------------------


def marked(marker: str) -> dict[int, list[str]]:
    """Every process whose environment holds `marker` (the run's own, however detached), with its
    command line: found by what the test put in the run's environment, never by name."""
    needle = marker.encode()
    found: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found[int(entry)] = argv.split("\0")
    return found


def control_dirs(processes: dict[int, list[str]]) -> set[str]:
    """The ssh control directories named on the run's command lines (`ControlPath=...`)."""
    return {
        os.path.dirname(word.removeprefix("ControlPath="))
        for argv in processes.values()
        for word in argv
        if word.startswith("ControlPath=/tmp/nh-")
    }


def masters(dirs: set[str]) -> dict[int, int | None]:
    """The ControlMasters listening in `dirs`, by pid (with their start times), as each says
    through its socket. A master daemonizes itself and its title overwrites its environment, so
    neither the run's process tree nor the marker finds it."""
    found: dict[int, int | None] = {}
    for directory in dirs:
        for entry in os.listdir(directory):
            socket = os.path.join(directory, entry)
            check = ["ssh", "-F", "/dev/null", "-S", socket, "-O", "check", "master"]
            answer = process.run(check, check=False, timeout=10)
            match = re.search(r"pid=(\d+)", answer.stderr)
            if match:
                pid = int(match.group(1))
                found[pid] = process.start_time(pid)
    return found


def living(pid: int) -> int | None:
    """The start time of `pid` if it runs: None if it is gone or a zombie (killed, and its
    parent, init once the deployer is gone, has not reaped it yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    return None if state == "Z" else process.start_time(pid)


def test_a_deployer_killed_mid_copy_leaves_no_process_and_no_control_dir(
    hosts: HostPool, tmp_path: Path
) -> None:
    (host,) = hosts.take(1)
    fleet = make_fleet(tmp_path / "fleet", hosts.lab, {"alpha": host})
    fleet.write({"alpha": {"vars": {"version": "1"}}})
    result, _ = fleet.apply("switch")
    assert result.ok, out(result)
    v1 = fleet.current("alpha")

    # A fresh closure big enough for the copy to take a while, built beforehand.
    fleet.write({"alpha": {"vars": {"version": "2", "payload": {"nodeMB": 600}}}})
    built = fleet.nixherd("build")
    assert built.ok, out(built)
    marker = f"NIXHERD_TEST_RUN={uuid.uuid4().hex}"
    name, value = marker.split("=", 1)
    deployer = process.spawn(
        fleet.argv("apply", "switch"),
        cwd=str(fleet.dir),
        env={name: value},
        log_path=str(fleet.dir / "apply.log"),
    )
    seen: dict[int, list[str]] = {}
    started: dict[int, int | None] = {}
    dirs: set[str] = set()
    try:

        def copying() -> bool:
            run = marked(marker)
            seen.update(run)
            return any(argv[:1] == ["nix"] and "copy" in argv for argv in run.values())

        wait_for(copying, timeout=120, what="the run's nix copy")
        seen.update(marked(marker))
        dirs = control_dirs(seen)
        assert dirs and all(os.path.isdir(d) for d in dirs)
        started = {pid: process.start_time(pid) for pid in seen if pid != deployer.pid}
        found = masters(dirs)
        assert found, "no ControlMaster of the run"
        started.update(found)
        started = {pid: born for pid, born in started.items() if born is not None}
        assert deployer.poll() is None, "the copy was over before the kill"
        deployer.send_signal(signal.SIGKILL)
        deployer.wait()

        def ours_alive() -> list[int]:
            return [p for p, born in started.items() if living(p) == born]

        def clean() -> bool:
            return not marked(marker) and not ours_alive() and not any(map(os.path.isdir, dirs))

        try:
            wait_for(clean, timeout=20, what="the killed run's processes and directories to go")
        except AssertionError:
            left = {p: marked(marker).get(p) for p in ours_alive()}
            raise AssertionError(
                f"left behind: processes {left}, dirs {[d for d in dirs if os.path.isdir(d)]}"
            ) from None
    finally:
        if deployer.poll() is None:
            deployer.kill()
            deployer.wait()
        # The test's own leftovers (before the fix): by recorded pid and start time.
        leftovers = {**{pid: process.start_time(pid) for pid in marked(marker)}, **started}
        for pid, born in leftovers.items():
            if born is not None and process.start_time(pid) == born:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)
    assert fleet.current("alpha") == v1  # the node never got past the copy
    assert not hosts.lab.ssh(host, "test", "-e", "/run/nixherd/lock", check=False).ok

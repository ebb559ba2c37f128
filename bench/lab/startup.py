"""Lab start-up: how long `nixherd lab up -n N` takes until every host is up, for several N.

    sudo .venv/bin/python bench/lab/startup.py            # N = 1, 20, 100
    sudo .venv/bin/python bench/lab/startup.py --counts 1 20

Each N gets a lab directory of its own (fresh keys, fresh /etc copies), so each run is a first
boot. "Up" is what `lab up` returns on: every host's sshd answers; then the bench also waits until
every host's systemd says `running` (`systemctl is-system-running --wait`, over ssh), which is the
figure reported. The baseline in the same run is the smallest N (one host by default): the ratio is
N hosts' time over its time (1.0: N hosts start as fast as one; N: no better than one by one).
Memory is the hosts' resident set (sum over every process of their PID namespaces) once running.
Goals (issue 14): 20 hosts under 10 s, 100 under 60 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from nixherd.lab.hosts import Lab
from nixherd.lab.proc import namespace_pids


def wait_running(lab: Lab, name: str) -> str:
    result = subprocess.run(
        ["ssh", "-F", lab.ssh_config, name, "systemctl", "is-system-running", "--wait"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result.stdout.strip()


def rss_mib(lab: Lab) -> float:
    total = 0
    for host in lab.hosts():
        pidns = lab.state(host).get("pidns")
        for pid in namespace_pids(pidns) if pidns else []:
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except OSError:
                pass
    return total / 2**20


def one(count: int, base_port: int) -> tuple[float, float, float, float]:
    with tempfile.TemporaryDirectory(prefix="nh-bench-lab-") as directory:
        lab = Lab(directory)
        begun = time.monotonic()
        lab.up(count, base_port=base_port, timeout=300)
        sshd = time.monotonic() - begun
        names = [f"lab-{i}" for i in range(1, count + 1)]
        with ThreadPoolExecutor(max_workers=16) as pool:
            states = list(pool.map(lambda n: wait_running(lab, n), names))
        running = time.monotonic() - begun
        bad = [f"{n}: {s}" for n, s in zip(names, states, strict=True) if s != "running"]
        memory = rss_mib(lab)
        begun = time.monotonic()
        lab.down()
        down = time.monotonic() - begun
        if bad:
            sys.exit("not running: " + ", ".join(bad[:5]))
        return sshd, running, memory, down


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 20, 100])
    parser.add_argument("--base-port", type=int, default=24000)
    args = parser.parse_args()
    results = {n: one(n, args.base_port) for n in args.counts}
    baseline = results[min(results)][1]
    print(
        f"{'hosts':>5}  {'sshd up':>8}  {'running':>8}  {'per host':>8}  {'ratio':>6}  "
        f"{'RSS MiB':>8}  {'down':>6}"
    )
    for n, (sshd, running, memory, down) in results.items():
        ratio = running / baseline
        print(
            f"{n:>5}  {sshd:>7.2f}s  {running:>7.2f}s  {running / n:>7.3f}s  {ratio:>6.2f}  "
            f"{memory:>8.1f}  {down:>5.2f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

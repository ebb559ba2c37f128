"""Deploy benchmark on real lab hosts (run as root from the repository root).

    .venv/bin/python bench/deploy/run.py [--hosts 20] [--exec-hosts 50] [--mem-hosts 100]

Measures, with fresh closures for every deploy (a shared blob plus NODE_MB per node, through the
lab's payload knob; the version changes before each run so every node gets a new system):

1. `nixherd apply switch --parallel 0` on HOSTS hosts, next to (a) baseline.sh with `xargs -P
   HOSTS` (one nix build, then `nix copy` + ssh switch per node) and (b) the same pipeline one
   host after another (`xargs -P 1`). Targets: within 1.15x of (a), at least 5x faster than (b).
2. A no-op redeploy of those hosts (nothing changed). Target: under 2 s.
3. `nixherd exec -- true` on EXEC_HOSTS hosts next to `ansible all -m raw -a true -f EXEC_HOSTS`
   over the same ssh_config. Target: faster.
4. The deployer's peak memory (max RSS of the nixherd process) deploying to MEM_HOSTS hosts.

Lab hosts live on 127.0.0.1:BASE_PORT.. in DIR/lab (outside the repository: a lab directory
holds sockets and 100 stores) and are stopped at the end (by pid, `lab down`) unless
--keep-lab. Results go to bench/out/deploy-results.json and are printed with their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import rtoml

from nixherd.lab.hosts import Lab
from nixherd.run import process

REPO = Path(__file__).resolve().parents[2]


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores, /proc/stat)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    # user nice system [idle iowait] irq softirq steal
    ticks = sum(int(x) for x in fields[1:4] + fields[6:9])
    return ticks / os.sysconf("SC_CLK_TCK")


HERE = Path(__file__).resolve().parent
ROLE = """{ node, lib, ... }: {
  lab.version = node.vars.version;
  lab.payload = {
    sharedMB = node.vars.shared_mb;
    nodeMB = node.vars.node_mb;
    seed = "${node.name}-${node.vars.version}";
  };
  # A switch that waits for a service to come up, as NixOS switches wait for their units.
  lab.service = lib.mkIf (node.vars.switch_wait > 0) {
    port = node.vars.http_port;
    command = "sleep ${toString node.vars.switch_wait}; "
      + "exec python3 -m http.server $PORT --bind 127.0.0.1";
  };
}
"""
# The deployer's own peak RSS, printed by the process itself when it ends.
MEASURE_RSS = (
    "import resource, runpy, sys\n"
    "sys.argv = ['nixherd', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('nixherd', run_name='__main__')\n"
    "finally:\n"
    "    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "    sys.stderr.write(f'@maxrss_kib={kib}\\n')\n"
)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(args.dir).resolve()
        self.lab = Lab(self.dir / "lab")
        self.fleet = self.dir / "fleet"
        self.env = {"NIX_CONFIG": "substituters ="}
        self.results: dict[str, Any] = {}
        self.counter = 0
        # label -> CPU seconds the whole machine spent (deployer, lab sshd and stores) per run
        self.cpu: dict[str, list[float]] = {}

    # --- setup ---

    def up(self, count: int) -> None:
        started = time.monotonic()
        self.lab.up(count, base_port=self.args.base_port, timeout=120)
        print(f"lab: {count} hosts up in {time.monotonic() - started:.1f} s", flush=True)

    def write_fleet(
        self, count: int, *, version: str, node_mb: int, shared_mb: int, switch_wait: int
    ) -> list[str]:
        (self.fleet / "nixherd").mkdir(parents=True, exist_ok=True)
        for name in ("default.nix", "lib.nix", "lab.nix", "modules.nix"):
            shutil.copy(REPO / "nix" / name, self.fleet / "nixherd" / name)
        # lab.nix reads its units, activation and switch programs from nix/lab/.
        shutil.copytree(REPO / "nix" / "lab", self.fleet / "nixherd" / "lab", dirs_exist_ok=True)
        (self.fleet / "flake.nix").write_text(
            "{ outputs = { self }: let nh = import ./nixherd; in nh.mkFleet {\n"
            "  inventory = ./inventory.toml; root = ./.; inherit (nh.lab) mkSystem; }; }\n"
        )
        (self.fleet / "app.nix").write_text(ROLE)
        names = [f"lab-{i}" for i in range(1, count + 1)]
        nodes = {
            name: {
                "role": "app",
                "host": "127.0.0.1",
                "port": self.args.base_port + i,
                "vars": {"http_port": self.args.service_base_port + i},
            }
            for i, name in enumerate(names)
        }
        data = {
            "defaults": {
                "ssh_config": self.lab.ssh_config,
                "vars": {
                    "version": version,
                    "node_mb": node_mb,
                    "shared_mb": shared_mb,
                    "switch_wait": switch_wait,
                },
            },
            "roles": {"app": {"modules": ["app.nix"]}},
            "nodes": nodes,
        }
        (self.fleet / "inventory.toml").write_text(rtoml.dumps(data))
        return names

    def fresh(
        self, count: int, prefix: str, node_mb: int | None = None, switch_wait: int = 0
    ) -> list[str]:
        self.counter += 1
        return self.write_fleet(
            count,
            version=f"{prefix}{self.counter}-{time.time_ns()}",
            node_mb=self.args.node_mb if node_mb is None else node_mb,
            shared_mb=self.args.shared_mb,
            switch_wait=switch_wait,
        )

    # --- commands ---

    def nixherd(self, *args: str, measure_rss: bool = False) -> process.Result:
        head = (
            [sys.executable, "-c", MEASURE_RSS]
            if measure_rss
            else [sys.executable, "-m", "nixherd"]
        )
        argv = [*head, "-i", str(self.fleet / "inventory.toml"), *args]
        if args[0] in ("apply", "build"):
            argv += ["--flake", f"path:{self.fleet}", "--log-dir", str(self.dir / "logs")]
        return process.run(argv, cwd=str(self.fleet), env=self.env, timeout=1800)

    def baseline(self, names: Sequence[str], parallel: int) -> process.Result:
        argv = ["sh", str(HERE / "baseline.sh"), f"path:{self.fleet}", self.lab.ssh_config]
        return process.run([*argv, str(parallel), *names], env=self.env, timeout=3600)

    def ansible(self, names: Sequence[str]) -> process.Result:
        ansible = str(Path(sys.executable).with_name("ansible"))
        env = {
            **self.env,
            "ANSIBLE_SSH_ARGS": f"-F {self.lab.ssh_config}",
            "ANSIBLE_HOME": str(self.dir / "ansible"),
            "ANSIBLE_LOCALHOST_WARNING": "false",
        }
        inventory = ",".join(names) + ","
        argv = [ansible, "all", "-i", inventory, "-m", "raw", "-a", "true", "-f", str(len(names))]
        return process.run(argv, env=env, timeout=600)

    # --- measurements ---

    def timed(self, label: str, step: Callable[[], object]) -> float:
        busy = busy_seconds()
        started = time.monotonic()
        step()
        seconds = time.monotonic() - started
        cpu = busy_seconds() - busy
        self.cpu.setdefault(label, []).append(cpu)
        print(f"  {label}: {seconds:.2f} s (machine CPU {cpu:.2f} s)", flush=True)
        return seconds

    def deploys(self, switch_wait: int) -> None:
        n, runs = self.args.hosts, self.args.runs
        shared, per_node = self.args.shared_mb, self.args.node_mb
        wait = f", each switch waits {switch_wait} s for its service" if switch_wait else ""
        print(f"deploy to {n} hosts ({shared} MB shared + {per_node} MB per node{wait})")

        def fresh(prefix: str) -> list[str]:
            return self.fresh(n, prefix, switch_wait=switch_wait)

        # Warm-up: the shared blob reaches every host once, as it would in a real fleet.
        fresh("warm")
        self.timed("warm-up (nixherd)", lambda: self.nixherd("apply", "--parallel", "0"))
        nixherd_times, no_rollback_times, parallel_times = [], [], []
        for _ in range(runs):
            fresh("n")
            nixherd_times.append(
                self.timed("nixherd apply", lambda: self.nixherd("apply", "--parallel", "0"))
            )
            fresh("r")
            no_rollback_times.append(
                self.timed(
                    "nixherd apply --no-rollback",
                    lambda: self.nixherd("apply", "--parallel", "0", "--no-rollback"),
                )
            )
            names = fresh("a")

            def parallel(names: list[str] = names) -> object:
                return self.baseline(names, n)

            parallel_times.append(self.timed(f"(a) xargs -P {n}", parallel))
        names = fresh("b")
        sequential = self.timed("(b) xargs -P 1", lambda: self.baseline(names, 1))
        noop = [
            self.timed("no-op redeploy", lambda: self.nixherd("apply", "--parallel", "0"))
            for _ in range(runs)
        ]
        report = self.dir / "noop.json"
        self.nixherd("apply", "--parallel", "0", "--report", str(report))
        counts = json.loads(report.read_text())["data"]["counts"]
        assert counts == {"up to date": n}, counts
        nixherd_median = statistics.median(nixherd_times)
        parallel_median = statistics.median(parallel_times)
        cores = os.cpu_count() or 1
        cpu = {label: statistics.median(self.cpu.pop(label)) for label in list(self.cpu)}
        # Every deploy of this work keeps the machine's cores busy for (a)'s CPU time at least.
        floor = cpu[f"(a) xargs -P {n}"] / cores
        self.results[f"deploy-wait-{switch_wait}"] = {
            "hosts": n,
            "shared_mb": shared,
            "node_mb": per_node,
            "switch_wait_s": switch_wait,
            "nixherd_s": nixherd_times,
            "nixherd_no_rollback_s": no_rollback_times,
            "xargs_parallel_s": parallel_times,
            "xargs_sequential_s": sequential,
            "ratio_vs_parallel": nixherd_median / parallel_median,
            "ratio_no_rollback_vs_parallel": statistics.median(no_rollback_times) / parallel_median,
            "speedup_vs_sequential": sequential / nixherd_median,
            "noop_s": noop,
            "machine_cpu_s": cpu,
            "cores": cores,
            "cpu_floor_s": floor,
            "best_possible_speedup_vs_sequential": sequential / floor,
        }

    def exec_vs_ansible(self) -> None:
        n, runs = self.args.exec_hosts, self.args.runs
        print(f"exec -- true on {n} hosts")
        names = self.fresh(n, "e", node_mb=0)
        ours = [
            self.timed(
                "nixherd exec", lambda: self.nixherd("exec", "--parallel", "0", "--", "true")
            )
            for _ in range(runs)
        ]
        theirs = [self.timed("ansible raw", lambda: self.ansible(names)) for _ in range(runs)]
        self.results["exec"] = {
            "hosts": n,
            "nixherd_s": ours,
            "ansible_s": theirs,
            "speedup": statistics.median(theirs) / statistics.median(ours),
        }

    def memory(self) -> None:
        n = self.args.mem_hosts
        print(f"deployer memory, deploy to {n} hosts (1 MB per node)")
        self.fresh(n, "m", node_mb=1)
        started = time.monotonic()
        result = self.nixherd("apply", "--parallel", "0", measure_rss=True)
        seconds = time.monotonic() - started
        kib = int(result.stderr.rsplit("@maxrss_kib=", 1)[1].split()[0])
        print(f"  nixherd apply: {seconds:.1f} s, max RSS {kib / 1024:.1f} MiB", flush=True)
        noop_started = time.monotonic()
        self.nixherd("apply", "--parallel", "0")
        noop = time.monotonic() - noop_started
        print(f"  no-op redeploy of {n}: {noop:.2f} s", flush=True)
        self.results["memory"] = {
            "hosts": n,
            "seconds": seconds,
            "max_rss_mib": kib / 1024,
            "noop_s": noop,
        }

    def summary(self) -> None:
        med = statistics.median
        print("\nsummary")
        for key, deploy in self.results.items():
            if not key.startswith("deploy"):
                continue
            wait = deploy["switch_wait_s"]
            print(
                f"  deploy {deploy['hosts']} hosts (switch wait {wait} s): "
                f"nixherd {med(deploy['nixherd_s']):.2f} s "
                f"(--no-rollback {med(deploy['nixherd_no_rollback_s']):.2f} s), "
                f"(a) xargs -P {med(deploy['xargs_parallel_s']):.2f} s, "
                f"(b) one by one {deploy['xargs_sequential_s']:.2f} s"
            )
            print(
                f"    nixherd/(a) = {deploy['ratio_vs_parallel']:.2f}, with --no-rollback "
                f"{deploy['ratio_no_rollback_vs_parallel']:.2f} (target <= 1.15); "
                f"(b)/nixherd = {deploy['speedup_vs_sequential']:.1f}x (target >= 5); "
                f"no-op redeploy {med(deploy['noop_s']):.2f} s (target < 2)"
            )
            cpu = deploy["machine_cpu_s"]
            cpu_a = cpu[f"(a) xargs -P {deploy['hosts']}"]
            print(
                f"    machine CPU per run: nixherd {cpu['nixherd apply']:.2f} s "
                f"(--no-rollback {cpu['nixherd apply --no-rollback']:.2f} s), "
                f"(a) {cpu_a:.2f} s; on {deploy['cores']} cores "
                f"(a)'s work takes at least {deploy['cpu_floor_s']:.2f} s, so no tool can be more "
                f"than {deploy['best_possible_speedup_vs_sequential']:.1f}x faster than (b) here"
            )
        exec_ = self.results.get("exec")
        if exec_:
            ours, theirs = (med(exec_[k]) for k in ("nixherd_s", "ansible_s"))
            print(
                f"  exec on {exec_['hosts']}: nixherd {ours:.2f} s, ansible {theirs:.2f} s: "
                f"{exec_['speedup']:.1f}x faster"
            )
        mem = self.results.get("memory")
        if mem:
            print(
                f"  deployer max RSS deploying to {mem['hosts']} hosts: "
                f"{mem['max_rss_mib']:.1f} MiB "
                f"({mem['seconds']:.1f} s; no-op {mem['noop_s']:.2f} s)"
            )
        out = REPO / "bench" / "out" / "deploy-results.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.results, indent=2) + "\n")
        print(f"  results: {out}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--exec-hosts", type=int, default=50)
    parser.add_argument("--mem-hosts", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shared-mb", type=int, default=20)
    parser.add_argument("--node-mb", type=int, default=5)
    parser.add_argument("--base-port", type=int, default=3000)
    parser.add_argument("--service-base-port", type=int, default=13000)
    parser.add_argument(
        "--switch-wait",
        type=int,
        action="append",
        help="seconds each switch waits for its service to start (repeatable; default 0 and 3)",
    )
    parser.add_argument("--dir", default="/tmp/nixherd-bench-deploy")
    parser.add_argument("--keep-lab", action="store_true")
    parser.add_argument("--only", choices=("deploy", "exec", "memory"), action="append")
    args = parser.parse_args(argv)
    args.switch_wait = args.switch_wait or [0, 3]
    if os.geteuid() != 0:
        print("run as root: lab hosts need it", file=sys.stderr)
        return 2
    bench = Bench(args)
    wanted = args.only or ["deploy", "exec", "memory"]
    try:
        if "deploy" in wanted:
            bench.up(args.hosts)
            for wait in args.switch_wait:
                bench.deploys(wait)
        if "exec" in wanted:
            bench.up(args.exec_hosts)
            bench.exec_vs_ansible()
        if "memory" in wanted:
            bench.up(args.mem_hosts)
            bench.memory()
        bench.summary()
    finally:
        if not args.keep_lab:
            bench.lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())

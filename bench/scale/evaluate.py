"""Bounded evaluation: N nodes whose evaluation allocates M MiB each, evaluated in one nix process
against worker processes of at most K nodes (`--eval-workers`, `--eval-node-limit`).

    .venv/bin/python bench/scale/evaluate.py                 # 100 nodes x 50 MiB, K = 10
    .venv/bin/python bench/scale/evaluate.py --nodes 50 100 --megabytes 50 --node-limit 10

The fleet is a `path:` flake over the lab's mkSystem (nix/lab.nix), each node with
`lab.evalCost = { megabytes = M; seconds = S; }`: a string of M MiB that the configuration keeps
alive, as a NixOS evaluation keeps its values, and S seconds of CPU. Nothing is built: the figures
are the evaluation's. For every node count (default 50 and 100), both ways:

- one process: `EvalLimits(workers=1, node_limit=0)`, what nixherd did before (and Colmena with
  an unlimited --eval-node-limit);
- workers: `EvalLimits(workers=W, node_limit=K)` (W: the cores by default).

Measured: the wall time; the peak memory of the largest evaluation process (its wait4 rusage,
exact, from nixherd's report); and the peak of all evaluation processes at once (the sum of the
resident sets of this process's `nix` children, sampled every 10 ms). Per node: the slope of the
one-process peak between the two node counts. Goals (issue 18): a worker's peak does not grow
with the node count and stays at most 2 x K x per-node (so all W workers at once at most
W x 2 x K x per-node, whatever the node count), and the workers are no slower than one process.
Exit 1 when a goal is missed. JSON in bench/out/scale-evaluate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from nixherd.fleet import evaluate as fleet

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20

FLAKE = """{
  outputs = { self }:
    (import ./nixherd/lib.nix).mkFleet {
      inventory = ./inventory.toml;
      root = ./.;
      mkSystem = (import ./nixherd/lab.nix).mkSystem;
    };
}
"""


def write_fleet(root: Path, nodes: int, megabytes: int, seconds: float) -> str:
    (root / "nixherd").mkdir(parents=True)
    for name in ("lib.nix", "lab.nix", "modules.nix"):
        shutil.copy(REPO / "nix" / name, root / "nixherd" / name)
    shutil.copytree(REPO / "nix" / "lab", root / "nixherd" / "lab")  # lab.nix reads it
    (root / "flake.nix").write_text(FLAKE)
    cost = f"{{ megabytes = {megabytes}, seconds = {seconds} }}"
    lines = [f"[defaults]\nconfig = {{ lab = {{ evalCost = {cost} }} }}\n"]
    lines += [f"[nodes.node-{i:04}]\n" for i in range(nodes)]
    (root / "inventory.toml").write_text("".join(lines))
    return f"path:{root}"


class ChildMemory:
    """The highest sum of the resident sets of this process's `nix` children, sampled."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ChildMemory:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = str(os.getpid())
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.01):
            total = 0
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        stat = f.read()
                    name = stat[stat.index("(") + 1 : stat.rindex(")")]
                    ppid = stat[stat.rindex(")") + 2 :].split()[1]
                    if ppid != me or name != "nix":
                        continue
                    with open(f"/proc/{pid}/statm") as f:
                        total += int(f.read().split()[1]) * page
                except (OSError, ValueError, IndexError):
                    continue
            self.peak = max(self.peak, total)


def measure(ref: str, names: list[str], limits: fleet.EvalLimits) -> dict[str, Any]:
    with ChildMemory() as sampled:
        started = time.monotonic()
        results, stats = fleet.eval_fleet(ref, names, limits=limits)
        seconds = time.monotonic() - started
    failed = [r for r in results.values() if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} nodes failed to evaluate: {failed[0].error}")
    return {
        "seconds": round(seconds, 2),
        "processes": stats.processes,
        "workers": stats.workers,
        "node_limit": stats.node_limit,
        "peak_process_mib": round((stats.peak_rss or 0) / MIB, 1),
        "peak_all_mib": round(sampled.peak / MIB, 1),
        "load": round(os.getloadavg()[0], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=0.0, help="CPU per node (lab.evalCost)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--node-limit", type=int, default=10, help="K")
    args = parser.parse_args()
    counts = sorted(args.nodes)
    if counts[0] < args.workers * args.node_limit:
        # Fewer nodes than W x K: the chunks are smaller than K, and the figures compare nothing.
        parser.error(
            f"--nodes: at least --workers x --node-limit ({args.workers * args.node_limit})"
        )
    runs: dict[int, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="nh-bench-eval-") as tmp:
        for count in counts:
            ref = write_fleet(Path(tmp) / f"fleet-{count}", count, args.megabytes, args.seconds)
            names = [f"node-{i:04}" for i in range(count)]
            fleet.eval_nodes(ref, names[:1], limits=fleet.EvalLimits(1, 0))  # flake into store
            runs[count] = {}
            ways = {
                "one process": fleet.EvalLimits(workers=1, node_limit=0),
                "workers": fleet.EvalLimits(workers=args.workers, node_limit=args.node_limit),
            }
            for way, limits in ways.items():
                runs[count][way] = got = measure(ref, names, limits)
                print(f"{count:5} nodes  {way:12} {json.dumps(got)}", flush=True)
    low, high = counts[0], counts[-1]
    one_low, one_high = runs[low]["one process"], runs[high]["one process"]
    if high > low:
        slope = (one_high["peak_process_mib"] - one_low["peak_process_mib"]) / (high - low)
    else:
        slope = one_high["peak_process_mib"] / high
    bound = 2 * args.node_limit * slope
    total = args.workers * bound
    workers_low, workers_high = runs[low]["workers"], runs[high]["workers"]
    goals = {
        f"a worker's peak <= 2 x K x per-node ({bound:.0f} MiB) at every node count": all(
            runs[c]["workers"]["peak_process_mib"] <= bound for c in counts
        ),
        f"a worker's peak independent of the node count ({low} -> {high} nodes, within 10%)": (
            workers_high["peak_process_mib"] <= 1.1 * workers_low["peak_process_mib"]
        ),
        f"all workers at once <= W x 2 x K x per-node ({total:.0f} MiB) at every node count": all(
            runs[c]["workers"]["peak_all_mib"] <= total for c in counts
        ),
        "workers no slower than one process": all(
            runs[c]["workers"]["seconds"] <= runs[c]["one process"]["seconds"] for c in counts
        ),
    }
    print(f"per node: {slope:.1f} MiB (slope of the one-process peak)")
    for goal, met in goals.items():
        print(f"{'met   ' if met else 'MISSED'} {goal}")
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    document = {
        "megabytes": args.megabytes,
        "seconds": args.seconds,
        "per_node_mib": round(slope, 1),
        "runs": {str(c): r for c, r in runs.items()},
        "goals": goals,
    }
    (out / "scale-evaluate.json").write_text(json.dumps(document, indent=1) + "\n")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

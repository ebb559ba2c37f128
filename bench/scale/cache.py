"""Delivery through a binary cache against direct copies, on real lab hosts (run as root from the
repository root).

    .venv/bin/python bench/scale/cache.py [--hosts 50] [--shared-mb 20] [--node-mb 1] [--runs 1]

Every run deploys fresh closures to HOSTS hosts: a shared blob no host has yet (its size changes
with every run, and the lab's shared blob is keyed by its size) plus NODE_MB of its own per node.
The same fleet is deployed twice per run, alternately: `direct` (nix copy from the deployer to
every node) and `cache` (the deployer signs and pushes once to a `file://` cache that the lab's
nginx serves on 127.0.0.1, every node substitutes from it). Measured for each:

- the bytes the deployer sent: over ssh, the bytes acknowledged on every TCP connection from
  this machine to a lab host's sshd port (sampled with `ss -ti` every 50 ms; a connection's last
  sample counts), plus, with the cache, the bytes written into the cache directory (the upload a
  remote cache would receive);
- one copy of the union of the closures: the NAR sizes of every path of the deployed systems'
  closures (`nix path-info -r`), counted once;
- the wall time of `nixherd apply switch --parallel 0`.

Goal: via the cache, the deployer sends at most 1.2x the union, whatever the host count, and the
run is no slower than direct. Results: bench/out/scale-cache.json, printed with their ratios.
Lab hosts are stopped at the end (by pid, `lab down`) unless --keep-lab.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import rtoml

from nixherd.lab.cacheserver import CacheServer
from nixherd.lab.hosts import Lab
from nixherd.run import nix, process

REPO = Path(__file__).resolve().parents[2]
ROLE = """{ node, ... }: {
  lab.version = node.vars.version;
  lab.payload = { sharedMB = node.vars.shared_mb; nodeMB = node.vars.node_mb;
    seed = "${node.name}-${node.vars.version}"; };
}
"""
_ACKED = re.compile(r"bytes_acked:(\d+)")


class SshBytes:
    """Bytes acknowledged on TCP connections to ports [low, high] (the lab's sshd ports), summed
    over every connection seen while running: `ss -tin` sampled every 50 ms."""

    def __init__(self, low: int, high: int) -> None:
        self.filter = f"( dport >= :{low} and dport <= :{high} )"
        self.seen: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        result = process.run(["ss", "-tinH", "state", "established", self.filter], check=False)
        lines = result.stdout.splitlines()
        key = ""
        for line in lines:
            if not line.startswith((" ", "\t")):
                key = " ".join(line.split()[2:4])  # local and peer address: the connection
                continue
            acked = _ACKED.search(line)
            if acked and key:
                self.seen[key] = max(self.seen.get(key, 0), int(acked.group(1)))

    def _loop(self) -> None:
        while not self.stop.is_set():
            self._sample()
            self.stop.wait(0.05)

    def __enter__(self) -> SshBytes:
        self._sample()
        before = dict(self.seen)
        self.thread.start()
        self.before = before
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def total(self) -> int:
        return sum(v - self.before.get(k, 0) for k, v in self.seen.items())


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(args.dir).resolve()
        self.lab = Lab(self.dir / "lab")
        self.fleet = self.dir / "fleet"
        self.cache_dir = self.dir / "cache"
        self.env = {"NIX_CONFIG": "substituters ="}
        self.names = [f"lab-{i}" for i in range(1, args.hosts + 1)]
        self.runs: list[dict[str, Any]] = []

    def keypair(self) -> tuple[Path, str]:
        secret = self.dir / "cache-key.sec"
        made = process.run(nix.nix_argv("key", "generate-secret", "--key-name", "bench-cache-1"))
        secret.write_text(made.stdout)
        os.chmod(secret, 0o600)
        public = process.run(nix.nix_argv("key", "convert-secret-to-public"), input=made.stdout)
        return secret, public.stdout.strip()

    def write(self, version: str, shared_mb: int, cache: dict[str, str] | None) -> None:
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
        defaults: dict[str, Any] = {
            "ssh_config": self.lab.ssh_config,
            "vars": {"version": version, "shared_mb": shared_mb, "node_mb": self.args.node_mb},
        }
        if cache is not None:
            defaults["cache"] = cache
        nodes = {
            name: {"role": "app", "host": "127.0.0.1", "port": self.args.base_port + i}
            for i, name in enumerate(self.names)
        }
        data = {"defaults": defaults, "roles": {"app": {"modules": ["app.nix"]}}, "nodes": nodes}
        (self.fleet / "inventory.toml").write_text(rtoml.dumps(data))

    def apply(self, label: str) -> tuple[float, dict[str, Any]]:
        report = self.dir / f"report-{label}.json"
        argv = [
            str(REPO / ".venv" / "bin" / "nixherd"),
            "-i",
            str(self.fleet / "inventory.toml"),
            "apply",
            "switch",
            "--parallel",
            "0",
            "--flake",
            f"path:{self.fleet}",
            "--report",
            str(report),
            "--log-dir",
            str(self.dir / "logs"),
        ]
        started = time.monotonic()
        result = process.run(argv, cwd=str(self.dir), env=self.env, timeout=3600, check=False)
        seconds = time.monotonic() - started
        data: dict[str, Any] = json.loads(report.read_text())["data"]
        if result.returncode != 0:
            raise SystemExit(f"{label}: apply failed:\n{result.stderr[-3000:]}")
        return seconds, data

    def union_bytes(self, report: dict[str, Any]) -> int:
        paths = [n["store_path"] for n in report["nodes"]]
        return sum(nix.closure_sizes(paths, timeout=600).values())

    def run_mode(self, label: str, index: int, cache: dict[str, str] | None) -> dict[str, Any]:
        # A shared blob no host has: its size is new for every deploy.
        shared = self.args.shared_mb + 2 * index + (1 if cache else 0)
        self.write(f"{label}-{index}-{time.time_ns()}", shared, cache)
        cache_before = tree_bytes(self.cache_dir) if self.cache_dir.exists() else 0
        with SshBytes(self.args.base_port, self.args.base_port + len(self.names) - 1) as ssh:
            seconds, report = self.apply(f"{label}-{index}")
        pushed = (tree_bytes(self.cache_dir) - cache_before) if cache else 0
        union = self.union_bytes(report)
        ways: dict[str, int] = {}
        for node in report["nodes"]:
            way = (node.get("delivery") or {}).get("way", "none")
            ways[way] = ways.get(way, 0) + 1
        sent = ssh.total + pushed
        row = {
            "mode": label,
            "run": index,
            "hosts": len(self.names),
            "shared_mb": shared,
            "node_mb": self.args.node_mb,
            "seconds": round(seconds, 2),
            "ssh_bytes": ssh.total,
            "pushed_bytes": pushed,
            "sent_bytes": sent,
            "union_bytes": union,
            "sent_over_union": round(sent / union, 3),
            "ways": ways,
            "push_seconds": report["run_seconds"].get("push"),
        }
        print(
            f"  {label}: {seconds:.2f} s, sent {sent / 1e6:.1f} MB (ssh {ssh.total / 1e6:.1f} MB"
            f" + cache {pushed / 1e6:.1f} MB), union {union / 1e6:.1f} MB: "
            f"{sent / union:.2f}x the union; ways {ways}",
            flush=True,
        )
        return row

    def main(self) -> None:
        args = self.args
        self.dir.mkdir(parents=True, exist_ok=True)
        secret, public = self.keypair()
        started = time.monotonic()
        self.lab.up(args.hosts, base_port=args.base_port, timeout=300)
        print(f"lab: {args.hosts} hosts up in {time.monotonic() - started:.1f} s", flush=True)
        server = CacheServer(self.cache_dir, self.dir / "nginx", args.cache_port)
        server.start()
        cache = {
            "push": f"file://{self.cache_dir}?compression=none",
            "url": server.url,
            "public_key": public,
            "secret_key_file": str(secret),
        }
        try:
            # Warm-up: the lab system's common paths reach every host once.
            self.write("warm", 1, None)
            self.apply("warm")
            for index in range(args.runs):
                print(f"run {index + 1}: {args.hosts} hosts", flush=True)
                self.runs.append(self.run_mode("direct", index, None))
                self.runs.append(self.run_mode("cache", index, cache))
        finally:
            server.stop()
            if not args.keep_lab:
                self.lab.down()
        out = REPO / "bench" / "out"
        out.mkdir(exist_ok=True)
        (out / "scale-cache.json").write_text(json.dumps(self.runs, indent=2) + "\n")
        self.summary()

    def summary(self) -> None:
        direct = [r for r in self.runs if r["mode"] == "direct"]
        cached = [r for r in self.runs if r["mode"] == "cache"]
        for d, c in zip(direct, cached, strict=True):
            print(
                f"hosts {d['hosts']}: direct {d['seconds']} s, {d['sent_over_union']}x the union;"
                f" cache {c['seconds']} s, {c['sent_over_union']}x the union; bytes "
                f"{d['sent_bytes'] / c['sent_bytes']:.1f}x fewer, time "
                f"{c['seconds'] / d['seconds']:.2f}x of direct"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--shared-mb", type=int, default=20)
    parser.add_argument("--node-mb", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--dir", default="/tmp/nixherd-bench-scale")
    parser.add_argument("--base-port", type=int, default=46100)
    parser.add_argument("--cache-port", type=int, default=46090)
    parser.add_argument("--keep-lab", action="store_true")
    Bench(parser.parse_args()).main()


if __name__ == "__main__":
    main()

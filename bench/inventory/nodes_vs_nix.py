"""Benchmark: `nixherd nodes --on @TAG --json` on a large inventory, as a whole process, against
the same listing computed by Nix alone (`nix-instantiate --eval` over `builtins.fromTOML`).

    bench/inventory/run.sh [--nodes 10000] [--runs 20] [--tag dc-1]

Generates the inventory (bench/inventory/gen.py), checks that both listings are identical,
times them with hyperfine (results in bench/out/), prints the medians and their ratio, and exits
1 when a target is missed: nixherd's median under 0.2 s and at least 3x faster than Nix.

nixherd is timed twice: as users run it (the parsed document comes from the parse cache, which
the warm-up runs fill) and with NIXHERD_NO_CACHE=1 (every run parses, as the first listing after
an edit does). The targets are checked on the first; both are printed.
"""

from __future__ import annotations

import argparse
import compileall
import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from nixherd.run import process

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = ROOT / "bench" / "out"
TARGET_MEDIAN = 0.2  # seconds
TARGET_RATIO = 3.0

sys.path.insert(0, str(HERE))
from gen import generate  # noqa: E402 (a sibling script, not a package)


def nixherd_command(inventory: Path, tag: str, *, cache: bool = True) -> list[str]:
    script = Path(sys.executable).parent / "nixherd"
    start = [str(script)] if script.exists() else [sys.executable, "-m", "nixherd"]
    # The same `env` in front of both variants, so that they differ by the cache alone.
    env = ["env", f"NIXHERD_CACHE_DIR={OUT / 'cache'}"]
    if not cache:
        env.append("NIXHERD_NO_CACHE=1")
    return [*env, *start, "-i", str(inventory), "nodes", "--on", f"@{tag}", "--json"]


def nix_command(inventory: Path, tag: str) -> list[str]:
    return [
        "nix-instantiate",
        "--eval",
        "--strict",
        "--json",
        str(HERE / "listing.nix"),
        "--argstr",
        "file",
        str(inventory),
        "--argstr",
        "tag",
        tag,
    ]


def listing(argv: list[str]) -> list[dict[str, Any]]:
    """The listing: nixherd's JSON document's nodes (docs/json.md), or Nix's plain list."""
    result = process.run(argv, timeout=300, what="listing")
    data = json.loads(result.stdout)
    if isinstance(data, dict):
        assert data["schema"] == "nixherd/v1" and data["command"] == "nodes", data.keys()
        data = data["data"]["nodes"]
    nodes: list[dict[str, Any]] = data
    return nodes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--roles", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tag", default="dc-1")
    args = parser.parse_args()
    if shutil.which("hyperfine") is None:
        print("nodes_vs_nix: needs hyperfine (apt-get install hyperfine)", file=sys.stderr)
        return 2

    OUT.mkdir(parents=True, exist_ok=True)
    inventory = OUT / f"inventory-{args.nodes}.toml"
    inventory.write_text(generate(args.nodes, args.roles), encoding="utf-8")
    # An installed package runs from byte-compiled modules; make sure this tree does too (the
    # environment may say PYTHONDONTWRITEBYTECODE).
    compileall.compile_dir(ROOT / "src" / "nixherd", quiet=1)

    ours, theirs = nixherd_command(inventory, args.tag), nix_command(inventory, args.tag)
    uncached = nixherd_command(inventory, args.tag, cache=False)
    mine, nixes = listing(ours), listing(theirs)
    if listing(uncached) != mine:
        print("nodes_vs_nix: the listing differs with and without the parse cache", file=sys.stderr)
        return 1
    same_names = [n["name"] for n in mine] == [n["name"] for n in nixes]
    print(
        f"inventory: {inventory.stat().st_size / 1024:.0f} KB, {args.nodes} nodes; "
        f"@{args.tag} selects {len(mine)}; same names: {same_names}; "
        f"identical listings: {mine == nixes}"
    )
    if not same_names:
        return 1

    report = OUT / "inventory-nodes.json"
    process.run(
        [
            "hyperfine",
            "-N",
            "--style",
            "basic",
            "--warmup",
            str(args.warmup),
            "--runs",
            str(args.runs),
            "--export-json",
            str(report),
            "--command-name",
            "nixherd nodes",
            shlex.join(ours),
            "--command-name",
            "nixherd nodes (no parse cache)",
            shlex.join(uncached),
            "--command-name",
            "nix-instantiate",
            shlex.join(theirs),
        ],
        timeout=3600,
        what="hyperfine",
    )
    results = json.loads(report.read_text())["results"]
    ours_median, cold_median, theirs_median = (r["median"] for r in results)
    ratio = theirs_median / ours_median
    for result in results:
        cpu = (result["user"] + result["system"]) * 1000
        print(
            f"{result['command']:32s} median {result['median'] * 1000:6.1f} ms  "
            f"min {result['min'] * 1000:6.1f} ms  cpu {cpu:6.1f} ms"
        )
    print(f"ratio: nixherd is {ratio:.1f}x faster ({theirs_median / cold_median:.1f}x uncached)")
    ok = ours_median < TARGET_MEDIAN and ratio >= TARGET_RATIO
    print(
        f"targets (median < {TARGET_MEDIAN * 1000:.0f} ms, >= {TARGET_RATIO:.0f}x): "
        + ("met" if ok else "MISSED")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

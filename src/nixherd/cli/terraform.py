"""`nixherd terraform sync`: write the Terraform/OpenTofu outputs the inventory uses into the
snapshot beside it (docs/terraform.md)."""

from __future__ import annotations

import argparse

HELP = "Terraform/OpenTofu outputs: `sync` writes the snapshot the inventory reads"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sync = sub.add_parser(
        "sync",
        help="run `output -json` for each [terraform.NAME] source and write the snapshot",
        description="Run `output -json` for each [terraform.NAME] source (or read its file) and "
        "write the non-sensitive outputs the inventory uses to <inventory>.terraform.json, "
        "after checking the inventory resolves with them (nothing is written otherwise).",
    )
    from nixherd.cli import jsonout

    jsonout.add_json(sync, "the snapshot written and the nodes it added or removed")


def run(args: argparse.Namespace) -> int:
    from nixherd.cli import inventory_path
    from nixherd.inventory.terraform_outputs import sync

    synced = sync(inventory_path(args))
    if args.json:
        from nixherd.cli import jsonout

        jsonout.emit(
            "terraform sync",
            {
                "snapshot": str(synced.snapshot),
                "changed": synced.changed,
                "sources": [
                    {"source": name, "outputs": list(outputs)}
                    for name, outputs in synced.outputs.items()
                ],
                "added": list(synced.added),
                "removed": list(synced.removed),
            },
        )
        return 0
    for name, outputs in synced.outputs.items():
        listed = ", ".join(outputs) or "no output used"
        print(f"terraform.{name}: {listed}")
    status = "written" if synced.changed else "unchanged"
    print(f"{synced.snapshot}: {status}")
    for name in synced.added:
        print(f"  + {name}")
    for name in synced.removed:
        print(f"  - {name}")
    return 0

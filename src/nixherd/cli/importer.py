"""`nixherd import colmena`: an inventory written from an existing Colmena hive (its nodes'
deployment fields; nodes with the same imports grouped into roles), with a list of what it could
not carry, on stderr and as a comment at the top of the file."""

from __future__ import annotations

import argparse

HELP = "write an inventory from an existing Colmena hive (`import colmena`)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=["colmena"], help="what to import from: colmena")
    parser.add_argument(
        "--flake",
        default=".",
        metavar="REF",
        help="the flake with the hive (`colmena` or `colmenaHive` output; default: .)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write the inventory (default: the -i/--inventory path, else "
        "inventory.toml; - for stdout)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing file")


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from nixherd.cli import inventory_path
    from nixherd.errors import UsageError
    from nixherd.fleet.colmena_import import import_colmena
    from nixherd.inventory import loads

    output = args.output or inventory_path(args)
    if output != "-" and os.path.lexists(output) and not args.force:
        raise UsageError(f"{output} exists: use --force to replace it, or -o FILE")
    imported = import_colmena(args.flake)
    # The same validation as every command's: an inventory that would not load is not written.
    loads(imported.text, file=output if output != "-" else "inventory.toml")
    if output == "-":
        sys.stdout.write(imported.text)
    else:
        _write(output, imported.text)
    where = "stdout" if output == "-" else output
    sys.stderr.write(
        f"{where}: {imported.nodes} nodes, {imported.roles} roles imported from {args.flake}\n"
    )
    if imported.not_carried:
        sys.stderr.write("not carried (also listed at the top of the file):\n")
        for line in imported.not_carried:
            sys.stderr.write(f"  - {line}\n")
    return 0


def _write(path: str, text: str) -> None:
    import os
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".nixherd-import-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise

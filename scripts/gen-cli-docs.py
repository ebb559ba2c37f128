#!/usr/bin/env python3
"""Write docs/cli.md and docs/nixherd.1 (the man page), the command-line reference derived from
the parser (nixherd.cli.clidocs, nixherd.cli.manpage).

Run it after changing a command or a flag; tests/unit/cli/test_clidocs.py fails while a file
checked in differs from what the parser gives. `--check`: exit 1 when one differs, write nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def generated() -> dict[Path, str]:
    """Each file and the text the parser gives for it now."""
    from nixherd.cli import build_parser, clidocs, manpage

    ref = clidocs.reference(build_parser())
    return {DOCS / "cli.md": clidocs.markdown(ref), DOCS / "nixherd.1": manpage.roff(ref)}


def main(argv: list[str]) -> int:
    files = generated()
    if "--check" in argv:
        stale = [path for path, text in files.items() if _read(path) != text]
        for path in stale:
            sys.stderr.write(f"{path} is out of date: run scripts/gen-cli-docs.py\n")
        return 1 if stale else 0
    for path, text in files.items():
        path.write_text(text)
        sys.stderr.write(f"wrote {path}\n")
    return 0


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

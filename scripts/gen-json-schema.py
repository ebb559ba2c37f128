#!/usr/bin/env python3
"""Write docs/schema/nixherd-v1.json, the JSON Schema of every JSON document nixherd writes,
derived from the TypedDicts that declare them (nixherd.cli.schemagen).

Run it after changing a payload; tests/unit/cli/test_json_schema.py fails while the file checked
in differs from what the code derives. `--check`: exit 1 when it differs, write nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nixherd.cli import schemagen

TARGET = Path(__file__).resolve().parent.parent / "docs" / "schema" / schemagen.FILE


def main(argv: list[str]) -> int:
    text = schemagen.text()
    if "--check" in argv:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            sys.stderr.write(f"{TARGET} is out of date: run scripts/gen-json-schema.py\n")
            return 1
        return 0
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(text)
    sys.stderr.write(f"wrote {TARGET}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

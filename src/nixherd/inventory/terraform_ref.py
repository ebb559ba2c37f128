"""References to Terraform/OpenTofu outputs, `NAME.OUTPUT.path.inside` (docs/terraform.md): apart
from inventory/terraform.py so that the field table can check `targets_from` without loading it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from nixherd.inventory.validate import Issue, got, one

# Source names and output names join with `.` into references: neither may hold a dot. Output
# names are Terraform identifiers (letters, digits, `_`, `-`; never a digit first).
SOURCE_PATTERN: Final = "[A-Za-z0-9_-]+"
OUTPUT_PATTERN: Final = "[A-Za-z_][A-Za-z0-9_-]*"
source_name_ok = re.compile(SOURCE_PATTERN).fullmatch
_REF = re.compile(rf"({SOURCE_PATTERN})\.({OUTPUT_PATTERN})((?:\.[^.]+)*)").fullmatch


@dataclass(frozen=True, slots=True)
class Ref:
    """`NAME.OUTPUT.path.inside`: a source, one of its outputs, and keys or indices inside it."""

    source: str
    output: str
    path: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Ref | None:
        match = _REF(text)
        if match is None:
            return None
        inside = match.group(3)
        return cls(match.group(1), match.group(2), tuple(inside[1:].split(".")) if inside else ())

    @property
    def output_ref(self) -> str:
        return f"{self.source}.{self.output}"

    def __str__(self) -> str:
        return ".".join((self.source, self.output, *self.path))


def ref_check(value: Any) -> list[Issue] | None:
    """`targets_from`: a reference `NAME.OUTPUT[.path]`, or an array of them."""
    if type(value) is str and Ref.parse(value) is not None:
        return None
    if type(value) is list and value and all(type(v) is str and Ref.parse(v) for v in value):
        return None
    return one(
        "must be a reference NAME.OUTPUT (a [terraform.NAME] source and one of its outputs), "
        f"or an array of them, {got(value)}"
    )

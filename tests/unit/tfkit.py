"""A real Terraform for tests: PyPI's terraform-binary ships Terraform 0.11.11 as
`<venv>/lib/terraform`, which runs offline for a configuration of variables and outputs only (no
provider to download). The working directories are real: `init`, `apply`, a state file."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nixherd.run import process

TERRAFORM = Path(sys.prefix) / "lib" / "terraform"
ENV = {"TF_INPUT": "0", "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}


@dataclass(frozen=True)
class WorkDir:
    """A Terraform working directory with `main.tf`."""

    path: Path

    def run(self, *args: str) -> process.Result:
        return process.run(
            [str(TERRAFORM), *args], cwd=str(self.path), env=ENV, timeout=120, check=True
        )

    def apply(self, variables: Mapping[str, Any] | None = None) -> None:
        """`apply` with these variables (lists and maps as HCL, which JSON is a subset of)."""
        words = [f"-var={name}={json.dumps(value)}" for name, value in (variables or {}).items()]
        self.run("apply", "-auto-approve", "-input=false", "-no-color", *words)

    def outputs(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.run("output", "-json").stdout)
        return found


def workdir(path: Path, main_tf: str, variables: Mapping[str, Any] | None = None) -> WorkDir:
    """A working directory at `path` holding `main_tf`, initialised and applied."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "main.tf").write_text(main_tf)
    work = WorkDir(path)
    work.run("init", "-input=false", "-no-color")
    work.apply(variables)
    return work

"""scripts/check-architecture.py finds import circles (also inside functions) and long modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "check-architecture.py"


def package(root: Path, files: dict[str, str]) -> Path:
    src = root / "src"
    for name, text in files.items():
        path = src / "nixherd" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return src


def check(src: Path) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(src)], capture_output=True, text=True, check=False
    )
    return result.returncode, result.stdout


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    src = package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from nixherd import b\n",
            "b.py": "import json\n",
            "sub/__init__.py": "",
            "sub/c.py": "from ..a import b\nfrom . import d\n",
            "sub/d.py": "",
        },
    )
    assert check(src) == (
        0,
        "check-architecture: 6 modules, no import circle, none over 500 lines\n",
    )


def test_a_circle_hidden_in_a_function_is_found(tmp_path: Path) -> None:
    src = package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from nixherd.b import thing\n",
            "b.py": "def thing() -> None:\n    from nixherd.sub import c\n",
            "sub/__init__.py": "",
            "sub/c.py": "from .. import a\n",
        },
    )
    code, out = check(src)
    assert code == 1
    assert "import circle: nixherd.a -> nixherd.b -> nixherd.sub.c -> nixherd.a" in out


def test_a_long_module_is_found(tmp_path: Path) -> None:
    src = package(
        tmp_path, {"__init__.py": "", "long.py": "x = 1\n" * 501, "ok.py": "y = 1\n" * 500}
    )
    code, out = check(src)
    assert code == 1
    assert "too long: nixherd/long.py has 501 lines (at most 500)" in out
    assert "ok.py" not in out

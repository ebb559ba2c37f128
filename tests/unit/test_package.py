"""The package users install: the wheel (built from the sdist, as `python -m build` does) holds
the Nix library and the resources, and an installed nixherd finds them where it is installed.

The same installed tree proven in the lab: scripts/wheel-check.sh (CI, on a pristine machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from wheelkit import REPO, Dists, build_dists, install_wheel

import nixherd
from nixherd.cli import main

# The library's files, as the repository's flake and nix/default.nix use them; flake.nix makes the
# installed directory a flake input (docs/nix-library.md).
# lab.nix reads nix/lab/ (its units, activate, switch-to-configuration and service programs).
LIBRARY = sorted(
    str(path.relative_to(REPO / "nix"))
    for pattern in ("*.nix", "lab/*.nix", "lab/*.py")
    for path in (REPO / "nix").glob(pattern)
)
# Files the package reads or runs from its own directory at run time.
RESOURCES = ("resources/watchdog.sh", "lab/boot.py", "lab/hostinit.py", "py.typed")


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    return build_dists(tmp_path_factory.mktemp("build"))


def test_the_library_is_what_the_docs_say() -> None:
    assert {"default.nix", "lib.nix", "lab.nix", "flake.nix"} <= set(LIBRARY)


def test_the_wheel_holds_the_nix_library_and_the_resources(dists: Dists) -> None:
    assert dists.wheel.name == f"nixherd-{nixherd.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(dists.wheel) as wheel:
        names = set(wheel.namelist())
        for name in LIBRARY:
            assert wheel.read(f"nixherd/nix/{name}") == (REPO / "nix" / name).read_bytes(), name
        for name in RESOURCES:
            assert wheel.read(f"nixherd/{name}") == (REPO / "src/nixherd" / name).read_bytes()
        info = f"nixherd-{nixherd.__version__}.dist-info"
        assert "nixherd = nixherd.cli:main" in wheel.read(f"{info}/entry_points.txt").decode()
        assert f"\nVersion: {nixherd.__version__}\n" in wheel.read(f"{info}/METADATA").decode()
    # Only the library's .nix files: nothing a build of the checkout leaves beside them.
    assert sorted(n.removeprefix("nixherd/nix/") for n in names if "/nix/" in n) == LIBRARY


def test_the_sdist_holds_what_the_wheel_is_built_from(dists: Dists) -> None:
    with tarfile.open(dists.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for name in LIBRARY:
        assert f"src/nixherd/nix/{name}" in names, name
    assert "src/nixherd/resources/watchdog.sh" in names


def _installed_version(site: Path) -> subprocess.CompletedProcess[str]:
    # -I -S: neither the checkout (editable install) nor the venv's site-packages is seen, only
    # the installed tree; --version needs nothing beyond the standard library.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from nixherd.cli import main; raise SystemExit(main(['--version']))"
    )
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(site)],
        check=False,
        capture_output=True,
        text=True,
        cwd="/",
    )


def test_the_installed_package_says_where_its_library_is(dists: Dists, tmp_path: Path) -> None:
    site = install_wheel(dists.wheel, tmp_path / "site-packages")
    result = _installed_version(site)
    assert result.returncode == 0, result.stderr
    library = os.path.realpath(site / "nixherd" / "nix")
    assert result.stdout == f"nixherd {nixherd.__version__} (Nix library: {library})\n"
    # pip compiles the lab's .py programs into __pycache__ as it installs them: not the library.
    installed = [
        os.path.relpath(os.path.join(directory, name), library)
        for directory, _dirs, names in os.walk(library)
        if "__pycache__" not in Path(directory).parts
        for name in names
    ]
    assert sorted(installed) == LIBRARY
    # The lab's programs run as scripts by path (`python -I .../boot.py`): there, installed.
    assert (site / "nixherd" / "lab" / "boot.py").is_file()


def test_version_in_the_checkout_names_the_repository_library(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    library = os.path.realpath(REPO / "nix")
    assert capsys.readouterr().out == f"nixherd {nixherd.__version__} (Nix library: {library})\n"

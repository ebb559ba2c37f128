"""nixherd installed from its wheel into a venv of its own, used on real lab hosts: `lab up` runs
the lab's programs (boot.py, hostinit.py) from site-packages, and `apply` deploys examples/lab's
web role through a flake whose `inputs.nixherd` is the installed Nix library.

The venv holds the wheel alone (pip, offline); its dependencies (rich, rtoml, tomlkit) come from
the test venv through a path line in a .pth file, which adds the directory without running that
directory's own .pth files, so the checkout's editable install stays out of it.
scripts/wheel-check.sh does the same with dependencies from the registry, on a pristine machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from labkit import PORT_BLOCK, REPO, free_base, free_ports, http_json
from wheelkit import build_dists

from nixherd.lab.hosts import Lab
from nixherd.run import nix

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    wheel = build_dists(work).wheel
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "nixherd-test-deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    return venv


def _run(venv: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NIXHERD_INVENTORY", "NIXHERD_FLAKE")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env["NIX_CONFIG"] = "substituters ="  # lab systems are built here, from nothing
    return subprocess.run(
        [str(venv / "bin" / "nixherd"), *argv],
        cwd=cwd,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_installed_package_runs_the_lab_and_deploys(venv: Path, tmp_path: Path) -> None:
    where = _ok(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import nixherd; print(nixherd.__file__)"],
            check=False,
            capture_output=True,
            text=True,
            cwd="/",
        )
    )
    assert where.startswith(str(venv)), where
    version = _ok(_run(venv, "--version", cwd=tmp_path))
    library = version.split("(Nix library: ", 1)[1].rstrip(")\n")
    assert library.startswith(str(venv)) and os.path.isfile(os.path.join(library, "lib.nix"))

    lab_dir = tmp_path / "lab"
    base = free_base(PORT_BLOCK)
    (http_port,) = free_ports(1)
    try:
        _ok(
            _run(
                venv,
                "lab",
                "up",
                "-n",
                "1",
                "--dir",
                str(lab_dir),
                "--base-port",
                str(base),
                cwd=tmp_path,
            )
        )
        # The host's supervisor is the installed boot.py (run by path, not imported from here).
        pid = (lab_dir / "hosts" / "lab-1" / "supervisor.pid").read_text().split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert f"{library.removesuffix('/nix')}/lab/boot.py".encode() in cmdline

        fleet = tmp_path / "fleet"
        fleet.mkdir()
        for sub in ("modules", "roles"):
            shutil.copytree(REPO / "examples" / "lab" / sub, fleet / sub)
        (fleet / "inventory.toml").write_text(
            f"[defaults]\nssh_config = {nix.nix_string(str(lab_dir / 'ssh_config'))}\n"
            'modules = ["modules/common.nix"]\nvars = { version = "7" }\n\n'
            '[roles.web]\nmodules = ["roles/web.nix"]\nvars = { greeting = "installed" }\n\n'
            '[[roles.web.targets]]\nname = "lab-1"\nhost = "127.0.0.1"\n'
            f"port = {base}\nvars = {{ http_port = {http_port} }}\n"
        )
        (fleet / "flake.nix").write_text(
            "{\n"
            f"  inputs.nixherd.url = {nix.nix_string('path:' + library)};\n"
            "  outputs = { self, nixherd }: nixherd.lib.mkFleet {\n"
            "    inventory = ./inventory.toml; root = ./.; inherit (nixherd.lib.lab) mkSystem;\n"
            "  };\n"
            "}\n"
        )
        _ok(_run(venv, "apply", "switch", cwd=fleet))
        assert http_json(http_port)["node"] == "lab-1"
        assert http_json(http_port)["version"] == "7"
        _ok(_run(venv, "status", "--exit-code", cwd=fleet))
        assert "stopped 1 host" in _ok(
            _run(venv, "lab", "down", "--dir", str(lab_dir), cwd=tmp_path)
        )
    finally:
        Lab(lab_dir).down()  # whatever happened above: by recorded pid, nothing left running

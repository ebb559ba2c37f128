"""Nix flags on eval, build, apply, diff and `check --eval`, and Nix's own error text reaching the
user whole (file positions, hint, trace): the real CLI (in-process) and the real nix.

Without lab hosts: `apply build` and `build` never leave this machine, and `diff` evaluates and
builds here before it tries the (unreachable) node, so what Nix says is seen before that.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import jsonkit
import pytest
from nixfleet import Fleet, write_fleet

from nixherd.cli import main

pytestmark = pytest.mark.nix

# Port 9 on the loopback: nothing listens, so `diff` fails at once on the node, after the build.
INVENTORY = """
[roles.web]
modules = ["web.nix"]
vars = { http_port = 80 }

[nodes.web-1]
role = "web"
host = "127.0.0.1"
port = 9
"""

# The typo of the issue: `http_prot` for `http_port`, on line 4, column 5.
TYPO = "{ node, ... }:\n{\n  services.web.port =\n    node.vars.http_prot;\n}\n"
POSITION = "web.nix:4:5"

COMMANDS = [["eval"], ["build"], ["apply", "build"], ["diff"], ["check", "--eval"]]
IDS = ["eval", "build", "apply", "diff", "check"]


@pytest.fixture(autouse=True)
def quiet_nix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Unreachable substituters would cost each build seconds of retries; logs go to tmp_path.
    monkeypatch.setenv("NIX_CONFIG", "substituters =")
    monkeypatch.chdir(tmp_path)


def fleet(
    tmp_path: Path, module: str, args: str = "", files: dict[str, str] | None = None
) -> Fleet:
    return write_fleet(tmp_path / "fleet", INVENTORY, {"web.nix": module, **(files or {})}, args)


def nixherd(
    capsys: pytest.CaptureFixture[str], inventory: Path, *args: str
) -> tuple[int, str, str]:
    code = main([*args, "-i", str(inventory)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_nix_error_with_its_position_reaches_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    inventory = fleet(tmp_path, TYPO).inventory
    code, _out, err = nixherd(capsys, inventory, *command)
    assert code == 1, err
    assert "attribute 'http_prot' missing" in err
    assert POSITION in err  # the file and line, as `nix eval` shows them
    assert "4|     node.vars.http_prot;" in err
    assert "Did you mean http_port?" in err
    assert "use '--show-trace'" in err  # Nix's hint: the flag now exists on every command
    assert "Traceback" not in err


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_show_trace_gives_the_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    inventory = fleet(tmp_path, TYPO).inventory
    _, _, plain = nixherd(capsys, inventory, *command)
    code, _, traced = nixherd(capsys, inventory, *command, "--show-trace")
    assert code == 1, traced
    assert "while evaluating" not in plain
    assert "while evaluating" in traced
    assert POSITION in traced
    # The trace's frames name where they are: the library's resolver and the system builder.
    assert "nixherd/lib.nix:" in traced
    assert len(traced.splitlines()) > len(plain.splitlines()) + 10


# Import from derivation: a value read from a file that a derivation builds during evaluation.
IFD = """{ ... }: {
  services.web.port = import (derivation {
    name = "port-%s";
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" "echo 8080 > $out" ];
  });
}
"""


def test_option_reaches_nix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = fleet(tmp_path, IFD % uuid.uuid4().hex).inventory
    code, out, err = nixherd(capsys, inventory, "eval", "--json")
    assert code == 0, err
    assert jsonkit.document(out, "eval")["nodes"][0]["ok"] is True
    option = ["--option", "allow-import-from-derivation", "false"]
    for command in (["eval"], ["check", "--eval"], ["build"]):
        code, _, err = nixherd(capsys, inventory, *command, *option)
        assert code == 1, (command, err)
        assert "allow-import-from-derivation" in err, (command, err)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--option", "no-such-setting", "1"], "no-such-setting"),
        (["--option", "max-jobs", "lots"], "max-jobs"),
        (["--option", "not a name", "1"], "not a name"),
        (["--option", "access-tokens", "github.com=t0ps3cret"], "access-tokens"),
    ],
)
@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_bad_option_is_refused_before_anything_runs(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    args: list[str],
    named: str,
) -> None:
    inventory = fleet(tmp_path, TYPO).inventory
    code, out, err = nixherd(capsys, inventory, *command, *args)
    assert code == 2, err
    assert err.startswith("nixherd: error: --option "), err
    assert named in err
    assert "t0ps3cret" not in err + out  # a secret value is never echoed back
    assert "http_prot" not in err  # refused before any evaluation
    assert not (tmp_path / ".nixherd").exists()


ENV_READER = '{ ... }: { services.web.greeting = builtins.getEnv "NIXHERD_FLAGS_PROBE"; }\n'


def test_impure_lets_get_env_see_a_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = fleet(tmp_path, ENV_READER).inventory
    value = f"hello-{uuid.uuid4().hex}"
    monkeypatch.setenv("NIXHERD_FLAGS_PROBE", value)
    for impure, seen in ((False, False), (True, True)):
        args = ["eval", "--json", *(["--impure"] if impure else [])]
        code, out, err = nixherd(capsys, inventory, *args)
        assert code == 0, err
        drv = jsonkit.document(out, "eval")["nodes"][0]["drv_path"]
        # The stand-in system puts its config in the derivation's environment.
        assert (value in Path(drv).read_text()) is seen


# A system whose build prints a line of its own (a fresh one each test: it is really built).
LOUD_SYSTEM = """{ system, specialArgs ? { }, modules }: {
  config.system.build.toplevel = derivation {
    name = "loud-${specialArgs.node.name}";
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" "echo build-log-line-%s; echo done > $out" ];
  };
}
"""


@pytest.mark.parametrize("command", [["build"], ["apply", "build"], ["diff"]], ids=str)
def test_print_build_logs_shows_the_build_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    marker = uuid.uuid4().hex
    loud = fleet(
        tmp_path,
        "{ ... }: { }\n",
        args="mkSystem = import ./loud.nix;",
        files={"loud.nix": LOUD_SYSTEM % marker},
    )
    _, out, err = nixherd(capsys, loud.inventory, *command, "-L")
    assert f"build-log-line-{marker}" in out + err


def test_without_print_build_logs_diff_hides_the_build_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = uuid.uuid4().hex
    loud = fleet(
        tmp_path,
        "{ ... }: { }\n",
        args="mkSystem = import ./loud.nix;",
        files={"loud.nix": LOUD_SYSTEM % marker},
    )
    _, out, err = nixherd(capsys, loud.inventory, "diff")
    assert "building" not in err
    assert f"build-log-line-{marker}" not in out + err


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_every_flag_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    good = fleet(tmp_path, "{ ... }: { services.web.port = 80; }\n").inventory
    flags = [
        "--show-trace",
        "-L",
        "--impure",
        "--option",
        "cores",
        "1",
        "--option",
        "extra-substituters",
        "",
        "--builders",
        "",
        "--max-jobs",
        "auto",
    ]
    code, out, err = nixherd(capsys, good, *command, *flags)
    # diff fails on the unreachable node, after evaluating and building; the rest succeed.
    assert code == (1 if command == ["diff"] else 0), out + err
    assert "unknown setting" not in err

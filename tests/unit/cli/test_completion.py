"""Shell completion: `nixherd completion bash|zsh|fish` prints argcomplete's script, and each shell,
running that script for real, completes commands, flags and `--on` words by running the installed
`nixherd` (the one of this venv) with the line, as on a TAB."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nixherd.cli import main

ROOT = Path(__file__).resolve().parents[3]
SEED = ROOT / "examples" / "seed-fleet" / "inventory.toml"
BIN = Path(sys.executable).parent  # where this venv's `nixherd` script is


def shell_env(tmp_path: Path) -> dict[str, str]:
    env = {
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "NIXHERD_CACHE_DIR": str(tmp_path / "cache"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "LANG": "C.UTF-8",
    }
    return env


def shell(tmp_path: Path, argv: list[str], script: str) -> str:
    result = subprocess.run(
        [*argv, script],
        env=shell_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# bash: the script registers a function with `complete -F`; a TAB is that function called with
# COMP_LINE/COMP_POINT/COMP_WORDS set, its answer in COMPREPLY.
BASH_TAB = r"""
source <(nixherd completion bash)
spec=$(complete -p nixherd) || exit 1
[[ $spec =~ -F\ ([^ ]+) ]] || exit 1
tab() {
  COMP_LINE=$1 COMP_POINT=${#1}
  read -ra COMP_WORDS <<<"$1"
  [[ $1 == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMPREPLY=()
  "${BASH_REMATCH[1]}" nixherd "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"
  printf '%s|' "${COMPREPLY[@]}"
  echo
}
"""


def bash_tab(tmp_path: Path, *lines: str) -> list[list[str]]:
    script = BASH_TAB + "".join(f"tab {_quote(line)}\n" for line in lines)
    out = shell(tmp_path, ["bash", "--norc", "--noprofile", "-c"], script)
    return [sorted(word.strip() for word in row.split("|") if word) for row in out.splitlines()]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_bash_completes_commands_flags_and_subcommands(tmp_path: Path) -> None:
    assert bash_tab(
        tmp_path,
        "nixherd ap",
        "nixherd apply --par",
        "nixherd lab st",
        "nixherd apply sw",
        "nixherd completion ",
        f"nixherd -i {SEED} nodes --on nixos-vps-198-51-100-1",
    ) == [
        ["apply"],
        ["--parallel"],
        ["status"],
        ["switch"],
        ["bash", "fish", "zsh"],
        ["nixos-vps-198-51-100-11", "nixos-vps-198-51-100-12", "nixos-vps-198-51-100-13"],
    ]


def test_bash_registration(tmp_path: Path) -> None:
    out = shell(
        tmp_path,
        ["bash", "--norc", "--noprofile", "-c"],
        "source <(nixherd completion bash) && complete -p nixherd",
    )
    assert out.startswith("complete ")
    assert out.rstrip().endswith(" nixherd")


def fish_tab(tmp_path: Path, *lines: str) -> list[list[str]]:
    script = "nixherd completion fish | source\n" + "".join(
        f"complete -C {_quote(line)}; echo '=='\n" for line in lines
    )
    out = shell(tmp_path, ["fish", "--no-config", "-c"], script)
    rows: list[list[str]] = [[]]
    for line in out.splitlines():
        if line == "==":
            rows.append([])
        else:
            rows[-1].append(line.split("\t", 1)[0])
    return [sorted(row) for row in rows[:-1]]


def test_fish_completes_commands_flags_and_the_selection(tmp_path: Path) -> None:
    inventory = f"nixherd -i {SEED} nodes --on "
    assert fish_tab(
        tmp_path,
        "nixherd ap",
        "nixherd apply --par",
        "nixherd keys up",
        f"nixherd -i {SEED} show nixos-h",
        inventory + "nixos-w",
        inventory + "@batch",
        inventory + "role:nixos-w",
        inventory + "@vps,!nixos-h",
        inventory + "@vps,&@pr",
    ) == [
        ["apply"],
        ["--parallel"],
        ["upload"],
        ["nixos-hk"],
        ["nixos-ws"],
        ["@batch-vps"],
        ["role:nixos-ws"],
        ["@vps,!nixos-hk"],
        ["@vps,&@prod"],
    ]


def test_fish_script_parses(tmp_path: Path) -> None:
    script = tmp_path / "nixherd.fish"
    script.write_text(completion_script("fish"))
    shell(tmp_path, ["fish", "--no-config", "-n"], str(script))


# zsh: the same script as bash, taking its zsh branch; `_describe` (the completion system's, which
# needs a live line editor) is replaced by one printing what it was given.
ZSH_TAB = r"""
autoload -Uz compinit && compinit -u -d "$HOME/.zcompdump"
eval "$(nixherd completion zsh)"
[[ ${_comps[nixherd]} == _python_argcomplete ]] || { print "not registered"; exit 1 }
_describe() { print -rl -- "${(@P)2}"; print -- "--" }
tab() { BUFFER=$1; CURSOR=${#1}; words=(${(z)1}); _python_argcomplete }
"""


def test_zsh_registers_and_completes(tmp_path: Path) -> None:
    script = ZSH_TAB + "tab 'nixherd ap'\ntab 'nixherd apply --par'\n"
    out = shell(tmp_path, ["zsh", "-f", "-c"], script)
    rows = out.split("--\n")
    assert [row.split("\n")[0].split(":")[0] for row in rows[:2]] == ["apply", "--parallel"]
    assert rows[0].startswith("apply:deploy the selected nodes")


def test_zsh_script_parses(tmp_path: Path) -> None:
    script = tmp_path / "_nixherd"
    script.write_text(completion_script("zsh"))
    shell(tmp_path, ["zsh", "-f", "-n"], str(script))
    assert completion_script("zsh").startswith("#compdef nixherd\n")


def completion_script(shell_name: str) -> str:
    result = subprocess.run(
        [str(BIN / "nixherd"), "completion", shell_name],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout


def test_completion_command_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    out = capsys.readouterr().out
    assert "complete -o nospace -o default -o bashdefault -F _python_argcomplete nixherd" in out


def test_an_unknown_shell_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["completion", "tcsh"])
    assert exited.value.code == 2
    assert "invalid SHELL 'tcsh' (choose from bash, zsh, fish)" in capsys.readouterr().err


def tab(tmp_path: Path, line: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """One TAB as the scripts make it, the answer written to a file instead of descriptor 8."""
    answer = tmp_path / "answer"
    env = shell_env(tmp_path) | {
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": "\n",
        "_ARGCOMPLETE_SUPPRESS_SPACE": "1",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
    }
    result = subprocess.run(
        [str(BIN / "nixherd")], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    return result, answer.read_text() if answer.exists() else ""


def test_a_tab_answers_on_its_own_channel(tmp_path: Path) -> None:
    result, answer = tab(tmp_path, f"nixherd -i {SEED} nodes --on @b")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert answer.split("\n") == ["@batch-vps"]


def test_a_tab_with_a_broken_inventory_completes_nothing_quietly(tmp_path: Path) -> None:
    broken = tmp_path / "inventory.toml"
    broken.write_text("[nodes.a\n")
    for inventory in (broken, tmp_path / "missing.toml"):
        for line in (f"nixherd -i {inventory} nodes --on a", f"nixherd -i {inventory} show a"):
            result, answer = tab(tmp_path, line)
            # No traceback and a clean exit: the shell shows no completion, and no error.
            assert (result.returncode, result.stderr, answer) == (0, "", "")

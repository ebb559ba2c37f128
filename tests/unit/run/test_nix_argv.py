"""NixFlags without nix: the argv each nix command gets, what is refused, and how the command
line and the deploy pipeline hand the flags down. Nix's behaviour with them (the trace, IFD
refused, getEnv, build logs) is proven with the real nix in tests/nix/test_nix_flags.py."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import connkit
import pytest

from nixherd.cli import apply, main, runs
from nixherd.errors import CommandError, UsageError
from nixherd.fleet import evaluate as fleet
from nixherd.fleet import pipeline, systems
from nixherd.fleet.plan import DeployOptions, describe
from nixherd.node.delivery import System
from nixherd.node.goal import Goal
from nixherd.run import nix, process
from nixherd.run.nix import NixFlags
from nixherd.run.process import Result

EVERYTHING = NixFlags(
    show_trace=True,
    print_build_logs=True,
    impure=True,
    options=(("allow-import-from-derivation", "false"), ("extra-substituters", "a b -c")),
    builders="@/etc/nix/machines",
    max_jobs="auto",
)


def test_no_flags_no_words() -> None:
    assert NixFlags().eval_args() == []
    assert NixFlags().realise_args() == []
    assert NixFlags().words() == []
    assert nix.realise_argv(["/nix/store/x.drv"]) == [
        "nix-store",
        "--realise",
        "--keep-going",
        "/nix/store/x.drv",
    ]


def test_eval_gets_every_flag_and_each_value_is_one_word() -> None:
    assert EVERYTHING.eval_args() == [
        "--show-trace",
        "--option",
        "allow-import-from-derivation",
        "false",
        "--option",
        "extra-substituters",
        "a b -c",
        "--builders",
        "@/etc/nix/machines",
        "--max-jobs",
        "auto",
        "--print-build-logs",
        "--impure",
    ]


def test_nix_store_gets_what_it_accepts() -> None:
    # Nix 2.8's nix-store has no -L (it prints build logs anyway) and evaluates nothing.
    argv = nix.realise_argv(["/nix/store/x.drv"], flags=EVERYTHING)
    assert argv[:3] == ["nix-store", "--realise", "--keep-going"]
    assert argv[-1] == "/nix/store/x.drv"
    assert "--print-build-logs" not in argv and "-L" not in argv and "--impure" not in argv
    assert argv[3:-1] == EVERYTHING.realise_args()
    assert argv[3:5] == ["--show-trace", "--option"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (dict(options=(("not a name", "1"),)), "--option 'not a name': not a Nix setting name"),
        (dict(options=(("-L", "1"),)), "--option '-L': not a Nix setting name"),
        (dict(options=(("", "1"),)), "--option '': not a Nix setting name"),
        (dict(options=(("access-tokens", "github.com=s3cret"),)), "--option access-tokens: a"),
        (dict(options=(("extra-access-tokens", "s3cret"),)), "--option extra-access-tokens"),
        (dict(max_jobs="lots"), "--max-jobs: must be a number or 'auto'"),
        (dict(max_jobs="-1"), "--max-jobs"),
    ],
)
def test_refused(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        NixFlags(**flags)
    assert "s3cret" not in str(info.value)


def answer(monkeypatch: pytest.MonkeyPatch, stderr: str, code: int = 0) -> list[tuple[str, ...]]:
    seen: list[tuple[str, ...]] = []

    def fake(argv: Sequence[str], **_kw: Any) -> Result:
        seen.append(tuple(argv))
        if code:
            raise CommandError(argv, code, stderr)
        return Result(tuple(argv), 0, "null", stderr)

    monkeypatch.setattr(process, "run", fake)
    return seen


def test_options_are_asked_of_nix_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = answer(monkeypatch, "")
    nix.check_options(NixFlags())
    assert seen == []  # no options: no process
    nix.check_options(EVERYTHING)
    (argv,) = seen
    # Before the subcommand: there Nix 2.8 warns about a setting it does not know.
    assert argv == (
        "nix",
        *nix.EXPERIMENTAL,
        "--option",
        "allow-import-from-derivation",
        "false",
        "--option",
        "extra-substituters",
        "a b -c",
        "eval",
        "--expr",
        "null",
    )


@pytest.mark.parametrize(
    ("stderr", "message"),
    [
        ("warning: unknown setting 'allow-import-from-derivation'\n", "Nix has no such setting"),
        (
            "warning: error: Boolean setting 'allow-import-from-derivation' has invalid value "
            "'nope'\n",
            "--option allow-import-from-derivation: Nix refused it: Boolean setting",
        ),
    ],
)
def test_what_nix_only_warns_about_is_refused(
    monkeypatch: pytest.MonkeyPatch, stderr: str, message: str
) -> None:
    answer(monkeypatch, "warning: Git tree is dirty\n" + stderr)
    with pytest.raises(UsageError, match=message):
        nix.check_options(EVERYTHING)


def test_unrelated_warnings_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    answer(monkeypatch, "warning: error: unable to download 'https://cache.nixos.org/x'\n")
    nix.check_options(EVERYTHING)


def test_nix_failing_on_the_options_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    answer(monkeypatch, "error: setting 'x' is bad", code=1)
    with pytest.raises(UsageError, match="--option: nix refused the options:\nerror: setting"):
        nix.check_options(EVERYTHING)


def test_eval_nodes_hands_the_flags_to_every_nix_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, ...]] = []

    def fake(argv: Sequence[str], **_kw: Any) -> Result:
        seen.append(tuple(argv))
        if len(seen) == 1:  # the batch: a caught error, explained alone
            return Result(tuple(argv), 0, json.dumps({"a": {"error": None}}), "")
        return Result(tuple(argv), 1, "", "error: boom\n       at /f/a.nix:1:2:")

    monkeypatch.setattr(process, "run", fake)
    results = fleet.eval_nodes("/srv/fleet", ["a"], flags=EVERYTHING)
    assert results["a"].error == "boom\n       at /f/a.nix:1:2:"
    assert len(seen) == 2
    for argv in seen:
        words = list(argv)
        start = words.index("/srv/fleet#nixosConfigurations") + 1
        assert words[start : start + len(EVERYTHING.eval_args())] == EVERYTHING.eval_args()
    # Out of diagnoses: the command the user is told to run carries the flags too.
    seen.clear()
    monkeypatch.setattr(
        process, "run", lambda a, **_k: Result(tuple(a), 0, '{"a": {"error": null}}', "")
    )
    told = fleet.eval_nodes("/srv/fleet", ["a"], flags=EVERYTHING, max_diagnoses=0)["a"].error
    assert told is not None and "--show-trace --option allow-import-from-derivation false" in told
    assert "'a b -c'" in told


def test_the_build_gets_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, ...]] = []

    def fake(argv: Sequence[str], **_kw: Any) -> Result:
        seen.append(tuple(argv))
        return Result(tuple(argv), 0, "/nix/store/o-a\n", "")

    monkeypatch.setattr(process, "run", fake)
    failures, _ = systems.build(
        {"a": System("/nix/store/d-a.drv", "/nix/store/o-a")}, flags=EVERYTHING
    )
    assert failures == {}
    assert seen == [tuple(nix.realise_argv(["/nix/store/d-a.drv"], flags=EVERYTHING))]


def test_the_pipeline_evaluates_with_the_options_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, ...]] = []

    def fake(argv: Sequence[str], **_kw: Any) -> Result:
        seen.append(tuple(argv))
        if "eval" in argv:
            data = {"a": {"drv": "/nix/store/d-a.drv", "out": "/nix/store/o-a"}}
            return Result(tuple(argv), 0, json.dumps(data), "")
        return Result(tuple(argv), 0, "/nix/store/o-a\n", "")

    monkeypatch.setattr(process, "run", fake)
    flags = NixFlags(show_trace=True, max_jobs="3")
    options = DeployOptions(flake="path:/f", goal=Goal.BUILD, nix=flags)
    report = pipeline.deploy([connkit.FakeNode("a")], options)
    assert [r.store_path for r in report.nodes] == ["/nix/store/o-a"]
    evals = [a for a in seen if "eval" in a]
    builds = [a for a in seen if a[:2] == ("nix-store", "--realise")]
    assert len(evals) == 1 and len(builds) == 1
    assert evals[0][6:9] == ("--show-trace", "--max-jobs", "3")
    assert builds[0][3:] == ("--show-trace", "--max-jobs", "3", "/nix/store/d-a.drv")


def parse_apply(*argv: str) -> DeployOptions:
    parser = argparse.ArgumentParser()
    apply.configure(parser)
    return apply.options_from(parser.parse_args(list(argv)))


def test_command_line_to_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = answer(monkeypatch, "")
    options = parse_apply(
        "build",
        "--show-trace",
        "-L",
        "--impure",
        "--option",
        "cores",
        "2",
        "--option",
        "extra-substituters",
        "-x y",
        "--builders",
        "",
        "--max-jobs",
        "0",
    )
    assert options.nix == NixFlags(
        show_trace=True,
        print_build_logs=True,
        impure=True,
        options=(("cores", "2"), ("extra-substituters", "-x y")),
        builders="",
        max_jobs="0",
    )
    assert len(seen) == 1  # Nix was asked about the options
    assert parse_apply().nix == NixFlags()
    lines = describe([], options)
    assert "nix flags: --show-trace --option cores 2 --option extra-substituters '-x y' " in (
        "\n".join(lines)
    )


@pytest.mark.parametrize("value", ["-1", "65536", "1.5", "all", ""])
def test_max_jobs_bounds_while_parsing(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    runs.add_nix_flags(parser)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--max-jobs", value])
    assert info.value.code == 2
    assert "argument --max-jobs: must be 'auto' or an integer 0..65535" in capsys.readouterr().err


def test_check_without_eval_refuses_nix_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "inventory.toml"
    inventory.write_text("[nodes.a]\n")
    assert main(["check", "--show-trace", "-i", str(inventory)]) == 2
    assert capsys.readouterr().err == (
        "nixherd: error: Nix flags go with --eval: check alone runs no Nix\n"
    )

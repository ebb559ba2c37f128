"""The JSON contract: one versioned envelope, a schema derived from the code and checked in, the
commands that need no host validated against it, `--json` a flag everywhere (the old `--json
FILE` refused before anything runs), and the bound on `exec`'s output in a report.

The commands that reach hosts are validated in the lab: tests/lab/deploy/test_json_lab.py.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import jsonkit
import jsonschema
import pytest

from nixherd.cli import COMMANDS, build_parser, jsonout, main, payloads, schemagen
from nixherd.fleet.report import OUTPUT_LIMIT, Output

ROOT = Path(__file__).resolve().parents[3]
SEED = ROOT / "examples" / "seed-fleet" / "inventory.toml"


@pytest.fixture(autouse=True)
def _private_parse_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NIXHERD_CACHE_DIR", str(tmp_path / "cache"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_checked_in_schema_is_the_one_the_code_derives() -> None:
    # Fails when a payload changes without `python scripts/gen-json-schema.py`.
    assert jsonkit.SCHEMA_FILE.read_text() == schemagen.text()


def test_the_schema_is_a_valid_draft_2020_12_schema_with_one_variant_per_command() -> None:
    schema = json.loads(jsonkit.SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    commands = [v["properties"]["command"]["const"] for v in schema["oneOf"]]
    assert commands == list(payloads.payloads())


def _json_commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command and subcommand of the CLI with its parser."""
    parser = build_parser()
    stack: list[tuple[str, argparse.ArgumentParser]] = [("", parser)]
    while stack:
        name, current = stack.pop()
        yield name, current
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    stack.append(((f"{name} {sub}").strip(), subparser))


def test_every_command_with_json_has_a_payload_in_the_contract() -> None:
    with_json = {
        name
        for name, parser in _json_commands()
        if any("--json" in action.option_strings for action in parser._actions)
    }
    assert with_json == set(payloads.payloads())
    # ... and the commands that show data all have it (lab up/down and the top level do not;
    # `completion` prints a shell script, `report` writes an HTML page; add, remove, set and
    # import write the inventory and show no data; `terraform` is only its subcommand `sync`).
    edits = {"add", "remove", "set", "import"}
    others = {"lab", "keys", "data", "completion", "report", "terraform"}
    assert set(COMMANDS) - others - edits <= with_json


def test_nodes_json_is_the_envelope_and_validates(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-i", str(SEED), "nodes", "--json", "--on", "@batch-vps")
    assert (code, err) == (0, "")
    data = jsonkit.document(out, "nodes")
    assert [n["name"] for n in data["nodes"]] == [
        "nixos-vps-198-51-100-11",
        "nixos-vps-198-51-100-12",
        "nixos-vps-198-51-100-13",
    ]
    assert data["nodes"][0] == {
        "name": "nixos-vps-198-51-100-11",
        "role": "nixos-vps",
        "host": "198.51.100.11",
        "user": "root",
        "port": None,  # not set: ssh decides (the schema allows null)
        "tags": ["vps", "batch-vps"],
    }


def test_show_json_validates(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-i", str(SEED), "show", "--json", "nixos-hk")
    assert code == 0
    data = jsonkit.document(out, "show")
    assert data["node"]["name"] == "nixos-hk" and data["origins"]["host"] == "node"
    assert data["source"]


def test_check_json_validates_with_and_without_problems(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "-i", str(SEED), "check", "--json", "--on", "nixos-ws")
    assert code == 0
    assert jsonkit.document(out, "check") == {
        "ok": True,
        "nodes": 6,
        "roles": 2,
        "selected": ["nixos-ws"],
        "problems": [],
        "eval": None,
    }
    broken = tmp_path / "inventory.toml"
    broken.write_text("[nodes.web]\nport = 0\n")
    code, out, err = run(capsys, "-i", str(broken), "check", "--json")
    assert code == 2 and "1 problem found" in err
    data = jsonkit.document(out, "check")
    assert data["ok"] is False and data["nodes"] is None
    assert data["problems"] == [
        {"file": str(broken), "path": "nodes.web.port", "message": "must be 1..65535, got 0"}
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["apply", "--json", "report.json"],
        ["apply", "--json", "boot"],  # once: a file named "boot", and the goal switch
        ["build", "--json", "-"],
        ["exec", "--on", "x", "--json", "out.json", "--", "true"],
        ["rollback", "--json", "r.json"],
        ["check-health", "--json", "-"],
    ],
)
def test_json_takes_no_value_and_nothing_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    # No inventory exists: had the command started, it would fail on that instead.
    with pytest.raises(SystemExit) as exit:
        main(["-i", str(tmp_path / "none.toml"), *argv])
    out, err = capsys.readouterr()
    assert exit.value.code == 2 and out == ""
    assert "argument --json: takes no value" in err and "--report FILE" in err
    assert "none.toml" not in err


def test_exec_json_before_the_command_separator_is_the_flag() -> None:
    args = build_parser().parse_args(["exec", "--json", "--report", "r.json", "--", "echo", "hi"])
    assert args.json is True and args.report == "r.json"
    assert args.command == ["--", "echo", "hi"]


def test_dry_run_has_no_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-i", str(SEED), "apply", "--dry-run", "--json")
    assert code == 2 and out == ""
    assert "--dry-run prints a plan for people" in err


def test_report_file_is_the_envelope(tmp_path: Path) -> None:
    from nixherd.events import Outcome
    from nixherd.fleet.report import NodeResult, RunReport

    report = RunReport(
        command="exec",
        goal=None,
        flake=None,
        started_at=0.0,
        finished_at=1.5,
        nodes=(NodeResult("a", Outcome.OK, exit_code=0, output=Output.bounded("hi\n")),),
    )
    path = tmp_path / "sub" / "r.json"
    jsonout.write("exec", report.to_data(), str(path))
    data = jsonkit.document(path.read_text(), "exec")
    assert data["nodes"][0]["output"] == {"text": "hi\n", "bytes": 3, "truncated": False}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp file left


def test_output_within_the_bound_is_kept_whole() -> None:
    text = "x" * (OUTPUT_LIMIT - 1) + "\n"
    assert Output.bounded(text) == Output(text, OUTPUT_LIMIT, False)


def test_output_over_the_bound_keeps_its_end_from_a_line_start() -> None:
    text = "".join(f"line {i}\n" for i in range(20000))  # 228,890 bytes
    kept = Output.bounded(text)
    assert kept.truncated and kept.size == len(text)
    assert len(kept.text.encode()) <= OUTPUT_LIMIT
    assert text.endswith(kept.text) and kept.text.startswith("line ")
    assert f"\n{kept.text}" in text  # it starts where a line starts


def test_output_cut_never_splits_a_character() -> None:
    text = "é" * OUTPUT_LIMIT  # 2 bytes each, no newline: the cut falls inside nothing whole
    kept = Output.bounded(text)
    assert kept.truncated and kept.size == 2 * OUTPUT_LIMIT
    assert kept.text == "é" * (OUTPUT_LIMIT // 2)


class _Sample(TypedDict):
    """A sample."""

    name: str
    size: int | None
    extra: NotRequired[list[str]]
    blob: dict[str, Any]


def test_schemagen_derives_objects_strictly() -> None:
    defs: dict[str, Any] = {}
    assert schemagen._type(_Sample, defs) == {"$ref": "#/$defs/_Sample"}
    assert defs["_Sample"] == {
        "type": "object",
        "description": "A sample.",
        "properties": {
            "name": {"type": "string"},
            "size": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "extra": {"type": "array", "items": {"type": "string"}},
            "blob": {"type": "object"},
        },
        "required": ["name", "size", "blob"],
        "additionalProperties": False,
    }


def test_schemagen_refuses_what_it_cannot_describe() -> None:
    with pytest.raises(TypeError, match="no JSON Schema"):
        schemagen._type(set[str], {})
    with pytest.raises(TypeError, match="string keys"):
        schemagen._type(dict[int, str], {})

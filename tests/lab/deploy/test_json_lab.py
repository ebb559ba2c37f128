"""The JSON contract on real hosts: every command that writes JSON, run with --json against lab
hosts, its output (stdout alone) valid against the checked-in schema; `exec`'s output in its
report, bounded; `status --exit-code` (0 all match, 3 drift, 1 unreachable)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonkit
import pytest
import rtoml
from deploykit import Fleet, by_node, free_port, make_fleet
from labkit import LabFactory, LabHosts

from nixherd.cli import payloads
from nixherd.fleet.report import OUTPUT_LIMIT
from nixherd.run.process import Result

pytestmark = [pytest.mark.lab, pytest.mark.nix]

NAMES = ["lab-1", "lab-2"]


@pytest.fixture(scope="module")
def json_lab(lab_hosts: LabFactory) -> Iterator[LabHosts]:
    # Unreachable substituters (cache.nixos.org) would cost every build seconds of retries.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NIX_CONFIG", "substituters =")
        yield lab_hosts(len(NAMES))


@pytest.fixture
def fleet(tmp_path: Path, json_lab: LabHosts) -> Fleet:
    return make_fleet(tmp_path / "fleet", json_lab)


def explain(result: Result) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def with_entries(fleet: Fleet, area: str) -> None:
    """Give every node of the fleet's inventory a key, a data file and a health check."""
    inventory = rtoml.loads(fleet.inventory.read_text())
    for node in inventory["nodes"].values():
        node["keys"] = {"token": {"env": "NH_JSON_TOKEN", "dest": f"{area}/token"}}
        node["data"] = {
            "motd": {"path": f"{area}/motd", "format": "text", "template": "hi {name}\n"}
        }
        node["checks"] = {"alive": {"command": ["true"]}}
    fleet.inventory.write_text(rtoml.dumps(inventory))


class Runner:
    """Runs nixherd commands with --json on the fleet; remembers which commands it saw."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.seen: set[str] = set()

    def __call__(self, command: str, *args: str, code: int = 0) -> Any:
        # --json right after the command's words: before `-- CMD` (exec) and the options.
        words = command.split()
        result = self.fleet.nixherd(*words, "--json", *args)
        assert result.returncode == code, explain(result)
        self.seen.add(command)
        # The whole of stdout is the one document: nothing else was printed there.
        return jsonkit.document(result.stdout, command)


def test_every_command_writes_json_the_schema_accepts(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    area = f"/run/nh-json-{secrets.token_hex(4)}"
    monkeypatch.setenv("NH_JSON_TOKEN", "s3cret-token")
    fleet.write(NAMES)
    with_entries(fleet, area)
    run = Runner(fleet)
    try:
        assert [n["name"] for n in run("nodes")["nodes"]] == NAMES
        assert run("show", "lab-1")["node"]["keys"]["token"]["env"] == "NH_JSON_TOKEN"
        assert run("check")["selected"] == NAMES
        checked = run("check", "--eval")
        assert [e["node"] for e in checked["eval"]] == NAMES and checked["ok"]
        evaluated = run("eval")["nodes"]
        assert all(e["ok"] and e["out_path"] for e in evaluated)
        built = by_node(run("build"))
        assert built["lab-1"]["store_path"] == evaluated[0]["out_path"]
        diffs = run("diff")["nodes"]
        assert [d["node"] for d in diffs] == NAMES and all(d["diff"] for d in diffs)

        # apply: the report on stdout and in --report FILE are the same document.
        report_file = fleet.work / "apply.json"
        applied = run("apply", "--report", str(report_file))
        assert applied["ok"] and applied["goal"] == "switch"
        assert jsonkit.document(report_file.read_text(), "apply") == applied

        status = run("status")
        assert status["ok"] and status["evaluated"] and status["drifted"] == []
        assert {n["node"]: n["matches"] for n in status["nodes"]} == dict.fromkeys(NAMES, True)
        executed = by_node(run("exec", "--", "hostname"))
        assert executed["lab-2"]["output"] == {"text": "lab-2\n", "bytes": 6, "truncated": False}
        assert run("check-health")["counts"] == {"ok": 2}
        keys = run("keys upload")["nodes"]
        assert [k["node"] for k in keys] == NAMES  # uploaded by apply already, or now
        assert all(k["outcome"] in ("ok", "up to date") for k in keys)
        assert "s3cret-token" not in json.dumps(keys)
        assert {d["outcome"] for d in run("data diff")["nodes"]} == {"changes"}
        assert {d["outcome"] for d in run("data push")["nodes"]} == {"ok"}

        # A second generation, so that rollback has one to go back to.
        fleet.write(NAMES)
        with_entries(fleet, area)
        assert run("apply")["ok"]
        rolled = by_node(run("rollback"))
        assert rolled["lab-1"]["store_path"] == applied["nodes"][0]["store_path"]

        # `lab up` of hosts already up keeps them and says what runs.
        up = run("lab up", "--dir", fleet.lab.dir, "-n", str(len(NAMES)))["hosts"]
        assert [h["name"] for h in up][: len(NAMES)] == NAMES  # (the shared lab may have more)
        hosts = run("lab status", "--dir", fleet.lab.dir)["hosts"]
        assert [h["name"] for h in hosts][: len(NAMES)] == NAMES
        assert all(h["state"] == "up" for h in hosts)
    finally:
        for name in NAMES:
            fleet.lab.ssh(name, "rm", "-rf", "--", area, check=False)
    # Every command of the contract was run here: a new one must be added to this test.
    # `terraform sync` needs a Terraform source: tests/unit/cli/test_terraform_sync.py runs it
    # with a real Terraform and checks its document against the same schema.
    assert run.seen == set(payloads.payloads()) - {"terraform sync"}


def test_exec_report_holds_each_nodes_output_bounded(fleet: Fleet) -> None:
    fleet.write(NAMES)
    script = 'if [ "$(hostname)" = lab-1 ]; then seq 1 20000; exit 3; fi; echo small'
    report = fleet.work / "exec.json"
    result = fleet.nixherd("exec", "--json", "--report", str(report), "--", "sh", "-c", script)
    assert result.returncode == 1, explain(result)
    nodes = by_node(jsonkit.document(result.stdout, "exec"))
    assert jsonkit.document(report.read_text(), "exec")["nodes"] == list(nodes.values())
    whole = "".join(f"{i}\n" for i in range(1, 20001))  # 108,894 bytes
    big = nodes["lab-1"]
    assert big["exit_code"] == 3 and big["result"] == "failed"
    assert big["output"]["truncated"] is True and big["output"]["bytes"] == len(whole)
    assert len(big["output"]["text"]) <= OUTPUT_LIMIT
    assert whole.endswith(big["output"]["text"]) and big["output"]["text"].endswith("20000\n")
    assert f"\n{big['output']['text']}" in whole  # cut at a line start
    assert nodes["lab-2"]["output"] == {"text": "small\n", "bytes": 6, "truncated": False}
    assert nodes["lab-2"]["exit_code"] == 0
    # Without --json, stdout has the output lines (the JSON went to the file only).
    plain = fleet.nixherd("exec", "--on", "lab-2", "--report", str(report), "--", "echo", "x")
    assert plain.stdout == "lab-2 | x\n", explain(plain)
    assert by_node(jsonkit.document(report.read_text(), "exec"))["lab-2"]["output"]["text"] == (
        "x\n"
    )


def test_status_exit_code_tells_drift_from_unreachable(fleet: Fleet) -> None:
    fleet.write(NAMES)
    result, _ = fleet.apply("switch")
    assert result.returncode == 0, explain(result)

    matching = fleet.nixherd("status", "--exit-code", "--json")
    assert matching.returncode == 0, explain(matching)
    assert jsonkit.document(matching.stdout, "status")["ok"] is True

    fleet.write(NAMES)  # a new version: both nodes now run something else than the flake builds
    drifted = fleet.nixherd("status", "--exit-code", "--json")
    assert drifted.returncode == 3, explain(drifted)
    data = jsonkit.document(drifted.stdout, "status")
    assert data["drifted"] == NAMES and data["unreachable"] == [] and data["ok"] is False
    assert "2 of 2 nodes do not run the flake's build: lab-1, lab-2" in drifted.stderr
    # Without --exit-code, drift is shown, not an error (as before).
    assert fleet.nixherd("status").returncode == 0

    # An unreachable node is a failed node: exit 1, drift or not.
    fleet.write(NAMES, extra_nodes={"gone": {"host": "127.0.0.1", "port": free_port()}})
    down = fleet.nixherd("status", "--exit-code", "--json")
    assert down.returncode == 1, explain(down)
    data = jsonkit.document(down.stdout, "status")
    assert data["unreachable"] == ["gone"] and data["drifted"] == NAMES
    assert "1 of 3 nodes unreachable: gone" in down.stderr

    no_eval = fleet.nixherd("status", "--exit-code", "--no-eval")
    assert no_eval.returncode == 2 and "--exit-code compares with the flake" in no_eval.stderr

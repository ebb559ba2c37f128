"""fleet.py without nix: the one `nix eval` argv, its answer decoded, Nix's messages cleaned up.

The evaluation itself (tryEval, isolating failures) runs against the real nix in
tests/nix/test_fleet_eval.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from nixherd.errors import CommandError
from nixherd.fleet import evaluate as fleet
from nixherd.run import nix, process
from nixherd.run.process import Result


def fake_nix(monkeypatch: pytest.MonkeyPatch, answer: Any) -> list[tuple[str, ...]]:
    seen: list[tuple[str, ...]] = []

    def fake(argv: Sequence[str], **_kw: Any) -> Result:
        seen.append(tuple(argv))
        return Result(tuple(argv), 0, json.dumps(answer), "")

    monkeypatch.setattr(process, "run", fake)
    return seen


def test_one_nix_eval_for_all_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = {
        "web-1": {"drv": "/nix/store/aaa-nixos-system-web-1.drv", "out": "/nix/store/bbb-web-1"},
        "db.eu": {"error": "no nixosConfigurations.db.eu in the flake"},
    }
    seen = fake_nix(monkeypatch, answer)
    results = fleet.eval_nodes("/srv/fleet", ["web-1", "db.eu", "web-1"])
    (argv,) = seen
    assert argv[:7] == (
        "nix",
        "--extra-experimental-features",
        "nix-command flakes",
        "eval",
        "--json",
        "/srv/fleet#nixosConfigurations",
        "--apply",
    )
    assert len(argv) == 8
    # The names reach Nix as string literals, each once.
    assert argv[7].rstrip().endswith('[ "web-1" "db.eu" ])')
    assert list(results) == ["web-1", "db.eu"]
    assert results["web-1"] == fleet.NodeEval(
        "web-1", "/nix/store/aaa-nixos-system-web-1.drv", "/nix/store/bbb-web-1"
    )
    assert results["web-1"].ok
    assert not results["db.eu"].ok
    assert results["db.eu"].to_data() == {
        "name": "db.eu",
        "ok": False,
        "drv_path": None,
        "out_path": None,
        "error": "no nixosConfigurations.db.eu in the flake",
    }


def test_names_are_quoted_as_nix_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    odd = 'x"${builtins.throw "no"}\\'
    seen = fake_nix(monkeypatch, {odd: {"error": "absent"}})
    fleet.eval_nodes("path:/f", [odd])
    assert seen[0][7].rstrip().endswith(f"[ {nix.nix_string(odd)} ])")


def test_no_names_no_nix(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = fake_nix(monkeypatch, {})
    assert fleet.eval_nodes("/srv/fleet", []) == {}
    assert seen == []


def test_huge_selections_are_split_under_the_argv_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [f"node-{i:05}-" + "x" * 50 for i in range(10_000)]
    seen: list[list[str]] = []

    def fake(argv: Sequence[str], **_kw: Any) -> Result:
        apply = argv[-1]
        assert len(apply.encode()) < 128 * 1024  # Linux's MAX_ARG_STRLEN
        listed = json.loads("[" + apply[apply.rindex("[ ") + 2 : -3].replace('" "', '", "') + "]")
        seen.append(listed)
        answer = {name: {"drv": f"/nix/store/{name}.drv", "out": "/nix/store/o"} for name in listed}
        return Result(tuple(argv), 0, json.dumps(answer), "")

    monkeypatch.setattr(process, "run", fake)
    results = fleet.eval_nodes("/srv/fleet", names)
    assert 2 <= len(seen) <= 10
    assert [name for chunk in seen for name in chunk] == names
    assert list(results) == names
    assert results[names[-1]].drv_path == f"/nix/store/{names[-1]}.drv"


def test_timeout_is_raised_not_bisected(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float | None] = []

    def fake(argv: Sequence[str], **kw: Any) -> Result:
        calls.append(kw.get("timeout"))
        raise CommandError(argv, None, "")

    monkeypatch.setattr(process, "run", fake)
    with pytest.raises(CommandError):
        fleet.eval_nodes("/srv/fleet", ["a", "b", "c"], timeout=30)
    assert calls == [30]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (
            "error: nixherd: node 'db': module 'x.nix' not found (looked for /nix/store/s/x.nix)\n"
            "(use '--show-trace' to show detailed location information)\n",
            "nixherd: node 'db': module 'x.nix' not found (looked for /nix/store/s/x.nix)\n"
            "(use '--show-trace' to show detailed location information)",
        ),
        # stdout (partial JSON) comes before stderr; a warning before the error.
        (
            "{\"drv\":warning: Git tree is dirty\nerror: attribute 'nope' missing\n\n"
            "       at /nix/store/s/db.nix:1:3:\n",
            "attribute 'nope' missing\n\n       at /nix/store/s/db.nix:1:3:",
        ),
        ("", "nix eval failed without a message"),
        ("Killed\n", "Killed"),
    ],
)
def test_error_message(output: str, message: str) -> None:
    assert fleet.error_message(output) == message


def test_flake_for_is_the_inventory_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "flake.nix").write_text("{ outputs = _: { }; }")
    monkeypatch.chdir(tmp_path)
    assert fleet.flake_for("inventory.toml") == str(tmp_path)
    assert fleet.flake_for(str(tmp_path / "inventory.toml")) == str(tmp_path)
    # Without a flake.nix beside it, nix would go looking for one further up: refuse.
    with pytest.raises(fleet.FlakeError, match=r"no flake.nix next to the inventory in /"):
        fleet.flake_for("sub/inventory.toml")


def test_the_error_is_the_first_line_that_starts_with_error() -> None:
    # A substituter's retry warning holds "error:" too; Nix's error is the line that starts so.
    output = (
        "warning: error: unable to download 'https://cache.nixos.org/nix-cache-info': "
        "Couldn't resolve host name (6); retrying in 291 ms\n"
        "error: attribute 'http_prot' missing\n\n       at /nix/store/s-source/web.nix:4:5:\n"
    )
    assert fleet.error_message(output) == (
        "attribute 'http_prot' missing\n\n       at /nix/store/s-source/web.nix:4:5:"
    )


def frame(i: int) -> list[str]:
    """One trace frame as Nix prints it: what, where, and four lines of code."""
    return [
        f"       … while evaluating the attribute 'a{i}'",
        "",
        f"       at /nix/store/s-source/m{i}.nix:{i}:3:",
        "",
        f"           {i}|   a{i} = b;",
        "             |   ^",
        "",
    ]


HINT = "(use '--show-trace' to show detailed location information)"


def test_a_long_trace_is_bounded_and_keeps_every_position() -> None:
    # Nix 2.8: the error, its position and code, then the trace.
    head = ["error: attribute 'x' missing", "", "       at /nix/store/s-source/web.nix:4:5:"]
    lines = head + [line for i in range(1, 41) for line in frame(i)]
    message = fleet.error_message("\n".join(lines)).splitlines()
    assert len(message) <= fleet.MAX_ERROR_LINES + fleet._MAX_FRAME_LINES
    assert message[0] == "attribute 'x' missing"
    assert "       at /nix/store/s-source/web.nix:4:5:" in message
    for i in range(1, 41):
        assert f"       at /nix/store/s-source/m{i}.nix:{i}:3:" in message
    assert any("lines of Nix's message left out" in line for line in message)
    # Under the bound, the message is Nix's whole.
    whole = "\n".join(["attribute 'x' missing", *lines[1:40]]).rstrip()
    assert fleet.error_message("\n".join(lines[:40])) == whole


def test_a_long_trace_of_newer_nix_keeps_the_error_at_its_end() -> None:
    # Nix 2.16+: a bare "error:", the trace, then the error itself last.
    lines = ["error:", *[line for i in range(1, 41) for line in frame(i)]]
    lines += ["       error: attribute 'x' missing", "", "       at /f/web.nix:4:5:"]
    message = fleet.error_message("\n".join(lines)).splitlines()
    assert message[-3:] == ["       error: attribute 'x' missing", "", "       at /f/web.nix:4:5:"]
    assert message[0].startswith("       … while evaluating")


def test_a_huge_trace_keeps_its_first_and_last_frames() -> None:
    lines = ["error: deep", *[line for i in range(1, 1001) for line in frame(i)], HINT]
    message = fleet.error_message("\n".join(lines)).splitlines()
    assert len(message) <= fleet.MAX_ERROR_LINES + fleet._MAX_FRAME_LINES
    assert message[-1] == HINT
    assert "       at /nix/store/s-source/m6.nix:6:3:" in message
    assert "       at /nix/store/s-source/m994.nix:994:3:" in message
    assert any(line.endswith("more trace lines") for line in message)

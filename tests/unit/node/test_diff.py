"""diff: store path names, both JSON shapes of `nix path-info`, closure comparison, plan text."""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from nixherd.node.diff import (
    ClosureDiff,
    VersionChange,
    diff_closures,
    human_size,
    node_diff,
    plan_text,
    split_name,
)
from nixherd.run import nix, process
from nixherd.run.process import Result
from nixherd.run.ssh import Connection, Target

H = "0" * 32


def sp(name: str, digit: str = "0") -> str:
    return f"/nix/store/{digit * 32}-{name}"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hello-2.12.1", ("hello", "2.12.1")),
        ("python3.11-requests-2.31.0", ("python3.11-requests", "2.31.0")),
        ("openssl-3.0.13-bin", ("openssl", "3.0.13")),
        ("openssl-3.0.13-dev", ("openssl", "3.0.13")),
        # NixOS toplevels: "nixos-system-<system.name>-<system.nixos.label>" (nixpkgs
        # nixos/modules/system/activation/top-level.nix), the host name may hold "-<digit>".
        (
            "nixos-system-web-1-24.05.20240101.abcdef",
            ("nixos-system-web-1", "24.05.20240101.abcdef"),
        ),
        ("nixos-system-lab-1-4", ("nixos-system-lab-1", "4")),
        ("nixos-system-alpha-2", ("nixos-system-alpha", "2")),
        ("nixos-system-app-10-0-1-2-24.11pre-git", ("nixos-system-app-10-0-1-2", "24.11pre-git")),
        ("nixos-system-hk-mytag-24.05.1", ("nixos-system-hk-mytag", "24.05.1")),
        # A file named with a number is no package version.
        ("unit-container@web-1.service", ("unit-container@web-1.service", "")),
        ("unit-getty-2.target", ("unit-getty-2.target", "")),
        ("zz-50.conf", ("zz-50.conf", "")),
        ("etc", ("etc", "")),
        ("unit-nginx.service", ("unit-nginx.service", "")),
        ("lab-payload-node-web", ("lab-payload-node-web", "")),
        ("source", ("source", "")),
    ],
)
def test_split_name(name: str, expected: tuple[str, str]) -> None:
    assert split_name(f"/nix/store/{H}-{name}") == expected


def test_a_nixos_system_is_one_package_whose_version_changes() -> None:
    diff = diff_closures(
        {sp("nixos-system-lab-1-4", "a"): 10},
        {sp("nixos-system-lab-1-5", "b"): 10},
        before_system=sp("nixos-system-lab-1-4", "a"),
        after_system=sp("nixos-system-lab-1-5", "b"),
    )
    assert diff.changed == (VersionChange("nixos-system-lab-1", ("4",), ("5",)),)
    assert diff.added == diff.removed == ()


def test_parse_path_info_list_shape_of_nix_2_8() -> None:
    text = json.dumps(
        [
            {"path": sp("a-1"), "narSize": 100, "references": []},
            {"path": sp("b-2"), "narSize": 20, "closureSize": 120},
        ]
    )
    assert nix.parse_path_info(text) == {sp("a-1"): 100, sp("b-2"): 20}


def test_parse_path_info_object_shape_of_nix_2_19() -> None:
    text = json.dumps(
        {
            sp("a-1"): {"narSize": 100, "references": []},
            sp("b-2"): {"narSize": 20},
            sp("gone-3"): None,
        }
    )
    assert nix.parse_path_info(text) == {sp("a-1"): 100, sp("b-2"): 20}


def test_parse_path_info_refuses_other_shapes() -> None:
    with pytest.raises(ValueError):
        nix.parse_path_info("42")


def test_path_info_argv() -> None:
    assert nix.path_info_argv(["/nix/store/x"], store="ssh://root@h") == [
        "nix",
        "--extra-experimental-features",
        "nix-command flakes",
        "path-info",
        "--recursive",
        "--json",
        "--store",
        "ssh://root@h",
        "/nix/store/x",
    ]


def test_diff_closures_finds_added_removed_changed_and_size() -> None:
    before = {
        sp("system-1", "a"): 10,
        sp("hello-2.12", "b"): 1000,
        sp("oldtool-1.0", "c"): 500,
        sp("etc", "d"): 50,
        sp("shared-1.0", "e"): 4000,
    }
    after = {
        sp("system-1", "f"): 10,
        sp("hello-2.13", "g"): 1100,
        sp("payload", "h"): 5 * 1024 * 1024,
        sp("etc", "i"): 60,
        sp("shared-1.0", "e"): 4000,
    }
    diff = diff_closures(
        before, after, before_system=sp("system-1", "a"), after_system=sp("system-1", "f")
    )
    assert diff.added == (("payload", ("",)),)
    assert diff.removed == (("oldtool", ("1.0",)),)
    assert diff.changed == (VersionChange("hello", ("2.12",), ("2.13",)),)
    assert diff.rebuilt == ("etc", "system")
    assert (diff.paths_added, diff.paths_removed) == (4, 4)
    assert diff.size_change == 5 * 1024 * 1024 + 100 + 10 - 500
    assert not diff.identical
    data = diff.to_data()
    assert data["changed"] == {"hello": {"before": ["2.12"], "after": ["2.13"]}}
    assert data["added"] == {"payload": [""]}


def test_first_deploy_adds_everything() -> None:
    after = {sp("a-1"): 1, sp("b", "1"): 2}
    diff = diff_closures({}, after, before_system=None, after_system=sp("a-1"))
    assert [name for name, _ in diff.added] == ["a", "b"]
    assert diff.size_before == 0 and diff.size_after == 3


def test_plan_text() -> None:
    same = diff_closures(
        {sp("s-1"): 5}, {sp("s-1"): 5}, before_system=sp("s-1"), after_system=sp("s-1")
    )
    bumped = diff_closures(
        {sp("s-1"): 5, sp("app-1.0", "1"): 2048},
        {sp("s-1", "2"): 5, sp("app-1.1", "3"): 4096, sp("data", "4"): 100},
        before_system=sp("s-1"),
        after_system=sp("s-1", "2"),
    )
    text = plan_text({"a": same, "b": bumped, "c": OSError("no route to host")})
    assert text == (
        f"a: up to date ({sp('s-1')})\n"
        f"b: {sp('s-1')} -> {sp('s-1', '2')}\n"
        "  3 paths added, 2 removed; closure 2.0 KiB -> 4.1 KiB (+2.1 KiB)\n"
        "  ~ app: 1.0 -> 1.1\n"
        "  + data\n"
        "  * rebuilt: s\n"
        "c: cannot diff: no route to host\n"
        "1 of 3 nodes change.\n"
    )


def test_human_size() -> None:
    assert human_size(0) == "0 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(-3 * 1024 * 1024, signed=True) == "-3.0 MiB"
    assert human_size(5 * 1024**4) == "5120.0 GiB"


def test_node_diff_reads_the_node_then_both_closures(monkeypatch: pytest.MonkeyPatch) -> None:
    current, new = sp("sys-1", "a"), sp("sys-2", "b")
    calls: list[tuple[list[str], dict[str, Any]]] = []

    def fake_run(argv: Sequence[str], **kwargs: Any) -> Result:
        calls.append((list(argv), kwargs))
        if argv[0] == "ssh":
            return Result(tuple(argv), 0, current + "\n", "")
        if "--store" in argv:
            return Result(tuple(argv), 0, json.dumps([{"path": current, "narSize": 7}]), "")
        return Result(tuple(argv), 0, json.dumps({new: {"narSize": 9}}), "")

    monkeypatch.setattr(process, "run", fake_run)
    conn = Connection(Target(node="n", host="10.1.1.1", port=2222), control_dir="/tmp/nh-y")
    diff = node_diff(conn, new)
    assert (diff.before, diff.after, diff.size_change) == (current, new, 2)
    ssh_call, local_call, remote_call = calls
    assert shlex.split(ssh_call[0][-1])[:2] == ["sh", "-c"]
    assert local_call[0][-1] == new and "--store" not in local_call[0]
    assert remote_call[0][-3:] == ["--store", "ssh://root@10.1.1.1", current]
    # The node's store is reached through the same ssh options (port, ControlMaster).
    assert "-p 2222" in remote_call[1]["env"]["NIX_SSHOPTS"]


def test_node_diff_of_the_running_system_is_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    path = sp("sys-1")
    calls: list[list[str]] = []

    def fake_run(argv: Sequence[str], **_kwargs: Any) -> Result:
        calls.append(list(argv))
        if argv[0] == "ssh":
            return Result(tuple(argv), 0, path + "\n", "")
        return Result(tuple(argv), 0, json.dumps([{"path": path, "narSize": 3}]), "")

    monkeypatch.setattr(process, "run", fake_run)
    diff = node_diff(Connection(Target(node="n", host="h"), control_dir="/tmp/nh-z"), path)
    assert diff.identical and diff.size_change == 0
    assert len(calls) == 2  # no remote closure query


@pytest.mark.nix
def test_real_path_info_of_a_local_build(tmp_path: Path) -> None:
    if shutil.which("nix-build") is None:
        pytest.skip("nix not installed")
    expr = tmp_path / "two.nix"
    expr.write_text(
        """
        let
          dep = derivation { name = "dep-1.2"; system = builtins.currentSystem; builder = "/bin/sh";
                             args = [ "-c" "echo dep > $out" ]; };
        in derivation { name = "top-3.4"; system = builtins.currentSystem; builder = "/bin/sh";
                        args = [ "-c" "echo ${dep} > $out" ]; }
        """
    )
    built = process.run(
        ["nix-build", "--no-out-link", "--option", "substituters", "", str(expr)]
    ).stdout.strip()
    sizes = nix.closure_sizes([built])
    assert built in sizes and len(sizes) == 2
    assert {split_name(p) for p in sizes} == {("top", "3.4"), ("dep", "1.2")}
    assert all(size > 0 for size in sizes.values())
    assert isinstance(diff_closures({}, sizes, before_system=None, after_system=built), ClosureDiff)

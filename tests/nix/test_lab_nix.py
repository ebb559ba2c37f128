"""nix/lab.nix: the lab's mkSystem merges modules as NixOS would (for what the lab needs), records
every option, checks its own, and builds a NixOS-shaped toplevel with the closure asked for."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from labsystems import build, config, system_expr

from nixherd.errors import CommandError
from nixherd.run import nix, process

pytestmark = pytest.mark.nix


def test_merge_later_wins_sets_merge_lists_concatenate() -> None:
    got = config(
        """
        { networking.hostName = "a"; services.x.enable = true; environment.list = [ 1 ]; }
        { networking.hostName = "b"; services.x.port = 80; environment.list = [ 2 ]; }
        """
    )
    assert got["networking"] == {"hostName": "b"}
    assert got["services"] == {"x": {"enable": True, "port": 80}}
    assert got["environment"] == {"list": [1, 2]}


def test_priorities_conditions_imports_and_arguments() -> None:
    got = config(
        """
        ({ node, lib, pkgs, ... }: {
          networking.hostName = lib.mkDefault "default";
          lab.version = lib.mkForce "forced";
          lab.files.a = node.greeting;
        })
        { networking.hostName = "plain"; lab.version = "later"; }
        ({ config, lib, ... }: {
          imports = [ { lab.files.b = "imported"; } ];
          config = lib.mkIf (config.networking.hostName == "plain") {
            lab.files.c = "if ${config.networking.hostName}";
          };
        })
        ({ lib, ... }: {
          lab.files = lib.mkMerge [ { d = "m1"; } (lib.mkIf false { e = "no"; }) ];
        })
        """,
        special='{ node = { greeting = "hi"; }; }',
    )
    assert got["networking"]["hostName"] == "plain"  # mkDefault loses to a plain value
    assert got["lab"]["version"] == "forced"  # mkForce beats a later plain value
    assert got["lab"]["files"] == {"a": "hi", "b": "imported", "c": "if plain", "d": "m1"}


def test_pkgs_is_no_package_set() -> None:
    with pytest.raises(CommandError, match="`pkgs` is not available"):
        config("({ pkgs, ... }: { networking.hostName = pkgs.hello; })")


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ('{ lab.version = "1 2"; }', "lab.version"),
        ('{ lab.files."../etc/passwd" = "x"; }', "lab.files"),
        ("{ lab.files.a = 1; }", "lab.files"),
        ('{ lab.service.port = "80"; }', "lab.service.port"),
        ("{ lab.payload.nodeMB = -1; }", "lab.payload"),
        ('{ lab.fail.hang = "yes"; }', "lab.fail"),
        ("{ lab.fail.boot = 1; }", "lab.fail"),
        ('{ networking.hostName = "a b"; }', "networking.hostName"),
    ],
)
def test_lab_options_are_checked(module: str, message: str) -> None:
    expr = f"({system_expr(module)}).config.system.build.toplevel.drvPath"
    with pytest.raises(CommandError, match=message):
        nix.eval_expr_json(expr)


def test_toplevel_is_nixos_shaped() -> None:
    out = build(
        """
        {
          networking.hostName = "web-1";
          lab.version = "2.0";
          lab.files."nginx/site.conf" = "server {}\\n";
          lab.service.port = 18080;
          boot.isContainer = true;
          services.nginx.virtualHosts."a.example".root = ./.;
        }
        """
    )
    assert out.name.endswith("-nixos-system-web-1-2.0")
    executables = ("activate", "bin/switch-to-configuration", "sw/bin/nixos-version")
    for executable in (*executables, "sw/bin/lab-responder", "sw/bin/lab-wait-port"):
        assert os.access(out / executable, os.X_OK), executable
        assert "@out@" not in (out / executable).read_text()
    assert f'OUT = "{out}"' in (out / "activate").read_text()
    assert (out / "nixos-version").read_text() == "2.0"
    assert (out / "system").read_text() == "x86_64-linux"
    assert (out / "etc/nginx/site.conf").read_text() == "server {}\n"
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["boot"] == {"isContainer": True}
    assert recorded["services"]["nginx"]["virtualHosts"]["a.example"]["root"].startswith("/")
    assert "build" not in recorded.get("system", {})
    # Safe to run here: they print, or refuse before touching anything.
    version = process.run([str(out / "sw/bin/nixos-version")]).stdout
    assert version == "2.0\n"
    as_json = process.run([str(out / "sw/bin/nixos-version"), "--json"]).stdout
    assert json.loads(as_json) == {"nixosVersion": "2.0"}
    for words in (["nope"], []):
        usage = process.run([str(out / "bin/switch-to-configuration"), *words], check=False)
        assert usage.returncode == 1
        assert "Usage: switch-to-configuration [switch|boot|test|dry-activate]" in usage.stderr


def test_payload_sizes_sharing_and_closure() -> None:
    def node(name: str) -> Path:
        return build(
            f'{{ networking.hostName = "{name}"; lab.payload = {{ sharedMB = 1; nodeMB = 2; }}; }}'
        )

    one, two = node("n1"), node("n2")
    payload_one = (one / "lab/payload").read_text().split()
    payload_two = (two / "lab/payload").read_text().split()
    shared = [p for p in payload_one if "-lab-payload-shared-" in p]
    assert shared and shared == [p for p in payload_two if "-lab-payload-shared-" in p]
    own_one = next(p for p in payload_one if "-lab-payload-n1-" in p)
    own_two = next(p for p in payload_two if "-lab-payload-n2-" in p)
    assert Path(shared[0]).stat().st_size == 1 << 20
    assert Path(own_one).stat().st_size == 2 << 20
    assert Path(own_one).read_bytes()[:4096] != Path(own_two).read_bytes()[:4096]
    closure = process.run(["nix-store", "--query", "--requisites", str(one)]).stdout.split()
    assert set(closure) == {str(one), shared[0], own_one}


def test_no_payload_no_service_no_extras() -> None:
    out = build('{ networking.hostName = "bare"; }')
    assert (out / "lab/payload").read_text() == ""
    assert list((out / "etc").rglob("*")) == [out / "etc/systemd", out / "etc/systemd/system"]
    assert not list((out / "lab").glob("fail-*"))
    closure = process.run(["nix-store", "--query", "--requisites", str(out)]).stdout.split()
    assert closure == [str(out)]


def test_fail_flags_become_marker_files() -> None:
    out = build('{ networking.hostName = "f"; lab.fail = { boot = true; hang = true; }; }')
    assert sorted(p.name for p in (out / "lab").glob("fail-*")) == ["fail-boot", "fail-hang"]

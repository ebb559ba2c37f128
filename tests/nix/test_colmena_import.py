"""`nixherd import colmena`, evaluated by the real nix: the seed fleet's original hive
(examples/seed-fleet/before, a mkColmenaRole helper plus hand-written machines) becomes an
inventory whose nodes, through mkFleet's own Colmena output, have the same names and deployment
fields as the original; and the evaluator follows Colmena's hive format (defaults, meta,
function modules, imports, mkIf/mkDefault, key names only) without nixpkgs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from nixfleet import REPO, STUB_MK_SYSTEM, STUB_SYSTEM, write_fleet

from nixherd.cli import main
from nixherd.inventory import load
from nixherd.run import nix

pytestmark = pytest.mark.nix

BEFORE = REPO / "examples" / "seed-fleet" / "before"

# Colmena's defaults for what a hive leaves unset (nix-community/colmena
# src/nix/hive/options.nix, deploymentOptions): targetHost the node's name, targetUser root,
# targetPort null (ssh decides, as an inventory without a port), tags none.
DEPLOYMENT = (
    "h: builtins.mapAttrs (name: v: let d = v.deployment or { }; in {"
    ' targetHost = d.targetHost or name; targetUser = d.targetUser or "root";'
    " targetPort = d.targetPort or null;"
    " tags = d.tags or [ ]; sshOptions = d.sshOptions or [ ]; })"
    ' (removeAttrs h [ "meta" "defaults" "network" ])'
)


def stub_nixpkgs(root: Path) -> Path:
    """A nixpkgs stand-in flake (no nixpkgs can be fetched here): lib.nixosSystem is the tests'
    stub, and `import nixpkgs { ... }` gives an empty set."""
    root.mkdir(parents=True)
    shutil.copy(STUB_SYSTEM, root / "stub_system.nix")
    (root / "flake.nix").write_text(
        "{ outputs = { self }: { lib.nixosSystem = import ./stub_system.nix; }; }\n"
    )
    (root / "default.nix").write_text("{ ... }: { }\n")
    return root


def locked(flake: Path, nixpkgs: Path) -> Path:
    """`flake` with its nixpkgs input pointed at the stand-in, and locked (a real fleet's flake
    has a flake.lock; Nix reads a flake for builtins.getFlake only through one)."""
    text = (flake / "flake.nix").read_text()
    (flake / "flake.nix").write_text(
        text.replace("github:NixOS/nixpkgs/nixos-24.05", f"path:{nixpkgs}")
    )
    subprocess.run(nix.nix_argv("flake", "lock", f"path:{flake}"), check=True, capture_output=True)
    return flake


def deployments(ref: str, attr: str = "colmena") -> dict[str, Any]:
    result: dict[str, Any] = nix.eval_json(f"{ref}#{attr}", apply=DEPLOYMENT)
    return result


def test_the_seed_hive_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = tmp_path / "before"
    shutil.copytree(BEFORE, before)
    locked(before, stub_nixpkgs(tmp_path / "nixpkgs"))
    out = tmp_path / "imported.toml"
    assert main(["import", "colmena", "--flake", str(before), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "6 nodes, 1 roles imported" in err
    text = out.read_text()
    # What it could not carry: on stderr and at the top of the file.
    assert "meta.specialArgs.inputs: pass it in mkFleet's `specialArgs`" in err
    assert "#   - meta.specialArgs.inputs: pass it in mkFleet's `specialArgs`" in text
    inventory = load(out)
    # The helper's targets became the role's fan-out targets, one line each.
    assert '  { host = "198.51.100.12", port = 22, tags = ["batch-vps"] },\n' in text
    assert inventory.nodes["nixos-vps-198-51-100-12"].source == "roles.nixos-vps.targets[1]"
    assert inventory.nodes["nixos-hk"].role == "nixos-vps"
    assert inventory.nodes["nixos-ws"].modules == ("hosts/nixos-ws",)

    original = deployments(f"path:{before}")
    files = {
        str(p.relative_to(before)): p.read_text()
        for p in sorted((before / "hosts").rglob("*"))
        if p.is_file()
    }
    fleet = write_fleet(tmp_path / "after", text, files, STUB_MK_SYSTEM)
    imported = deployments(fleet.ref)
    assert sorted(imported) == sorted(original) == sorted(inventory.nodes)
    assert imported == original
    # The machines' own settings came along as `config`, the modules as `modules`.
    hostname = fleet.eval("nixosConfigurations.nixos-hk.config.networking.hostName")
    assert hostname == "nixos-hk"
    assert fleet.eval("nixosConfigurations.nixos-vps.config.boot.isContainer") is True
    assert fleet.eval("nixosConfigurations.nixos-vps-198-51-100-13.config.time.timeZone") == (
        "Asia/Hong_Kong"
    )


HIVE = """{
  outputs = { self }: {
    colmena = {
      meta = { specialArgs = { domain = "example.com"; }; nodeSpecialArgs.db.rack = 7; };
      defaults = { pkgs, lib, ... }: {
        deployment.tags = [ "all" ];
        deployment.targetUser = lib.mkDefault "deploy";
        environment.systemPackages = [ pkgs.vim ];
      };
      web = { name, domain, config, lib, ... }: {
        imports = [ ./common.nix ];
        deployment = {
          targetHost = "${name}.${domain}";
          targetPort = 2222;
          sshOptions = [ "-o" "ConnectTimeout=5" "-oServerAliveInterval=9" "-J" "bastion" "-v" ];
          keys.token = { text = throw "the key's text was evaluated"; };
          keys.other.keyCommand = [ "pass" "show" "x" ];
          buildOnTarget = true;
        };
        services.thing = lib.mkIf config.services.other.enable { port = 1; };
      };
      db = [
        { deployment.targetHost = "10.0.0.5"; deployment.tags = lib.mkForce [ "db" ]; }
        ({ config, ... }: { deployment.targetUser = config.users.admin; users.admin = "dba"; })
      ];
      local = { deployment.targetHost = null; };
      odd = { pkgs, ... }: { deployment.targetHost = pkgs.lib.x; };
      broken = { lib, ... }: { deployment.targetHost = lib.thisDoesNotExist "x"; };
    };
  };
}
"""

# `lib` for the `db` node's list: Colmena gives modules nixpkgs' lib; here only what a test needs.
HIVE = HIVE.replace(
    "outputs = { self }: {",
    'outputs = { self }: let lib = { mkForce = c: { _type = "override"; priority = 50; '
    "content = c; }; }; in {",
)

COMMON = """{ lib, ... }: {
  imports = [ ./deeper.nix ];
  deployment.tags = lib.mkIf true [ "common" ];
}
"""


def test_the_hive_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flake = tmp_path / "hive"
    flake.mkdir()
    (flake / "flake.nix").write_text(HIVE)
    (flake / "common.nix").write_text(COMMON)
    (flake / "deeper.nix").write_text('{ deployment.tags = [ "deep" ]; }\n')
    subprocess.run(nix.nix_argv("flake", "lock", f"path:{flake}"), check=True, capture_output=True)
    assert main(["import", "colmena", "--flake", str(flake), "-o", "-"]) == 0
    captured = capsys.readouterr()
    text, err = captured.out, captured.err
    assert "the key's text was evaluated" not in text + err
    inventory = load(_write(tmp_path, text))
    web = inventory.nodes["web"]
    assert (web.host, web.port, web.user) == ("web.example.com", 2222, "deploy")
    # NixOS concatenates list definitions in its modules' order: the defaults and the node (the
    # modules Colmena gives), then what they import, breadth first (nixpkgs lib/modules.nix).
    assert web.tags == ("all", "common", "deep")
    assert web.ssh_options == ("ConnectTimeout=5", "ServerAliveInterval=9", "ProxyJump=bastion")
    assert web.modules == ("common.nix",)
    db = inventory.nodes["db"]
    # mkForce beats the defaults' tags; a value read back from `config` (the fixpoint).
    assert (db.host, db.user, db.tags) == ("10.0.0.5", "dba", ("db",))
    for line in [
        'web: deployment.sshOptions word "-v" (no ssh_options form)',
        "web: deployment.keys.token: add it as a key of the node",
        "web: deployment.keys.other: add it as a key of the node",
        "web: deployment.buildOnTarget: use `nixherd apply --build-on-target`",
        'web: its own setting "services" is no plain data',
        "db: meta.nodeSpecialArgs.rack: make it a var",
        "local: not imported: targetHost is null",
        "odd: not imported: its deployment could not be evaluated without nixpkgs",
        "broken: not imported: its deployment does not evaluate: attribute 'thisDoesNotExist' "
        "missing",
        "meta.specialArgs.domain: pass it in mkFleet's `specialArgs`",
    ]:
        assert line in err
        assert line.split(":", 1)[1][:30] in text  # and listed in the file's comment
    assert sorted(inventory.nodes) == ["db", "web"]


def test_an_evaluated_colmena_hive(tmp_path: Path) -> None:
    # colmenaHive (colmena.lib.makeHive) is a hive Colmena evaluated: its deploymentConfig is
    # read as is (Colmena itself needs nixpkgs for it; a stand-in gives it here).
    flake = tmp_path / "hive"
    flake.mkdir()
    (flake / "flake.nix").write_text(
        """{ outputs = { self }: { colmenaHive = { __schema = "v0.5"; deploymentConfig = {
          a = { targetHost = "10.0.0.1"; targetUser = "root"; targetPort = null; tags = [ "x" ];
                sshOptions = [ ]; keys = { }; buildOnTarget = false;
                allowLocalDeployment = false; replaceUnknownProfiles = true;
                privilegeEscalationCommand = [ "sudo" "-H" "--" ]; };
        }; }; }; }
        """
    )
    subprocess.run(nix.nix_argv("flake", "lock", f"path:{flake}"), check=True, capture_output=True)
    out = tmp_path / "inventory.toml"
    assert main(["import", "colmena", "--flake", str(flake), "-o", str(out)]) == 0
    node = load(out).nodes["a"]
    assert (node.host, node.tags, node.modules) == ("10.0.0.1", ("x",), ())
    # An existing file is not replaced without --force.
    assert main(["import", "colmena", "--flake", str(flake), "-o", str(out)]) == 2


@pytest.mark.parametrize(
    ("flake", "message"),
    [
        ("{ outputs = { self }: { }; }", "the flake has no `colmena` or `colmenaHive` output"),
        (None, "No such file or directory"),
    ],
)
def test_bad_flakes_are_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flake: str | None, message: str
) -> None:
    where = tmp_path / "hive"
    if flake is not None:
        where.mkdir()
        (where / "flake.nix").write_text(flake)
        subprocess.run(
            nix.nix_argv("flake", "lock", f"path:{where}"), check=True, capture_output=True
        )
    assert main(["import", "colmena", "--flake", str(where), "-o", "-"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_a_flake_without_its_lock_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nixpkgs = stub_nixpkgs(tmp_path / "nixpkgs")
    where = tmp_path / "hive"
    where.mkdir()
    (where / "flake.nix").write_text(
        f'{{ inputs.nixpkgs.url = "path:{nixpkgs}"; outputs = {{ self, nixpkgs }}: '
        "{ colmena = { }; }; }\n"
    )
    assert main(["import", "colmena", "--flake", str(where), "-o", "-"]) == 2
    assert "run `nix flake lock" in capsys.readouterr().err


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.toml"
    path.write_text(text)
    return path


def test_a_hive_in_a_directory_of_a_git_repository(tmp_path: Path) -> None:
    # As examples/seed-fleet/before is read from a clone: Nix reads the whole repository (its
    # tracked files), and `modules` stay relative to the flake's own directory.
    repo = tmp_path / "repo"
    before = repo / "fleet" / "before"
    shutil.copytree(BEFORE, before)
    nixpkgs = stub_nixpkgs(tmp_path / "nixpkgs")
    text = (before / "flake.nix").read_text()
    (before / "flake.nix").write_text(
        text.replace("github:NixOS/nixpkgs/nixos-24.05", f"path:{nixpkgs}")
    )
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    ref = f"git+file://{repo}?dir=fleet/before"
    subprocess.run(nix.nix_argv("flake", "lock", ref), check=True, capture_output=True)
    subprocess.run([*git, "add", "."], check=True)
    # By its directory, and by a git reference naming the directory.
    for flake in (str(before), ref):
        out = tmp_path / "inventory.toml"
        assert main(["import", "colmena", "--flake", flake, "-o", str(out), "--force"]) == 0
        nodes = load(out).nodes
        assert nodes["nixos-ws"].modules == ("hosts/nixos-ws",)
        assert nodes["nixos-hk"].modules == ("hosts/nixos-vps",)

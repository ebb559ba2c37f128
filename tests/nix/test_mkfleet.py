"""mkFleet (nix/lib.nix) on small fleets: outputs, module order, errors, colmena and deploy-rs."""

from __future__ import annotations

from pathlib import Path

import pytest
from nixfleet import LAB_MK_SYSTEM, LIB, STUB_MK_SYSTEM, STUB_SYSTEM, Fleet, write_fleet

from nixherd.errors import CommandError
from nixherd.fleet import evaluate as fleet_mod
from nixherd.inventory import loads
from nixherd.run import nix

pytestmark = pytest.mark.nix


def mk_default(value: str) -> dict[str, object]:
    """What `lib.mkDefault value` is: mkFleet writes it out when it has no nixpkgs to call."""
    return {"_type": "override", "priority": 1000, "content": value}


def make_fleet(
    tmp_path: Path, inventory: str, files: dict[str, str] | None = None, args: str = ""
) -> Fleet:
    return write_fleet(tmp_path / "fleet", inventory, files, args)


INVENTORY = """
[defaults]
tags = ["fleet"]

[roles.web]
modules = ["roles/web.nix"]
tags = ["web"]
vars = { tier = "front" }

[[roles.web.targets]]
host = "10.0.0.1"
tags = ["batch"]

[[roles.web.targets]]
host = "10.0.0.2"
port = 2222
user = "deploy"
ssh_options = ["ConnectTimeout=5"]

[nodes.db]
role = "web"
host = "db.example.com"
system = "aarch64-linux"
config = { networking = { hostName = "database" }, boot = { isContainer = true } }
"""

MODULES = {"roles/web.nix": "{ node, ... }: { services.web.tier = node.vars.tier; }"}

# Stand-ins for the flake inputs: they record what mkFleet hands them.
STUBS = """
  colmena = { lib.makeHive = hive: { madeFrom = builtins.attrNames hive; }; };
  deploy-rs = {
    lib = builtins.listToAttrs (map (system: {
      name = system;
      value.activate.nixos = cfg: "activate-${system}-${cfg.config.services.web.tier}";
    }) [ "x86_64-linux" "aarch64-linux" ]);
  };
"""


def test_nodes_are_the_resolved_inventory(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, INVENTORY, MODULES)
    nodes = fleet.eval("nixherd.nodes")
    assert sorted(nodes) == ["db", "web-10-0-0-1", "web-10-0-0-2"]
    assert nodes["web-10-0-0-2"] == {
        "name": "web-10-0-0-2",
        "role": "web",
        "host": "10.0.0.2",
        "user": "deploy",
        "port": 2222,
        "system": "x86_64-linux",
        "tags": ["fleet", "web"],
        "modules": ["roles/web.nix"],
        "vars": {"tier": "front"},
        "config": {},
        "ssh_options": ["ConnectTimeout=5"],
        "host_key_policy": "strict",
    }
    assert nodes["db"]["host"] == "db.example.com"
    assert fleet.eval("nixherd.inventory")["roles"]["web"]["vars"] == {"tier": "front"}


def test_system_gets_node_modules_hostname_then_config(tmp_path: Path) -> None:
    fleet = make_fleet(
        tmp_path, INVENTORY, MODULES, args=STUB_MK_SYSTEM + 'specialArgs.site = "ams";'
    )
    recorded = fleet.eval("nixosConfigurations", apply="builtins.mapAttrs (_: c: c.recorded)")
    db = recorded["db"]
    assert db["system"] == "aarch64-linux"
    assert db["specialArgs"]["site"] == "ams"
    assert db["specialArgs"]["node"]["name"] == "db"
    # Colmena's module arguments: the node's name, and every node's system (recorded by name).
    assert db["specialArgs"]["name"] == "db"
    assert db["specialArgs"]["nodes"] == ["db", "web-10-0-0-1", "web-10-0-0-2"]
    # Module paths are resolved against `root`, here the flake's copy in the store.
    assert db["modules"][0].startswith("/nix/store/")
    assert db["modules"][0].endswith("-source/roles/web.nix")
    assert db["modules"][1:] == [
        {"networking": {"hostName": mk_default("db")}},
        {"networking": {"hostName": "database"}, "boot": {"isContainer": True}},
    ]
    assert recorded["web-10-0-0-1"]["modules"][1] == {
        "networking": {"hostName": mk_default("web-10-0-0-1")}
    }
    config = fleet.eval(
        "nixosConfigurations", apply="builtins.mapAttrs (_: c: c.config.networking)"
    )
    # The hostName default loses against the inventory's config, wins where nothing else sets it.
    assert config == {
        "db": {"hostName": "database"},
        "web-10-0-0-1": {"hostName": "web-10-0-0-1"},
        "web-10-0-0-2": {"hostName": "web-10-0-0-2"},
    }
    tiers = fleet.eval(
        "nixosConfigurations", apply="builtins.mapAttrs (_: c: c.config.services.web.tier)"
    )
    assert set(tiers.values()) == {"front"}


def test_colmena_hive(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, INVENTORY, MODULES)
    assert fleet.eval("colmena", apply="builtins.attrNames") == [
        "db",
        "meta",
        "web-10-0-0-1",
        "web-10-0-0-2",
    ]
    deployments = fleet.eval(
        "colmena",
        apply='h: builtins.mapAttrs (_: n: n.deployment) (removeAttrs h [ "meta" ])',
    )
    assert deployments == {
        "db": {
            "targetHost": "db.example.com",
            "targetUser": "root",
            "targetPort": None,  # not set: ssh decides, as Colmena's null
            "tags": ["fleet", "web"],
        },
        "web-10-0-0-1": {
            "targetHost": "10.0.0.1",
            "targetUser": "root",
            "targetPort": None,  # not set: ssh decides, as Colmena's null
            "tags": ["fleet", "web", "batch"],
        },
        "web-10-0-0-2": {
            "targetHost": "10.0.0.2",
            "targetUser": "deploy",
            "targetPort": 2222,
            "tags": ["fleet", "web"],
            "sshOptions": ["-o", "ConnectTimeout=5"],
        },
    }
    meta = fleet.eval("colmena.meta")
    # Without nixpkgs there is nothing to import for meta.nixpkgs / nodeNixpkgs.
    assert sorted(meta) == ["nodeSpecialArgs", "specialArgs"]
    assert meta["specialArgs"] == {}
    assert meta["nodeSpecialArgs"]["db"]["node"] == fleet.eval("nixherd.nodes.db")
    imports = fleet.eval(
        "colmena.db.imports", apply="map (m: if builtins.isPath m then toString m else m)"
    )
    assert imports == fleet.eval("nixosConfigurations.db.recorded.modules")


def test_optional_outputs_only_when_inputs_are_passed(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, INVENTORY, MODULES)
    assert fleet.outputs() == ["colmena", "nixherd", "nixosConfigurations"]
    fleet = make_fleet(tmp_path, INVENTORY, MODULES, args=STUB_MK_SYSTEM + STUBS)
    assert fleet.outputs() == ["colmena", "colmenaHive", "deploy", "nixherd", "nixosConfigurations"]
    assert fleet.eval("colmenaHive") == {"madeFrom": ["db", "meta", "web-10-0-0-1", "web-10-0-0-2"]}
    deploy = fleet.eval("deploy.nodes")
    assert deploy["web-10-0-0-2"] == {
        "hostname": "10.0.0.2",
        "sshUser": "deploy",
        "sshOpts": [
            *("-p", "2222", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5"),
        ],
        "profiles": {"system": {"user": "root", "path": "activate-x86_64-linux-front"}},
    }
    # deploy-rs's activation is looked up for the node's own system.
    assert deploy["db"]["profiles"]["system"]["path"] == "activate-aarch64-linux-front"
    # No port set: none passed, ssh decides.
    assert deploy["db"]["sshOpts"] == ["-o", "StrictHostKeyChecking=yes"]
    assert deploy["db"]["sshUser"] == "root"


def test_user_and_port_false_reach_colmena_as_null_and_deploy_rs_as_absent(
    tmp_path: Path,
) -> None:
    # Colmena: targetUser/targetPort null mean "ssh decides" (zhaofengli/colmena
    # src/nix/hive/options.nix); deploy-rs has no null sshUser, so the key is left out.
    text = (
        "[defaults]\nuser = false\nport = 2201\n"
        '[nodes.alias]\nport = false\nmodules = ["roles/web.nix"]\nvars = { tier = "x" }\n'
    )
    fleet = make_fleet(tmp_path, text, MODULES, args=STUB_MK_SYSTEM + STUBS)
    deployment = fleet.eval("colmena.alias.deployment")
    assert (deployment["targetUser"], deployment["targetPort"]) == (None, None)
    node = fleet.eval("deploy.nodes.alias")
    assert "sshUser" not in node and node["sshOpts"] == ["-o", "StrictHostKeyChecking=yes"]
    assert node["profiles"]["system"]["path"] == "activate-x86_64-linux-x"
    assert fleet.eval("nixherd.nodes.alias") == loads(text).nodes["alias"].to_data()


def test_nixpkgs_gives_mkdefault_and_colmena_nixpkgs(tmp_path: Path) -> None:
    # A stand-in nixpkgs: importable (a path with a function in it) and carrying the two lib
    # functions mkFleet uses; mkSystem left out so that nixpkgs.lib.nixosSystem is the default.
    nixpkgs = """nixpkgs = {
        outPath = ./stub-nixpkgs;
        lib.mkDefault = content: { fromNixpkgs = true; inherit content; };
        lib.nixosSystem = import ./nixherd/stub_system.nix;
      };"""
    files = {**MODULES, "stub-nixpkgs/default.nix": "{ system }: { pkgsFor = system; }"}
    fleet = make_fleet(tmp_path, INVENTORY, files, args=nixpkgs)
    modules = fleet.eval("nixosConfigurations.web-10-0-0-1.recorded.modules")
    assert modules[1] == {
        "networking": {"hostName": {"fromNixpkgs": True, "content": "web-10-0-0-1"}}
    }
    meta = fleet.eval("colmena.meta")
    assert meta["nixpkgs"] == {"pkgsFor": "x86_64-linux"}
    # Only the node of another system than the default gets its own nixpkgs.
    assert meta["nodeNixpkgs"] == {"db": {"pkgsFor": "aarch64-linux"}}
    assert "pkgs" not in fleet.eval("nixosConfigurations.db.recorded.specialArgs")


def test_with_the_lab_mk_system(tmp_path: Path) -> None:
    """The lab's module system sees the hostName default at mkDefault's priority."""
    inventory = """
[roles.web]
modules = ["web.nix"]
[[roles.web.targets]]
host = "10.0.0.1"
name = "plain"
[[roles.web.targets]]
host = "10.0.0.2"
name = "inline"
config = { networking.hostName = "from-config" }
[nodes.named]
modules = ["web.nix", "named.nix"]
"""
    files = {
        "web.nix": '{ node, ... }: { lab.version = node.vars.version or "1"; }',
        # An ordinary definition, earlier in the module list than the default: it still wins.
        "named.nix": '{ ... }: { networking.hostName = "from-module"; }',
    }
    fleet = make_fleet(tmp_path, inventory, files, args=f"mkSystem = {LAB_MK_SYSTEM};")
    names = fleet.eval(
        "nixosConfigurations", apply="builtins.mapAttrs (_: c: c.config.networking.hostName)"
    )
    assert names == {"plain": "plain", "inline": "from-config", "named": "from-module"}
    # Its toplevel is named after the host name it got.
    for name, result in fleet_mod.eval_nodes(fleet.ref, sorted(names)).items():
        assert result.out_path is not None, result
        assert result.out_path.endswith(f"-nixos-system-{names[name]}-1")


def test_without_nixpkgs_or_mk_system_is_a_clear_error(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, INVENTORY, MODULES, args="specialArgs = { };")
    assert fleet.eval("nixherd.nodes", apply="builtins.attrNames") == [
        "db",
        "web-10-0-0-1",
        "web-10-0-0-2",
    ]
    with pytest.raises(CommandError) as info:
        fleet.eval("nixosConfigurations.db.config")
    assert "pass `nixpkgs` (or your own `mkSystem`)" in info.value.output


def test_missing_module_names_node_and_path(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, INVENTORY)
    with pytest.raises(CommandError) as info:
        fleet.eval("nixosConfigurations.db.config.networking.hostName")
    assert "node 'db': module 'roles/web.nix' not found" in info.value.output
    # The flake is evaluated from its copy in the store: the message shows where it looked.
    assert "/roles/web.nix)" in info.value.output
    # Plain data needs no module file.
    assert fleet.eval("nixherd.nodes.db.modules") == ["roles/web.nix"]


def test_unknown_role_names_node(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, '[nodes.lost]\nrole = "nope"\n')
    with pytest.raises(CommandError) as info:
        fleet.eval("nixherd.nodes")
    assert "node 'lost': unknown role 'nope'" in info.value.output


def test_target_without_host_is_named(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, "[roles.web]\n[[roles.web.targets]]\nport = 2222\n")
    with pytest.raises(CommandError) as info:
        fleet.eval("nixherd.nodes")
    assert "nixherd: roles.web.targets[0] has no host" in info.value.output


def test_duplicate_name_names_node_and_origins(tmp_path: Path) -> None:
    inventory = """
[roles.web]
[[roles.web.targets]]
host = "10.0.0.1"
[[roles.web.targets]]
host = "10.0.0.2"
name = "web-10-0-0-1"
[nodes.web-10-0-0-1]
host = "10.0.0.3"
"""
    fleet = make_fleet(tmp_path, inventory)
    with pytest.raises(CommandError) as info:
        fleet.eval("nixosConfigurations", apply="builtins.attrNames")
    message = info.value.output
    assert "duplicate node name 'web-10-0-0-1'" in message
    assert "roles.web.targets[0], roles.web.targets[1], nodes.web-10-0-0-1" in message


def test_pkgs_in_special_args_is_refused(tmp_path: Path) -> None:
    fleet = make_fleet(
        tmp_path, INVENTORY, MODULES, args=STUB_MK_SYSTEM + "specialArgs.pkgs = { };"
    )
    with pytest.raises(CommandError) as info:
        fleet.eval("nixosConfigurations.db.config.services.web.tier")
    assert "do not put `pkgs` into specialArgs" in info.value.output


def test_library_works_without_flakes(tmp_path: Path) -> None:
    (tmp_path / "inventory.toml").write_text('[nodes.solo]\nhost = "192.0.2.9"\n')
    expr = (
        f"((import {nix.nix_string(str(LIB.parent))}).mkFleet {{"
        f" inventory = {nix.nix_string(str(tmp_path / 'inventory.toml'))};"
        f" root = {nix.nix_string(str(tmp_path))};"
        f" mkSystem = import {nix.nix_string(str(STUB_SYSTEM))}; }}).nixherd.nodes.solo.host"
    )
    assert nix.eval_expr_json(expr) == "192.0.2.9"

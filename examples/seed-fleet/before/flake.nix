# The seed fleet as it was before nixherd: Colmena, a `mkColmenaRole` helper fanning a role out
# to a list of VPS, three machines written by hand, and `nixosConfigurations` built from the same
# hive. Per-machine values live inside the modules (hosts/), keyed by the node's name.
#
# `nixherd import colmena --flake examples/seed-fleet/before -o inventory.toml` turns it into an
# inventory (../inventory.toml is where the fleet went from there: the per-machine values moved
# into vars, the modules into ../hosts). The import evaluates no nixpkgs, but Nix reads the flake
# through its lock file: with network, `nix flake lock` it first. tests/nix/test_colmena_import.py
# imports it (nixpkgs replaced by a stand-in) and checks that the inventory's nodes, through
# mkFleet, have the same names and deployment fields as this hive.
{
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.05";

  outputs =
    { self, nixpkgs, ... }@inputs:
    let
      # One node per target: named <role>-<host with - for .>, deployment from the target.
      mkColmenaRole =
        {
          role,
          modules,
          targets,
        }:
        builtins.listToAttrs (
          map (t: {
            name = "${role}-${builtins.replaceStrings [ "." ] [ "-" ] t.host}";
            value = {
              deployment = {
                targetHost = t.host;
                targetUser = t.user or "root";
                targetPort = t.port or 22;
                tags = t.tags or [ ];
              };
              imports = modules;
            };
          }) targets
        );

      vps = mkColmenaRole {
        role = "nixos-vps";
        modules = [ ./hosts/nixos-vps ];
        targets = [
          {
            host = "198.51.100.11";
            tags = [ "batch-vps" ];
          }
          {
            host = "198.51.100.12";
            tags = [ "batch-vps" ];
          }
          {
            host = "198.51.100.13";
            tags = [ "batch-vps" ];
          }
        ];
      };

      machines = {
        nixos-vps = {
          deployment = {
            targetHost = "10.254.0.2";
            targetUser = "root";
            tags = [
              "vps"
              "container"
              "lab"
            ];
          };
          imports = [ ./hosts/nixos-vps ];
          boot.isContainer = true;
        };
        nixos-hk = {
          deployment = {
            targetHost = "103.85.224.63";
            tags = [
              "vps"
              "hk"
              "prod"
            ];
          };
          imports = [ ./hosts/nixos-vps ];
          networking.hostName = "nixos-hk";
        };
        nixos-ws = {
          deployment = {
            targetHost = "192.168.234.194";
            targetUser = "luck";
            tags = [ "workstation" ];
          };
          imports = [ ./hosts/nixos-ws ];
        };
      };

      nodes = vps // machines;
    in
    {
      colmena = {
        meta = {
          nixpkgs = import nixpkgs { system = "x86_64-linux"; };
          specialArgs = { inherit inputs; };
        };
      }
      // nodes;

      nixosConfigurations = builtins.mapAttrs (
        name: node:
        nixpkgs.lib.nixosSystem {
          system = "x86_64-linux";
          specialArgs = { inherit inputs name; };
          modules = [ (removeAttrs node [ "deployment" ]) ];
        }
      ) nodes;
    };
}

{
  description = "nixherd lab fleet: roles web and db over three local lab hosts (see README.md)";

  # No inputs, so it evaluates offline. The library comes through a relative path: the flake
  # lives in nixherd's git repository, whose tracked files are all in the flake's source.
  outputs =
    { self }:
    let
      nixherd = import ../../nix;
    in
    nixherd.mkFleet {
      inventory = ./inventory.toml;
      root = ./.;
      inherit (nixherd.lab) mkSystem;
    };
}

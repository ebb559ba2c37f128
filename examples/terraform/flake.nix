{
  description = "nixherd Terraform example: nodes from Terraform outputs, deployed to the lab";

  # As examples/lab: no inputs, the library through a relative path (this flake is part of
  # nixherd's git tree, so new files must be `git add`ed to be seen, the snapshot included).
  outputs =
    { self }:
    let
      nixherd = import ../../nix;
    in
    nixherd.mkFleet {
      inventory = ./inventory.toml; # reads ./inventory.terraform.json beside it
      root = ./.;
      inherit (nixherd.lab) mkSystem;
    };
}

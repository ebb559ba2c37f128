{
  description = "nixherd: deploy NixOS configurations to a fleet over SSH, from roles and a TOML inventory";

  # No inputs: the library is pure Nix (builtins only) and must evaluate offline.
  outputs =
    { self }:
    {
      # `lib.mkFleet` (nix/lib.nix) and `lib.lab` (nix/lab.nix), as in nix/default.nix.
      lib = import ./nix;
    };
}

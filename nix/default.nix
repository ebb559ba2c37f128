# The library without flakes, the same attrset as the flake's `lib`:
# `(import ./nix).mkFleet { ... }`, `(import ./nix).lab`.
import ./lib.nix
// {
  lab = import ./lab.nix;
}

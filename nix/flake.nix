# This directory as a flake of its own, with the same `lib` as the repository's flake.nix. A
# nixherd installed from its package (pip) carries this directory inside it (`nixherd --version`
# names it), so a fleet's flake can take the installed library as an input:
#
#   inputs.nixherd.url = "path:/…/site-packages/nixherd/nix";
#
# (docs/nix-library.md). No inputs: the library is builtins only and evaluates offline.
{
  description = "nixherd's Nix library: lib.mkFleet and lib.lab";

  outputs =
    { self }:
    {
      lib = import ./.;
    };
}

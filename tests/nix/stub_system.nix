# A stand-in for nixpkgs.lib.nixosSystem (no nixpkgs is reachable in the tests): it imports the
# modules, merges them later-wins (tables key by key), records what it was given, and offers
# `config.system.build.toplevel` as a cheap derivation that is never built. Modules get the
# specialArgs, `config`, and a `lib` with the few functions the example modules use, with
# semantics enough for a later-wins merge.
{
  system,
  specialArgs ? { },
  modules,
}:
let
  deepMerge =
    a: b:
    if builtins.isAttrs a && builtins.isAttrs b then
      a // builtins.mapAttrs (k: v: if a ? ${k} then deepMerge a.${k} v else v) b
    else
      b;
  lib = {
    mkIf = condition: value: if condition then value else { };
    mkDefault = value: value;
    optionals = condition: list: if condition then list else [ ];
    genAttrs =
      names: f:
      builtins.listToAttrs (
        map (name: {
          inherit name;
          value = f name;
        }) names
      );
  };
  args = {
    inherit lib;
  }
  // specialArgs
  // {
    inherit config;
  };
  load =
    module:
    if builtins.isFunction module then
      module args
    else if builtins.isPath module || builtins.isString module then
      load (import module)
    else
      module;
  merged = builtins.foldl' deepMerge { } (map load modules);
  config = deepMerge merged {
    system.build.toplevel = derivation {
      name = "nixos-system-${specialArgs.node.name}";
      inherit system;
      builder = "/bin/sh";
      args = [
        "-c"
        "echo \"$config\" > $out"
      ];
      config = builtins.toJSON merged;
    };
  };
in
{
  inherit config;
  # What mkFleet passed, as plain data (`toString`: a path in JSON would be copied to the store).
  recorded = {
    inherit system specialArgs;
    modules = map (m: if builtins.isPath m then toString m else m) modules;
  };
}

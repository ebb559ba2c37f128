# A stand-in for nixpkgs.lib.nixosSystem (no nixpkgs is reachable in the tests): it imports the
# modules, merges them later-wins (tables key by key, mkDefault-style priorities respected),
# records what it was given, and offers `config.system.build.toplevel` as a cheap derivation that
# is never built. Modules get the specialArgs, `config`, and a `lib` with the few functions the
# example modules use.
{
  system,
  specialArgs ? { },
  modules,
}:
let
  # Later wins, except that a definition with a priority (mkDefault's `_type = "override"`)
  # gives way to one of a stronger priority, as in NixOS.
  isOverride = v: builtins.isAttrs v && (v._type or null) == "override";
  priority = v: if isOverride v then v.priority else 100;
  deepMerge =
    a: b:
    if priority b > priority a then
      a
    else if priority a > priority b then
      b
    else if builtins.isAttrs a && builtins.isAttrs b && !(isOverride a) then
      a // builtins.mapAttrs (k: v: if a ? ${k} then deepMerge a.${k} v else v) b
    else
      b;
  unwrap =
    v:
    if isOverride v then
      unwrap v.content
    else if builtins.isAttrs v && (v.type or null) != "derivation" then
      builtins.mapAttrs (_: unwrap) v
    else
      v;
  lib = {
    mkIf = condition: value: if condition then value else { };
    mkDefault = content: {
      _type = "override";
      priority = 1000;
      inherit content;
    };
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
  merged = unwrap (builtins.foldl' deepMerge { } (map load modules));
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
  # What mkFleet passed, as plain data (`toString`: a path in JSON would be copied to the store;
  # `nodes`, every node's system, by its names only: it holds this very record).
  recorded = {
    inherit system;
    specialArgs =
      specialArgs
      // (if specialArgs ? nodes then { nodes = builtins.attrNames specialArgs.nodes; } else { });
    modules = map (m: if builtins.isPath m then toString m else m) modules;
  };
}

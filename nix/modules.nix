# The few functions of NixOS's module system that nixherd's own evaluations need without nixpkgs:
# the lab's mkSystem (nix/lab.nix) and `nixherd import colmena`'s reading of a hive's deployment
# (src/nixherd/resources/colmena-import.nix). How each merges follows nixpkgs' lib/modules.nix for
# what they need: mkIf, mkMerge and priorities (mkOverride, mkDefault, mkForce), lists
# concatenated, attrsets merged key by key, otherwise the later definition wins.
let
  inherit (builtins)
    all
    attrNames
    concatLists
    concatMap
    elem
    filter
    foldl'
    isAttrs
    isList
    listToAttrs
    mapAttrs
    ;

  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };

  defaultPriority = 100;

  isPlainAttrs = v: isAttrs v && !(v ? _type) && (v.type or null) != "derivation";

  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

  # A definition as a list of { priority; value; }: mkIf/mkMerge expanded, overrides unwrapped.
  # mkIf and overrides over an attrset are pushed down to its values (as NixOS does), so that
  # `config = mkIf config.x { ... }` does not need its condition to know which keys it defines,
  # and a condition is only evaluated for the keys that are read.
  flatten =
    priority: value:
    if isAttrs value && value ? _type then
      if (value._type == "if" || value._type == "override") && isPlainAttrs value.content then
        [
          {
            inherit priority;
            value = mapAttrs (_: v: value // { content = v; }) value.content;
          }
        ]
      else if value._type == "override" then
        flatten value.priority value.content
      else if value._type == "if" then
        (if value.condition then flatten priority value.content else [ ])
      else if value._type == "merge" then
        concatMap (flatten priority) value.contents
      else
        [ { inherit priority value; } ]
    else
      [ { inherit priority value; } ];

  # Merge the definitions of one value, in module order (later wins among equals).
  mergeDefinitions =
    definitions:
    let
      flat = concatMap (flatten defaultPriority) definitions;
      best = foldl' (m: d: if d.priority < m then d.priority else m) 1000000 flat;
      values = map (d: d.value) (filter (d: d.priority == best) flat);
    in
    if all isPlainAttrs values then
      mergeSets values
    else if all isList values then
      concatLists values
    else
      foldl' (_: v: v) null values;

  mergeSets =
    sets:
    let
      definitionsOf = name: concatMap (set: if set ? ${name} then [ set.${name} ] else [ ]) sets;
      # A key whose every definition is a false mkIf is not defined at all.
      present = name: concatMap (flatten defaultPriority) (definitionsOf name) != [ ];
    in
    listToAttrs (
      map (name: {
        inherit name;
        value = mergeDefinitions (definitionsOf name);
      }) (filter present (unique (concatMap attrNames sets)))
    );
in
{
  inherit
    mkOverride
    isPlainAttrs
    unique
    flatten
    mergeDefinitions
    mergeSets
    ;

  # What modules call as `lib.*` for these (both users add their own on top).
  lib = {
    inherit mkOverride;
    mkDefault = mkOverride 1000;
    mkOptionDefault = mkOverride 1500;
    mkForce = mkOverride 50;
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkMerge = contents: {
      _type = "merge";
      inherit contents;
    };
  };

  # A module's attributes that are not definitions.
  moduleMeta = [
    "imports"
    "_file"
    "key"
    "disabledModules"
    "meta"
    "freeformType"
  ];
}

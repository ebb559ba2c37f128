# `nixherd import colmena`: a Colmena hive's nodes as plain data, evaluated without nixpkgs.
#
#   import ./colmena-import.nix { flake = builtins.getFlake REF; modules = import NIXLIB/modules.nix;
#                                 only = null | [ names ]; withOwn = true; }
#
# `withOwn = false` leaves out each node's own settings (for a node whose own module cannot be
# evaluated here: its deployment is still read).
#
# The hive's format is Colmena's own (zhaofengli/colmena and nix-community/colmena,
# src/nix/hive/eval.nix): `outputs.colmena` is an attrset or a function called with { };
# `meta` (or `network`, NixOps' name, never both) holds the hive's settings (`nixpkgs`,
# `nodeNixpkgs`, `specialArgs`, `nodeSpecialArgs`); `defaults` is a module every node imports;
# every other attribute is a node, a module or a list of modules. Modules get `name`, `nodes`,
# then `meta.specialArgs` and `meta.nodeSpecialArgs.<name>` as special arguments. The deployment
# options and their defaults are src/nix/hive/options.nix (`deploymentOptions`): targetHost
# (default: the node's name), targetPort (null), targetUser ("root"), tags, sshOptions, keys,
# buildOnTarget, allowLocalDeployment, replaceUnknownProfiles, privilegeEscalationCommand.
#
# Colmena evaluates each node with nixpkgs' whole NixOS module system; that needs nixpkgs, which
# an importer must not fetch (and cannot, offline). So this file evaluates `deployment` only,
# with a small stand-in of the module system: modules are loaded (paths imported, functions
# called), `imports` followed (in nixpkgs' order), `config`/`options` modules read, mkIf/mkMerge/mkOverride
# (mkDefault, mkForce) honoured, lists concatenated, attrsets merged key by key, and a lazy
# `config` given back to the modules, so `deployment.targetHost = "${name}.lan"` or a value read
# from another option works. `pkgs` and `modulesPath` throw: a node whose deployment needs them is
# reported as not evaluated, with the reason. Options are never evaluated, so `lib.mkOption` and
# `lib.types` are placeholders. Nothing of a key is evaluated but its name (its `text` is a
# secret).
{
  flake,
  # nixherd's module-system functions (nix/modules.nix), shared with the lab's mkSystem.
  modules,
  only ? null,
  withOwn ? true,
}:
let
  inherit (builtins)
    all
    attrNames
    concatLists
    concatMap
    deepSeq
    elem
    filter
    foldl'
    isAttrs
    isBool
    isFloat
    isFunction
    isInt
    isList
    isPath
    isString
    listToAttrs
    mapAttrs
    removeAttrs
    tryEval
    typeOf
    ;

  raw = flake.colmena;
  hive = if isFunction raw || raw ? __functor then raw { } else raw;
  meta = hive.meta or hive.network or { };
  reserved = [
    "defaults"
    "meta"
    "network"
  ];
  allNames = filter (n: !elem n reserved) (attrNames hive);
  names = if only == null then allNames else filter (n: elem n only) allNames;
  modulesOf = v: if isList v then v else [ v ];

  # -- the module system stand-in ---------------------------------------------------------------

  inherit (modules) mkOverride mergeSets moduleMeta;
  isPlain = modules.isPlainAttrs;
  placeholder = _: { _type = "option"; };
  lib = builtins // modules.lib // {
    mkVMOverride = mkOverride 10;
    mkBefore = x: x;
    mkAfter = x: x;
    mkOrder = _: x: x;
    mkOption = placeholder;
    mkEnableOption = placeholder;
    mkPackageOption = _: placeholder;
    types = { };
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: xs: if c then xs else [ ];
    optionalAttrs = c: s: if c then s else { };
    optionalString = c: s: if c then s else "";
    genAttrs =
      ns: f:
      listToAttrs (
        map (n: {
          name = n;
          value = f n;
        }) ns
      );
    nameValuePair = name: value: { inherit name value; };
    filterAttrs = f: s: removeAttrs s (filter (n: !(f n s.${n})) (attrNames s));
    attrValues = s: map (n: s.${n}) (attrNames s);
  };

  # A module function is called with every argument it asks for: one this evaluation cannot give
  # (an argument of nixpkgs' own, or a special argument given some other way) throws only if
  # the deployment reads it.
  load =
    args: module:
    let
      loaded = if isPath module || isString module then import module else module;
      formals = builtins.functionArgs loaded;
      missing = filter (n: !formals.${n} && !(args ? ${n})) (attrNames formals);
      filled =
        args
        // listToAttrs (
          map (n: {
            name = n;
            value = throw "nixherd import: the module argument `${n}` is not available here";
          }) missing
        );
    in
    if isFunction loaded then loaded filled else loaded;
  bodyOf = value: if value ? config || value ? options then value.config or { } else removeAttrs value moduleMeta;
  # Every module's body, in the order nixpkgs' module system lists them (lib/modules.nix,
  # collectModules: builtins.genericClosure over the imports, so the modules given first, then
  # what they import, breadth first, a file imported twice counted once). List options such as
  # deployment.tags are concatenated in that order.
  collect =
    args: modules:
    let
      items =
        parent: list:
        builtins.genList (
          i:
          let
            m = builtins.elemAt list i;
          in
          {
            key = if isPath m || isString m then toString m else "${parent}:anon-${toString (i + 1)}";
            value = load args m;
          }
        ) (builtins.length list);
    in
    map (item: bodyOf item.value) (
      builtins.genericClosure {
        startSet = items "" modules;
        operator = item: items item.key (item.value.imports or [ ]);
      }
    );

  noNixpkgs = n: throw "`${n}` needs nixpkgs, which the import does not evaluate";
  argsOf =
    name: config:
    {
      pkgs = noNixpkgs "pkgs";
      modulesPath = noNixpkgs "modulesPath";
      options = { };
      inherit name nodes;
    }
    // (meta.specialArgs or { })
    // ((meta.nodeSpecialArgs or { }).${name} or { })
    // {
      inherit lib config;
    };
  configOf =
    name:
    let
      config = mergeSets (collect (argsOf name config) ([ (hive.defaults or { }) ] ++ modulesOf hive.${name}));
    in
    config;
  nodes = listToAttrs (
    map (n: {
      name = n;
      value = {
        config = configOf n;
      };
    }) allNames
  );

  # -- what is reported ---------------------------------------------------------------------------

  # An import as data: a file (relative to the flake by the caller), or what it is.
  describe =
    m:
    if isPath m || isString m then
      {
        file = toString m;
      }
    else
      {
        inline = typeOf m;
      };

  # The node's own settings (its top modules without deployment and imports): the top-level
  # options whose value is plain data (an inventory's `config` holds them), and the others.
  isData =
    v:
    isString v
    || isInt v
    || isBool v
    || isFloat v
    || (isList v && all isData v)
    || (isPlain v && all (n: isData v.${n}) (attrNames v));
  ownOf =
    name:
    let
      bodies = map (
        m: removeAttrs (bodyOf (load (argsOf name (configOf name)) m)) [ "deployment" ]
      ) (modulesOf hive.${name});
      merged = foldl' (a: b: a // b) { } bodies;
      plain = n: (tryEval (isData merged.${n})).value or false;
      carried = filter plain (attrNames merged);
    in
    {
      data = listToAttrs (
        map (n: {
          name = n;
          value = merged.${n};
        }) carried
      );
      skipped = filter (n: !plain n) (attrNames merged);
    };

  importsOf =
    name:
    concatMap (
      m:
      let
        value = load (argsOf name (configOf name)) m;
      in
      map describe (value.imports or [ ])
    ) (modulesOf hive.${name});

  nodeData =
    name:
    let
      d = (configOf name).deployment or { };
      field = n: default: if d ? ${n} then d.${n} else default;
      data = {
        targetHost = field "targetHost" name;
        targetUser = field "targetUser" "root";
        targetPort = field "targetPort" null;
        tags = field "tags" [ ];
        sshOptions = field "sshOptions" [ ];
        keys = attrNames (field "keys" { });
        buildOnTarget = field "buildOnTarget" false;
        allowLocalDeployment = field "allowLocalDeployment" false;
        replaceUnknownProfiles = field "replaceUnknownProfiles" true;
        privilegeEscalationCommand = field "privilegeEscalationCommand" [
          "sudo"
          "-H"
          "--"
        ];
        other = filter (
          n:
          !elem n [
            "targetHost"
            "targetUser"
            "targetPort"
            "tags"
            "sshOptions"
            "keys"
            "buildOnTarget"
            "allowLocalDeployment"
            "replaceUnknownProfiles"
            "privilegeEscalationCommand"
          ]
        ) (attrNames d);
        imports = importsOf name;
        own = if withOwn then ownOf name else null;
        nodeNixpkgs = (meta.nodeNixpkgs or { }) ? ${name};
        nodeSpecialArgs = attrNames ((meta.nodeSpecialArgs or { }).${name} or { });
      };
      tried = tryEval (deepSeq data data);
    in
    if tried.success then
      tried.value
    else
      {
        error = "its deployment could not be evaluated without nixpkgs (a throw or an assertion)";
      };
  # `colmenaHive` (colmena.lib.makeHive, Colmena 0.5) is a hive Colmena has evaluated already,
  # with nixpkgs (eval.nix's `deploymentConfig`); its modules cannot be read back from it.
  evaluated = flake.colmenaHive;
  evaluatedNames = attrNames evaluated.deploymentConfig;
  fromEvaluated =
    name:
    let
      d = evaluated.deploymentConfig.${name};
    in
    {
      inherit (d)
        targetHost
        targetUser
        targetPort
        tags
        buildOnTarget
        allowLocalDeployment
        replaceUnknownProfiles
        privilegeEscalationCommand
        ;
      sshOptions = d.sshOptions or [ ];
      keys = attrNames d.keys;
      other = [ ];
      imports = [ ];
      own = null;
      nodeNixpkgs = false;
      nodeSpecialArgs = [ ];
    };
  pick = all: if only == null then all else filter (n: elem n only) all;
in
if flake ? colmena then
  {
    source = "colmena";
    root = toString flake.outPath;
    nodes = listToAttrs (
      map (n: {
        name = n;
        value = nodeData n;
      }) names
    );
    names = allNames;
    meta = {
      nixpkgs = meta ? nixpkgs;
      specialArgs = attrNames (meta.specialArgs or { });
      defaultsImports = map describe (
        (load (argsOf "defaults" { }) (hive.defaults or { })).imports or [ ]
      );
      other = filter (
        n:
        !elem n [
          "nixpkgs"
          "nodeNixpkgs"
          "specialArgs"
          "nodeSpecialArgs"
          "name"
          "description"
        ]
      ) (attrNames meta);
    };
  }
else if flake ? colmenaHive then
  {
    source = "colmenaHive";
    root = toString flake.outPath;
    nodes = listToAttrs (
      map (n: {
        name = n;
        value = fromEvaluated n;
      }) (pick evaluatedNames)
    );
    names = evaluatedNames;
    meta = {
      nixpkgs = true;
      specialArgs = [ ];
      defaultsImports = [ ];
      other = [ ];
    };
  }
else
  throw "nixherd import colmena: the flake has no `colmena` or `colmenaHive` output"

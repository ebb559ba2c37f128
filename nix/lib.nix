# nixherd's Nix library: the inventory resolver and `mkFleet`, which turns a TOML inventory into
# nixosConfigurations, a Colmena hive, deploy-rs nodes and the resolved nodes as plain data.
#
# Pure Nix with builtins only (no nixpkgs lib), so that it evaluates on Nix 2.8 as well as on
# current Nix and Lix. The resolution rules are docs/inventory.md; the Python resolver
# (nixherd.inventory) follows the same rules and tests/nix/test_agreement.py checks that both
# produce the same nodes. Validation is the Python side's job: here only the mistakes that would
# otherwise surface as a confusing evaluation error are caught (unknown role, duplicate node name,
# missing module file), each with a message naming the node.
let
  inherit (builtins)
    attrNames
    concatMap
    concatStringsSep
    elem
    elemAt
    filter
    foldl'
    fromTOML
    genList
    isAttrs
    isPath
    length
    listToAttrs
    mapAttrs
    pathExists
    readFile
    replaceStrings
    ;

  # Later wins for scalars; tables merge key by key, recursively; anything else is replaced.
  deepMerge =
    a: b:
    if isAttrs a && isAttrs b then
      a // mapAttrs (k: v: if a ? ${k} then deepMerge a.${k} v else v) b
    else
      b;

  # Concatenation keeping the first occurrence of each value in place.
  uniqueConcat = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

  # `port` null: none on ssh's command line, ssh's config (else 22) decides; `false` in any layer
  # (TOML has no null) resolves to null, for `port` and `user` alike (docs/inventory.md, "ssh").
  builtinDefaults = {
    user = "root";
    port = null;
    system = "x86_64-linux";
    host_key_policy = "strict";
  };

  listFields = [
    "tags"
    "modules"
    "ssh_options"
  ];
  tableFields = [
    "vars"
    "config"
  ];

  # A field over the layers (lowest first): scalars later-wins, lists unique-concat, tables merged.
  scalar =
    field: fallback: layers:
    foldl' (acc: layer: layer.${field} or acc) fallback layers;
  orNull = value: if value == false then null else value;
  list = field: layers: uniqueConcat (concatMap (layer: layer.${field} or [ ]) layers);
  table = field: layers: foldl' (acc: layer: deepMerge acc (layer.${field} or { })) { } layers;

  # The resolved node as data, the exact shape of Python's `Node.to_data()`.
  resolveNode =
    name: role: layers:
    {
      inherit name role;
      host = scalar "host" name layers;
      user = orNull (scalar "user" builtinDefaults.user layers);
      port = orNull (scalar "port" builtinDefaults.port layers);
      system = scalar "system" builtinDefaults.system layers;
      host_key_policy = scalar "host_key_policy" builtinDefaults.host_key_policy layers;
    }
    // listToAttrs (
      map (f: {
        name = f;
        value = list f layers;
      }) listFields
    )
    // listToAttrs (
      map (f: {
        name = f;
        value = table f layers;
      }) tableFields
    );

  fanOutName = role: host: "${role}-${replaceStrings [ "." ":" ] [ "-" "-" ] host}";

  parseInventory = inventory: if isAttrs inventory then inventory else fromTOML (readFile inventory);

  # Every node of the inventory as `{ name; origin; value; }` (origin, the key path of its table,
  # only for messages): the fanned-out targets role by role, then the explicit nodes.
  nodeEntries =
    inv:
    let
      defaults = inv.defaults or { };
      roles = inv.roles or { };
      explicit = inv.nodes or { };
      targetsOf =
        roleName:
        let
          role = roles.${roleName};
          targets = role.targets or [ ];
        in
        genList (
          index:
          let
            target = elemAt targets index;
            origin = "roles.${roleName}.targets[${toString index}]";
            host = target.host or (throw "nixherd: ${origin} has no host");
            name = target.name or (fanOutName roleName host);
          in
          {
            inherit name origin;
            value = resolveNode name roleName [
              defaults
              role
              target
            ];
          }
        ) (length targets);
      explicitNode =
        name:
        let
          node = explicit.${name};
          roleName = node.role or null;
          roleLayer =
            if roleName == null then
              [ ]
            else if roles ? ${roleName} then
              [ roles.${roleName} ]
            else
              throw "nixherd: node '${name}': unknown role '${roleName}' (roles: ${concatStringsSep ", " (attrNames roles)})";
        in
        {
          inherit name;
          origin = "nodes.${name}";
          value = resolveNode name roleName ([ defaults ] ++ roleLayer ++ [ node ]);
        };
    in
    concatMap targetsOf (attrNames roles) ++ map explicitNode (attrNames explicit);

  # name -> resolved node; throws on a duplicate name, naming it and where each one comes from.
  resolve =
    inventory:
    let
      entries = nodeEntries (parseInventory inventory);
      origins = builtins.groupBy (e: e.name) entries;
      duplicates = filter (name: length origins.${name} > 1) (attrNames origins);
      describe =
        name: "'${name}' (${concatStringsSep ", " (map (e: e.origin) origins.${name})})";
    in
    if duplicates == [ ] then
      listToAttrs entries
    else
      throw "nixherd: duplicate node name ${concatStringsSep "; " (map describe duplicates)}";

  # A module path relative to `root` (a path or a string); a missing file is an error naming the
  # node. `toString` keeps the message from copying anything to the store.
  modulePath =
    root: nodeName: module:
    let
      path = if isPath root then root + "/${module}" else "${root}/${module}";
    in
    if pathExists path then
      path
    else
      throw "nixherd: node '${nodeName}': module '${module}' not found (looked for ${toString path})";

  mkFleet =
    {
      inventory,
      root,
      nixpkgs ? null,
      specialArgs ? { },
      mkSystem ? null,
      colmena ? null,
      deploy-rs ? null,
    }:
    let
      inv = parseInventory inventory;
      nodes = resolve inv;
      defaultSystem = (inv.defaults or { }).system or builtinDefaults.system;

      system' =
        if mkSystem != null then
          mkSystem
        else if nixpkgs != null then
          nixpkgs.lib.nixosSystem
        else
          throw "nixherd.mkFleet: pass `nixpkgs` (or your own `mkSystem`) to build nixosConfigurations";

      sharedArgs =
        if specialArgs ? pkgs then
          throw "nixherd.mkFleet: do not put `pkgs` into specialArgs (nixpkgs would ignore nixpkgs.config and overlays); pass `nixpkgs` instead"
        else
          specialArgs;

      # `networking.hostName` defaults to the node's name at mkDefault's priority. Without nixpkgs
      # (a custom mkSystem such as the lab's) there is no lib to call, so the value mkDefault
      # returns is written out: the module system (NixOS's, the lab's) reads it the same way.
      mkDefault =
        if nixpkgs != null then
          nixpkgs.lib.mkDefault
        else
          content: {
            _type = "override";
            priority = 1000;
            inherit content;
          };
      hostNameModule = name: { networking.hostName = mkDefault name; };

      # The node's modules, in resolved order, then its hostName default, then its inline config.
      nodeModules =
        name: node:
        map (modulePath root name) node.modules
        ++ [
          (hostNameModule name)
          node.config
        ];

      nixosConfigurations = mapAttrs (
        name: node:
        system' {
          inherit (node) system;
          specialArgs = sharedArgs // {
            inherit node;
          };
          modules = nodeModules name node;
        }
      ) nodes;

      importNixpkgs = system: import nixpkgs { inherit system; };

      colmenaHive =
        {
          meta =
            {
              specialArgs = sharedArgs;
              nodeSpecialArgs = mapAttrs (_: node: { inherit node; }) nodes;
            }
            // (
              if nixpkgs == null then
                { }
              else
                {
                  nixpkgs = importNixpkgs defaultSystem;
                  nodeNixpkgs = mapAttrs (_: node: importNixpkgs node.system) (
                    filterAttrs (_: node: node.system != defaultSystem) nodes
                  );
                }
            );
        }
        // mapAttrs (name: node: {
          deployment = {
            targetHost = node.host;
            # Both `nullOr`, null meaning "ssh decides" (zhaofengli/colmena
            # src/nix/hive/options.nix, deployment.targetUser and deployment.targetPort).
            targetUser = node.user;
            targetPort = node.port;
            inherit (node) tags;
          };
          imports = nodeModules name node;
        }) nodes;

      deployNodes = mapAttrs (
        name: node:
        {
          hostname = node.host;
          sshOpts =
            (
              if node.port == null then
                [ ]
              else
                [
                  "-p"
                  (toString node.port)
                ]
            )
            ++ concatMap (option: [
              "-o"
              option
            ]) node.ssh_options;
          profiles.system = {
            user = "root";
            path = deploy-rs.lib.${node.system}.activate.nixos nixosConfigurations.${name};
          };
        }
        # deploy-rs has no "ssh decides" for the user: without sshUser it logs in as the local
        # user (serokell/deploy-rs src/lib.rs, `DeployData::defs`), not as the ssh config's User.
        // (if node.user == null then { } else { sshUser = node.user; })
      ) nodes;
    in
    {
      inherit nixosConfigurations;
      colmena = colmenaHive;
      nixherd = {
        inherit nodes;
        inventory = inv;
      };
    }
    // (if colmena == null then { } else { colmenaHive = colmena.lib.makeHive colmenaHive; })
    // (if deploy-rs == null then { } else { deploy.nodes = deployNodes; });

  filterAttrs =
    pred: set:
    listToAttrs (
      concatMap (
        name:
        if pred name set.${name} then
          [
            {
              inherit name;
              value = set.${name};
            }
          ]
        else
          [ ]
      ) (attrNames set)
    );
in
{
  inherit mkFleet resolve deepMerge;
}

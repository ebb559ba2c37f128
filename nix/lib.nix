# nixherd's Nix library: the inventory resolver and `mkFleet`, which turns a TOML inventory into
# nixosConfigurations, a Colmena hive, deploy-rs nodes and the resolved nodes as plain data.
#
# Pure Nix with builtins only (no nixpkgs lib), so that it evaluates on Nix 2.8 as well as on
# current Nix and Lix. The resolution rules are docs/inventory.md; the Python resolver
# (nixherd.inventory) follows the same rules and tests/nix/test_agreement.py checks that both
# produce the same nodes. Validation is the Python side's job: here only the mistakes that would
# otherwise surface as a confusing evaluation error are caught (unknown role, duplicate node name,
# missing module file, a node name a peer cannot carry), each with a message naming the node.
#
# The peers' contracts the outputs follow (docs/nix-library.md, "Colmena and deploy-rs"):
# - Colmena: the deployment options and their types, nix-community/colmena
#   src/nix/hive/options.nix (`deploymentOptions`: targetHost nullOr str, targetPort nullOr
#   ints.unsigned, targetUser nullOr str, tags listOf str, sshOptions listOf str); the hive's own
#   keys and the module arguments `name`/`nodes`, src/nix/hive/eval.nix (`reservedNames`,
#   `evalNode`); how it calls ssh, src/nix/host/ssh.rs (`ssh_options`).
# - deploy-rs: the JSON schema of `deploy`, serokell/deploy-rs interface.json (checked by its
#   `deployChecks`, flake.nix, with Python's jsonschema); how sshOpts are used, src/deploy.rs and
#   src/push.rs (`ssh USER@HOST <sshOpts...>`, and NIX_SSHOPTS = sshOpts joined by spaces).
let
  inherit (builtins)
    attrNames
    concatMap
    concatStringsSep
    elem
    elemAt
    filter
    foldl'
    fromJSON
    fromTOML
    genList
    head
    isAttrs
    isList
    isPath
    isString
    length
    listToAttrs
    mapAttrs
    pathExists
    match
    readFile
    replaceStrings
    split
    substring
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

  # `host_key_policy` -> the StrictHostKeyChecking it passes (nixherd.sshrules.HOST_KEY_POLICIES).
  strictHostKeyChecking = {
    strict = "yes";
    accept-new = "accept-new";
  };

  # Node names Colmena keeps for the hive itself (src/nix/hive/eval.nix, `reservedNames`): such a
  # node would replace the hive's `meta` here, and Colmena refuses the name anyway.
  colmenaReserved = [
    "defaults"
    "meta"
    "network"
  ];

  # deploy-rs's interface.json keys `nodes` by the pattern `[A-z][A-z0-9_-]*` with
  # `additionalProperties: false`. A JSON Schema pattern is not anchored (it matches anywhere in
  # the name), so the names it rejects are those without any character of A..z: among nixherd's
  # names ([A-Za-z0-9][A-Za-z0-9_.-]*), the ones with no letter and no `_`, such as `10-0-0-1`.
  deployRsNameOk = name: match ".*[A-z].*" name != null;

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

  # --- Terraform/OpenTofu outputs (docs/terraform.md) -------------------------------------------
  # Nix cannot run Terraform: the outputs come from the snapshot `nixherd terraform sync` writes
  # beside the inventory (`inventory.toml` -> `inventory.terraform.json`), the same file the
  # Python resolver reads (nixherd/inventory/terraform.py), with the same rules.
  snapshotFor =
    inventory:
    let
      base = baseNameOf (toString inventory);
      stem = if match "(.*)[.]toml" base == null then base else head (match "(.*)[.]toml" base);
      file = dirOf inventory + "/${stem}.terraform.json";
    in
    if isAttrs inventory || !(pathExists file) then null else fromJSON (readFile file);

  # `NAME.OUTPUT.path.inside` -> the value; a path step into a list is an index.
  terraformValue =
    snapshot: ref:
    let
      parts = filter isString (split "[.]" ref);
      source = elemAt parts 0;
      output = elemAt parts 1;
      inside = genList (i: elemAt parts (i + 2)) (length parts - 2);
      outputs =
        if snapshot == null then
          throw "nixherd: '${ref}': no Terraform snapshot beside the inventory: run `nixherd terraform sync` (in a git flake, `git add` the snapshot too)"
        else
          (snapshot.sources.${source} or { }).outputs or { };
      value =
        outputs.${output}
          or (throw "nixherd: terraform.${source}: output '${output}' is not in the snapshot: run `nixherd terraform sync`");
      step = v: k: if isList v then elemAt v (fromJSON k) else v.${k};
    in
    foldl' step value inside;

  # `{ terraform = "NAME.OUTPUT..."; }` anywhere in vars: the value it names.
  isMarker = v: isAttrs v && attrNames v == [ "terraform" ] && isString v.terraform;
  substituteVars =
    snapshot: v:
    if isMarker v then
      terraformValue snapshot v.terraform
    else if isAttrs v then
      mapAttrs (_: substituteVars snapshot) v
    else if isList v then
      map (substituteVars snapshot) v
    else
      v;
  withTerraformVars =
    snapshot: layer:
    if isAttrs layer && isAttrs (layer.vars or null) then
      layer // { vars = substituteVars snapshot layer.vars; }
    else
      layer;

  # A role's `targets_from`: each output a list (hosts, or objects with host) or a map from node
  # name to such an object; a null attribute is unset, and a port given as a string (Terraform
  # 0.11 has no numbers in outputs) is read as the integer it spells.
  terraformTargets =
    snapshot: role:
    let
      given = role.targets_from or [ ];
      refs = if isList given then given else [ given ];
      entriesOf =
        ref:
        let
          value = terraformValue snapshot ref;
        in
        if isList value then
          map (entry: {
            inherit entry;
            name = null;
          }) value
        else
          map (name: {
            inherit name;
            entry = value.${name};
          }) (attrNames value);
      toTarget =
        { entry, name }:
        let
          set = if isString entry then { host = entry; } else filterAttrs (_: x: x != null) entry;
          named = if name == null then set else set // { inherit name; };
        in
        if isString (named.port or null) then named // { port = fromJSON named.port; } else named;
    in
    concatMap (ref: map toTarget (entriesOf ref)) refs;

  # Every node of the inventory as `{ name; origin; value; }` (origin, the key path of its table,
  # only for messages): the fanned-out targets role by role, then the explicit nodes.
  nodeEntries =
    snapshot: parsed:
    let
      # Markers in vars are read only when the inventory declares sources (as in Python).
      sub = if parsed ? terraform then withTerraformVars snapshot else (layer: layer);
      inv = parsed;
      defaults = sub (inv.defaults or { });
      roles = mapAttrs (_: role: sub role // { targets = map sub (role.targets or [ ]); }) (
        inv.roles or { }
      );
      explicit = mapAttrs (_: sub) (inv.nodes or { });
      targetsOf =
        roleName:
        let
          role = roles.${roleName};
          own = role.targets;
          targets = own ++ (if role ? targets_from then terraformTargets snapshot role else [ ]);
        in
        genList (
          index:
          let
            target = elemAt targets index;
            origin =
              if index < length own then
                "roles.${roleName}.targets[${toString index}]"
              else
                "roles.${roleName}.targets_from[${toString (index - length own)}]";
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
  resolve = inventory: resolveWith (snapshotFor inventory) inventory;
  resolveWith =
    snapshot: inventory:
    let
      entries = nodeEntries snapshot (parseInventory inventory);
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
      # The Terraform snapshot (a path or its data); default: the one beside the inventory.
      terraform ? null,
    }:
    let
      inv = parseInventory inventory;
      snapshot =
        if terraform == null then
          snapshotFor inventory
        else if isAttrs terraform then
          terraform
        else
          fromJSON (readFile terraform);
      nodes = resolveWith snapshot inv;
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

      # Every module gets `node` (the resolved node), and Colmena's module arguments: `name`, the
      # node's name, and `nodes`, every node's evaluated system by name (the node's own too), as
      # Colmena's evalNode passes them (src/nix/hive/eval.nix), so that modules written for a
      # Colmena hive work unchanged. `nodes` is this very attrset: lazy, each system evaluated
      # once (Colmena evaluates a second, unchecked copy of each for it), and only what a module
      # reads is evaluated. Like Colmena's, they come last and win over `specialArgs`.
      nixosConfigurations = mapAttrs (
        name: node:
        system' {
          inherit (node) system;
          specialArgs = sharedArgs // {
            inherit node name;
            nodes = nixosConfigurations;
          };
          modules = nodeModules name node;
        }
      ) nodes;

      # The inventory's `[defaults] ssh_config`, as `-F FILE` words: an absolute path as it is, a
      # relative one against the inventory's directory (Python's rule), which for a flake is its
      # copy in the store, so the file must be part of the flake (tracked by git); for an inventory
      # given as an attrset, against `root`. A relative file that is missing is an error here rather
      # than in every ssh call the peer would make.
      sshConfig =
        let
          file = (inv.defaults or { }).ssh_config or null;
          base = if isAttrs inventory then toString root else toString (dirOf inventory);
          path = "${base}/${file}";
        in
        if file == null then
          null
        else if substring 0 1 file == "/" then
          file
        else if pathExists path then
          path
        else
          throw "nixherd: defaults.ssh_config '${file}' not found (looked for ${path}; a relative ssh_config must be in the flake, tracked by git, or give an absolute path)";
      sshConfigWords = if sshConfig == null then [ ] else [ "-F" sshConfig ];
      sshOptionWords = node: concatMap (option: [ "-o" option ]) node.ssh_options;
      hostKeyWords =
        name: node:
        if strictHostKeyChecking ? ${node.host_key_policy} then
          [ "-o" "StrictHostKeyChecking=${strictHostKeyChecking.${node.host_key_policy}}" ]
        else
          throw "nixherd: node '${name}': host_key_policy must be strict or accept-new, got '${node.host_key_policy}'";

      importNixpkgs = system: import nixpkgs { inherit system; };

      reservedNodes = filter (name: elem name colmenaReserved) (attrNames nodes);
      colmenaHive =
        if reservedNodes != [ ] then
          throw "nixherd: node '${concatStringsSep "', '" reservedNodes}': Colmena keeps the names ${concatStringsSep ", " colmenaReserved} for the hive itself: rename the node"
        else
          hive;
      hive =
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
          # A null port or user (none set) is left to ssh by Colmena, as the option types allow.
          # `sshOptions` only when there is something to pass: Colmena before the option existed
          # (zhaofengli/colmena PR #197, 2024) refuses an unknown option. Colmena puts its own
          # `-o StrictHostKeyChecking=accept-new` before them (src/nix/host/ssh.rs), and ssh keeps
          # the first value of an option: the host key policy cannot be carried, so it is not
          # passed (docs/nix-library.md). The port is `targetPort`, never `-p` here: Colmena adds
          # `-p` after sshOptions and ssh keeps the first `-p` too.
          deployment =
            {
              targetHost = node.host;
              targetUser = node.user;
              targetPort = node.port;
              inherit (node) tags;
            }
            // (
              let
                words = sshConfigWords ++ sshOptionWords node;
              in
              if words == [ ] then { } else { sshOptions = words; }
            );
          imports = nodeModules name node;
        }) nodes;

      # deploy-rs runs `ssh USER@HOST <sshOpts...>` and has no port or host key setting of its own,
      # so all of it goes into sshOpts: the ssh_config, the port, the host key policy (before the
      # node's own options: ssh keeps the first value), then the node's options. deploy-rs joins
      # sshOpts with spaces for NIX_SSHOPTS; no word holds a space (Python's validation). Without a
      # user, deploy-rs logs in as the local user (`whoami`), not as ssh_config's `User`.
      badDeployNames = filter (name: !(deployRsNameOk name)) (attrNames nodes);
      deployNodes =
        if badDeployNames != [ ] then
          throw "nixherd: node '${concatStringsSep "', '" badDeployNames}': deploy-rs's schema (interface.json) needs a letter or _ in a node name: rename the node"
        else
          mapAttrs (
            name: node:
            {
              hostname = node.host;
              sshOpts =
                sshConfigWords
                ++ (if node.port == null then [ ] else [ "-p" (toString node.port) ])
                ++ hostKeyWords name node
                ++ sshOptionWords node;
              profiles.system = {
                user = "root";
                path = deploy-rs.lib.${node.system}.activate.nixos nixosConfigurations.${name};
              };
            }
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

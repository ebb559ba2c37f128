# The `nixherd nodes --on @TAG --json` listing computed by Nix alone, for the benchmark: read the
# inventory with builtins.fromTOML, fan roles out to nodes, merge defaults < role < node for the
# listed fields, keep the nodes carrying TAG, sort by name. Builtins only (no nixpkgs).
{ file, tag }:
let
  inv = builtins.fromTOML (builtins.readFile file);
  defaults = inv.defaults or { };
  roles = inv.roles or { };
  explicit = inv.nodes or { };

  mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (builtins.attrNames attrs);
  unique = builtins.foldl' (seen: x: if builtins.elem x seen then seen else seen ++ [ x ]) [ ];
  dashed = builtins.replaceStrings [ "." ":" ] [ "-" "-" ];
  # The last layer that sets `field` wins, else the built-in default.
  pick = layers: field: default:
    builtins.foldl' (acc: layer: layer.${field} or acc) default layers;

  resolve = { name, role, host, layers }: {
    inherit name role host;
    user = pick layers "user" "root";
    port = pick layers "port" 22;
    tags = unique (builtins.concatLists (map (layer: layer.tags or [ ]) layers));
  };

  fannedOut = builtins.concatLists (mapAttrsToList
    (roleName: role: map
      (target: resolve {
        name = target.name or "${roleName}-${dashed target.host}";
        role = roleName;
        host = target.host;
        layers = [ defaults role target ];
      })
      (role.targets or [ ]))
    roles);

  nodes = mapAttrsToList
    (name: node: resolve {
      inherit name;
      role = node.role or null;
      host = node.host or name;
      layers = [ defaults ] ++ (if node ? role then [ roles.${node.role} ] else [ ]) ++ [ node ];
    })
    explicit;

  selected = builtins.filter (node: builtins.elem tag node.tags) (fannedOut ++ nodes);
in
builtins.sort (a: b: a.name < b.name) selected

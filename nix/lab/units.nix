# systemd units of a lab system: `systemd.services.<name>` in NixOS's shape (the subset a lab
# needs), checked, and rendered as NixOS renders them.
#
#   (import ./units.nix { inherit system check; }).render services
#
# returns `{ valid; entries; }`: `valid` is true or throws a message naming the option; `entries`
# is a list of `{ path; text; }` (a file) or `{ path; link; }` (a symlink) under
# `$out/etc/systemd/system`. Sources of the rendering (NixOS/nixpkgs):
#   nixos/lib/systemd-lib.nix: serviceToUnit (the [Service] section: Environment= lines as JSON
#     strings, then X-ReloadIfChanged=true or X-RestartIfChanged=false, X-StopIfChanged=false,
#     then serviceConfig), commonUnitText ([Unit], then [Install] WantedBy=), unitConfig
#     (Requires/Wants/After/... as space-separated lists, X-Restart-Triggers and
#     X-Reload-Triggers as a store file holding the triggers, Description), attrsToSection
#     (a list value is one line per item, booleans as true/false), generateUnits (a unit that
#     overrides one it does not own is `<unit>.d/overrides.conf`; wantedBy is a link
#     `<target>.wants/<unit>` -> `../<unit>`), makeJobScript (script -> an executable in the
#     store, run with `set -e`).
#   nixos/lib/systemd-unit-options.nix: the options and their defaults (wantedBy [ ],
#     restartIfChanged true, reloadIfChanged false, stopIfChanged true).
# Lab differences: scripts run under the host's /bin/sh (no nixpkgs); PATH is the `path`
# entries' bin and sbin, then the host's /usr/sbin:/usr/bin:/sbin:/bin, and is only set for
# units that run a script or have a `path`; a unit with neither `script` nor
# `serviceConfig.ExecStart` (or with `overrideStrategy = "asDropin"`) is a drop-in for a unit the
# host has, since the lab cannot look at the host's units while building; `enable = false` leaves
# the unit out.
{ system, check }:
let
  inherit (builtins)
    all
    any
    attrNames
    concatMap
    concatStringsSep
    elem
    filter
    isAttrs
    isBool
    isInt
    isList
    isPath
    isString
    listToAttrs
    match
    replaceStrings
    toJSON
    ;

  unitName = "[a-zA-Z0-9@%:_.\\\\-]+";
  unitTypes = "service|socket|device|mount|automount|swap|target|path|timer|scope|slice";
  isUnitName = s: isString s && match "${unitName}[.](${unitTypes})" s != null;
  isServiceName = s: isString s && match unitName s != null && match ".*[.](${unitTypes})" s == null;
  isDerivation = v: isAttrs v && (v.type or null) == "derivation";

  # One value of a unit key: what systemd reads (a path is copied to the store, as NixOS does).
  isScalar = v: isString v || isInt v || isBool v || isPath v || isDerivation v;
  toOption =
    v:
    if v == true then
      "true"
    else if v == false then
      "false"
    else if isPath v then
      "${v}"
    else
      toString v;
  noNewline = v: !(isString v) || match "[^\n]*" v != null;
  sectionValueOk = v: if isList v then all (x: isScalar x && noNewline x) v else isScalar v && noNewline v;
  section =
    attrs:
    concatStringsSep "" (
      concatMap (name: map (v: "${name}=${toOption v}\n") (if isList attrs.${name} then attrs.${name} else [ attrs.${name} ])) (
        attrNames attrs
      )
    );

  storeSafe = replaceStrings [ "@" ":" "\\" "%" "[" "]" ] [ "-" "-" "-" "-" "" "" ];

  # A file in the store with this text (no nixpkgs: the host's /bin/sh writes it).
  textFile =
    name: text: executable:
    derivation {
      name = storeSafe name;
      inherit system text;
      builder = "/bin/sh";
      args = [
        "-c"
        (''cp "$textPath" "$out"'' + (if executable then '' && chmod 0555 "$out"'' else ""))
      ];
      PATH = "/usr/bin:/bin";
      passAsFile = [ "text" ];
    };
  jobScript = name: text: "${textFile "unit-script-${name}" "#!/bin/sh\nset -e\n${text}\n" true}";
  triggers = name: values: "${textFile name (toString (map toOption values)) false}";

  defaults = {
    enable = true;
    description = "";
    script = "";
    reload = "";
    preStart = "";
    postStart = "";
    preStop = "";
    postStop = "";
    serviceConfig = { };
    unitConfig = { };
    environment = { };
    path = [ ];
    wantedBy = [ ];
    requiredBy = [ ];
    after = [ ];
    before = [ ];
    wants = [ ];
    requires = [ ];
    bindsTo = [ ];
    partOf = [ ];
    conflicts = [ ];
    reloadIfChanged = false;
    restartIfChanged = true;
    stopIfChanged = true;
    restartTriggers = [ ];
    reloadTriggers = [ ];
    overrideStrategy = "asDropinIfExists";
  };
  scripts = [
    "script"
    "reload"
    "preStart"
    "postStart"
    "preStop"
    "postStop"
  ];
  unitLists = [
    "after"
    "before"
    "wants"
    "requires"
    "bindsTo"
    "partOf"
    "conflicts"
  ];
  bools = [
    "enable"
    "reloadIfChanged"
    "restartIfChanged"
    "stopIfChanged"
  ];

  # Every problem of one service, as messages naming the option.
  problems =
    name: def:
    let
      at = "systemd.services.${name}";
      d = defaults // def;
      unknown = filter (k: !(defaults ? ${k})) (attrNames def);
      bad = ok: message: if ok then [ ] else [ "${at}.${message}" ];
      envOk = n: v: v == null || isString v || isInt v || isPath v || isDerivation v;
    in
    (if isServiceName name then [ ] else [ "${at}: `${name}` is no service name (letters, digits and @%:_.-, no type suffix)" ])
    ++ map (k: "${at}.${k}: no such option in the lab (it knows ${concatStringsSep ", " (attrNames defaults)})") unknown
    ++ concatMap (k: bad (isString d.${k}) "${k} must be a string (shell script)") scripts
    ++ bad (isString d.description && noNewline d.description) "description must be a one-line string"
    ++ concatMap (k: bad (isBool d.${k}) "${k} must be a boolean") bools
    ++ concatMap (k: bad (isList d.${k} && all isUnitName d.${k}) "${k} must be a list of unit names (such as \"multi-user.target\")") (
      unitLists ++ [ "wantedBy" "requiredBy" ]
    )
    ++ bad (isList d.restartTriggers) "restartTriggers must be a list"
    ++ bad (isList d.reloadTriggers) "reloadTriggers must be a list"
    ++ bad (isList d.path && all (p: isPath p || isDerivation p || isString p) d.path) "path must be a list of packages or paths"
    ++ bad (elem d.overrideStrategy [ "asDropinIfExists" "asDropin" ]) "overrideStrategy must be \"asDropinIfExists\" or \"asDropin\""
    ++ concatMap (
      sectionName:
      let
        attrs = d.${sectionName};
      in
      if !(isAttrs attrs) || isDerivation attrs then
        [ "${at}.${sectionName} must be an attribute set of unit keys" ]
      else
        concatMap (
          k:
          bad (match "[A-Za-z][A-Za-z0-9-]*" k != null && sectionValueOk attrs.${k})
            "${sectionName}.${k}: a key of letters, digits and -, with a one-line string, number, boolean or path (or a list of them)"
        ) (attrNames attrs)
    ) [ "serviceConfig" "unitConfig" ]
    ++ (
      if isAttrs d.environment && !(isDerivation d.environment) then
        concatMap (
          n:
          bad (match "[A-Za-z_][A-Za-z0-9_]*" n != null && envOk n d.environment.${n} && noNewline d.environment.${n})
            "environment.${n}: a variable name with a one-line string, number or path"
        ) (attrNames d.environment)
      else
        [ "${at}.environment must be an attribute set of variables" ]
    );

  # A checked service, as NixOS's option defaults fill it in.
  render1 =
    name: def:
    let
      d = defaults // def;
      unit = "${name}.service";
      # As NixOS's environment.PATH: every entry's bin, then every entry's sbin.
      pathBins = map (p: "${toOption p}/bin") d.path ++ map (p: "${toOption p}/sbin") d.path;
      runsScript = any (k: d.${k} != "") scripts;
      environment =
        (
          if runsScript || d.path != [ ] then
            { PATH = concatStringsSep ":" (pathBins ++ [ "/usr/sbin:/usr/bin:/sbin:/bin" ]); }
          else
            { }
        )
        // d.environment;
      execs =
        listToAttrs (
          concatMap (
            k:
            if d.${k.option} != "" then
              [
                {
                  name = k.key;
                  value = jobScript "${name}-${k.suffix}" d.${k.option};
                }
              ]
            else
              [ ]
          ) [
            { option = "script"; key = "ExecStart"; suffix = "start"; }
            { option = "reload"; key = "ExecReload"; suffix = "reload"; }
            { option = "preStart"; key = "ExecStartPre"; suffix = "pre-start"; }
            { option = "postStart"; key = "ExecStartPost"; suffix = "post-start"; }
            { option = "preStop"; key = "ExecStop"; suffix = "pre-stop"; }
            { option = "postStop"; key = "ExecStopPost"; suffix = "post-stop"; }
          ]
        );
      serviceConfig = execs // d.serviceConfig;
      keyOf = {
        after = "After";
        before = "Before";
        wants = "Wants";
        requires = "Requires";
        bindsTo = "BindsTo";
        partOf = "PartOf";
        conflicts = "Conflicts";
      };
      unitConfig =
        listToAttrs (
          concatMap (k: if d.${k} != [ ] then [ { name = keyOf.${k}; value = toString d.${k}; } ] else [ ]) unitLists
        )
        // (if d.restartTriggers != [ ] then { X-Restart-Triggers = triggers "X-Restart-Triggers-${name}" d.restartTriggers; } else { })
        // (if d.reloadTriggers != [ ] then { X-Reload-Triggers = triggers "X-Reload-Triggers-${name}" d.reloadTriggers; } else { })
        // (if d.description != "" then { Description = d.description; } else { })
        // d.unitConfig;
      envLines = concatStringsSep "" (
        map (n: if environment.${n} == null then "" else "Environment=${toJSON "${n}=${toOption environment.${n}}"}\n") (
          attrNames environment
        )
      );
      text =
        "[Unit]\n"
        + section unitConfig
        + "\n[Service]\n"
        + envLines
        + (
          if d.reloadIfChanged then
            "X-ReloadIfChanged=true\n"
          else if !d.restartIfChanged then
            "X-RestartIfChanged=false\n"
          else
            ""
        )
        + (if d.stopIfChanged then "" else "X-StopIfChanged=false\n")
        + section serviceConfig
        + (if d.wantedBy != [ ] then "\n[Install]\nWantedBy=${concatStringsSep " " d.wantedBy}\n" else "");
      dropin = d.overrideStrategy == "asDropin" || !(serviceConfig ? ExecStart);
      links =
        kind: targets:
        map (target: {
          path = "${target}.${kind}/${unit}";
          link = "../${unit}";
        }) targets;
    in
    if !d.enable then
      [ ]
    else
      [
        {
          path = if dropin then "${unit}.d/overrides.conf" else unit;
          inherit text;
        }
      ]
      ++ links "wants" d.wantedBy
      ++ links "requires" d.requiredBy;
in
{
  render =
    services:
    let
      isSet = isAttrs services && !(isDerivation services);
      defs = if isSet then services else { };
      names = attrNames defs;
      allProblems =
        if !isSet then
          [ "systemd.services must be an attribute set of services" ]
        else
          concatMap (n: if isAttrs defs.${n} then problems n defs.${n} else [ "systemd.services.${n} must be an attribute set" ]) names;
    in
    {
      valid = check (allProblems == [ ]) (concatStringsSep "; " allProblems);
      entries = concatMap (n: render1 n defs.${n}) names;
    };
}

# The lab's `mkSystem`: NixOS-shaped systems for nixherd's lab hosts, built without nixpkgs.
#
#   (import ./lab.nix).mkSystem { system ? "x86_64-linux"; specialArgs ? { }; modules ? [ ]; }
#
# has the call shape of nixpkgs' `lib.nixosSystem` and returns `{ config; ... }` with
# `config.system.build.toplevel`: a store path with `activate`, `bin/switch-to-configuration`
# (switch | boot | test | dry-activate), `nixos-version`, `sw/bin/`, `etc/` and `config.json`.
# Deploy it as on NixOS: `nix-env -p /nix/var/nix/profiles/system --set PATH` then
# `PATH/bin/switch-to-configuration switch`.
#
# Modules are attrsets, functions `{ node, config, lib, ... }: attrset`, or paths to either; they
# may use `imports`, the `{ config = ...; options = ...; }` form and `lib.mkDefault`, `mkForce`,
# `mkIf`, `mkMerge`. They are merged in order: attrsets key by key, lists concatenated, otherwise
# the later definition wins (unless a priority says otherwise). `pkgs` is no argument a module can
# use (no nixpkgs here). Options the lab knows:
#
#   networking.hostName         the host's name (default "nixos")
#   lab.version                 what `nixos-version` prints (default "lab"; [A-Za-z0-9._+-])
#   lab.files."<name>"          text of a file; activation points /nix/var/lab/etc at them
#   systemd.services.<name>     a unit in NixOS's shape (nix/lab/units.nix: description, script,
#                               reload, pre/postStart, pre/postStop, serviceConfig, unitConfig,
#                               environment, path, wantedBy (default [ ]), requiredBy, after,
#                               before, wants, requires, bindsTo, partOf, conflicts,
#                               reloadIfChanged, restartIfChanged, stopIfChanged, restartTriggers,
#                               reloadTriggers, overrideStrategy, enable), rendered into
#                               $out/etc/systemd/system with NixOS's X- keys. Without script or
#                               ExecStart it is a drop-in (`<name>.service.d/overrides.conf`) for
#                               a unit the host has, e.g. `systemd.services.sshd.restartTriggers`.
#   lab.service.command         shorthand for one long-running service, the unit `app.service`
#                               (`lab.service.name` to rename it), wanted by multi-user.target;
#                               env PORT, LAB_NODE, LAB_VERSION, LAB_SYSTEM (so a new system
#                               restarts it); `systemd.services.app.*` refine it
#   lab.service.port            its port: its start succeeds once the port listens (10 s), else
#                               the unit fails (switch exits 4). Without a command, a responder
#                               (nix/lab/responder.py) answers HTTP GET / with {"node", "version",
#                               "system"} of /run/current-system, /status with its pid and reload
#                               count, /data/NAME with files under /nix/var/lab/data; it re-reads
#                               them on SIGHUP, the unit's reload.
#   lab.payload.sharedMB        closure size: a blob shared by every node using the same size,
#   lab.payload.nodeMB          plus one per node (deterministic pseudo-random bytes, seeded by
#   lab.payload.seed            the host name unless a seed is given)
#   lab.fail.activation         activation exits 1 after moving /run/current-system, the files
#                               and the units (switch goes on, then exits 2, as NixOS's does)
#   lab.fail.hang               activation hangs after moving them, in a helper process that
#                               ignores SIGTERM (only SIGKILL of the activation ends it)
#   lab.fail.boot               switch and boot fail (exit 1) to install the boot loader, as a
#                               broken one does; nothing is activated or changed
#   lab.fail.cutSsh             activation freezes the host's sshd listener (SIGSTOP of
#                               /run/sshd.pid): new SSH connections hang, open ones keep working.
#                               Any later activation without it (the rollback) thaws it.
#   lab.evalCost.megabytes      what evaluating this system costs, for tests and benchmarks of
#   lab.evalCost.seconds        evaluation: a string of that many MiB, kept alive by the
#                               configuration as a real NixOS evaluation keeps its values, and
#                               about that many seconds of CPU (SHA-256 over 1 MiB, repeated
#                               evalCost.hashesPerSecond times a second: 700, measured with Nix
#                               2.8 on the lab's x86_64 machine). Both default to 0: no cost (the
#                               toplevel then has no evalCost attribute).
#
# `activate` (nix/lab/activate.py) installs files and links only, so the host's boot stage runs it
# before systemd starts; `bin/switch-to-configuration` (nix/lab/switch.py) follows NixOS's
# contract on the host's systemd (docs/lab.md). Every other option (boot.isContainer, other
# systemd.* ...) is accepted, recorded in the toplevel's `config.json`, and otherwise ignored.
# Builders use the machine's /bin/sh, coreutils and python3 (impure, as the lab's sandbox is off):
# lab systems are for lab hosts only.
let
  inherit (builtins)
    all
    attrNames
    concatLists
    concatMap
    concatStringsSep
    elem
    filter
    foldl'
    genList
    isAttrs
    isBool
    isFloat
    isFunction
    isInt
    isList
    isPath
    isString
    length
    listToAttrs
    mapAttrs
    match
    removeAttrs
    toJSON
    ;

  # -- the module-system functions lab modules need (nix/modules.nix, shared with the importer) --

  modules = import ./modules.nix;
  inherit (modules) mergeDefinitions moduleMeta;

  lib = modules.lib // {
    optional = condition: value: if condition then [ value ] else [ ];
    optionals = condition: values: if condition then values else [ ];
    optionalAttrs = condition: attrs: if condition then attrs else { };
  };

  # Every module's definitions in order, imports before the module that imports them.
  collect =
    args: modules:
    concatMap (
      module:
      let
        loaded = if isPath module || isString module then import module else module;
        value = if isFunction loaded then loaded args else loaded;
        body =
          if value ? config || value ? options then value.config or { } else removeAttrs value moduleMeta;
      in
      collect args (value.imports or [ ]) ++ [ body ]
    ) modules;

  # -- checks and the lab's own options ----------------------------------------------------------

  check = ok: message: if ok then true else throw "nixherd lab: ${message}";
  safe = pattern: s: isString s && match pattern s != null;
  storeNameChars = "[A-Za-z0-9+._?=-]+";
  fileNameOk = name: safe "[A-Za-z0-9._+@=-][A-Za-z0-9._+@=/-]*" name && match ".*(^|/)\\.\\.(/|$).*" name == null;

  labOptions =
    config:
    let
      lab = config.lab or { };
      hostName = config.networking.hostName or "nixos";
      version = lab.version or "lab";
      files = lab.files or { };
      service = if lab.service or null == null then { } else lab.service;
      payload = lab.payload or { };
      fail = lab.fail or { };
      flag = name: fail.${name} or false;
      cost = lab.evalCost or { };
      options = {
        inherit hostName version files;
        service = {
          name = service.name or "app";
          command = service.command or null;
          port = service.port or null;
        };
        payload = {
          sharedMB = payload.sharedMB or 0;
          nodeMB = payload.nodeMB or 0;
          seed = payload.seed or hostName;
        };
        evalCost = {
          megabytes = cost.megabytes or 0;
          seconds = cost.seconds or 0;
          hashesPerSecond = cost.hashesPerSecond or 700;
        };
        fail = {
          activation = flag "activation";
          hang = flag "hang";
          cutSsh = flag "cutSsh";
          boot = flag "boot";
        };
      };
      valid =
        check (safe "[A-Za-z0-9][A-Za-z0-9-]*" hostName) "networking.hostName must be a host name, got ${toJSON hostName}"
        && check (safe storeNameChars version && safe "[A-Za-z0-9._+-]+" version) "lab.version may hold only letters, digits and ._+-, got ${toJSON version}"
        && check (isAttrs files && all (n: fileNameOk n && isString files.${n}) (attrNames files)) "lab.files must map relative names (no ..) to strings"
        && check (all (n: match "systemd(/.*)?" n == null) (attrNames files)) "lab.files: systemd/ holds the system's units (declare them in systemd.services)"
        && check (safe "[A-Za-z0-9][A-Za-z0-9_.@-]*" options.service.name && match ".*[.](service|target|socket|mount|timer|path|slice|scope)" options.service.name == null) "lab.service.name must be a unit name without its .service suffix, got ${toJSON options.service.name}"
        && check (options.service.command == null || isString options.service.command) "lab.service.command must be a string"
        && check (options.service.port == null || (isInt options.service.port && options.service.port > 0 && options.service.port < 65536)) "lab.service.port must be a port number"
        && check (isInt options.payload.sharedMB && isInt options.payload.nodeMB && options.payload.sharedMB >= 0 && options.payload.nodeMB >= 0) "lab.payload.sharedMB and nodeMB must be integers >= 0"
        && check (safe "[A-Za-z0-9._+-]+" options.payload.seed) "lab.payload.seed may hold only letters, digits and ._+-"
        && check (all isBool (map flag [ "activation" "hang" "cutSsh" "boot" ])) "lab.fail.* must be booleans"
        && check (isInt options.evalCost.megabytes && options.evalCost.megabytes >= 0) "lab.evalCost.megabytes must be an integer >= 0"
        && check (isNumber options.evalCost.seconds && options.evalCost.seconds >= 0) "lab.evalCost.seconds must be a number >= 0"
        && check (isNumber options.evalCost.hashesPerSecond && options.evalCost.hashesPerSecond > 0) "lab.evalCost.hashesPerSecond must be a number > 0";
    in
    assert valid;
    options;

  # What config.json records: plain data (functions named, paths as strings, derivations as paths).
  toData =
    v:
    if isFunction v then
      "<function>"
    else if isPath v then
      toString v
    else if isAttrs v then
      (if v ? outPath then toString v else mapAttrs (_: toData) v)
    else if isList v then
      map toData v
    else
      v;

  isNumber = v: isInt v || isFloat v;

  # -- lab.evalCost: an evaluation as costly as asked ---------------------------------------------

  # 64 KiB, then 1 MiB, built once per nix process (an import is evaluated once).
  kibibytes64 = concatStringsSep "" (genList (_: "0123456789abcdef") 4096);
  mebibyte = concatStringsSep "" (genList (_: kibibytes64) 16);

  # `megabytes` MiB in one string: one allocation of the evaluator's heap (the list holds the same
  # 64 KiB string each time, so building it leaves no garbage behind but the list).
  ballastOf = megabytes: concatStringsSep "" (genList (_: kibibytes64) (megabytes * 16));

  # About `seconds` of CPU: SHA-256 over the same MiB, again and again. Each element is a thunk of
  # its own (Nix shares no work between them) and leaves 64 bytes behind, so the time costs no
  # memory to speak of.
  workOf =
    cost:
    let
      rounds = builtins.floor (cost.seconds * cost.hashesPerSecond);
    in
    concatStringsSep "" (genList (_: builtins.hashString "sha256" mebibyte) rounds);

  # -- the derivations ---------------------------------------------------------------------------

  payloadBlob =
    system: name: megabytes: seed:
    derivation {
      name = "lab-payload-${name}-${toString megabytes}M";
      inherit system seed;
      builder = "/bin/sh";
      args = [
        "-c"
        "exec python3 -c \"$script\""
      ];
      PATH = "/usr/bin:/bin";
      megabytes = toString megabytes;
      script = ''
        import os, random
        rng = random.Random(os.environ["seed"])
        with open(os.environ["out"], "wb") as out:
            for _ in range(int(os.environ["megabytes"])):
                out.write(rng.randbytes(1 << 20))
      '';
    };

  versionTool = ''
    #!/bin/sh
    # nixos-version for a lab system.
    case "''${1:-}" in
      --json) printf '{"nixosVersion":"%s"}\n' "$(cat @out@/nixos-version)" ;;
      --hash | --revision) echo lab ;;
      *) cat @out@/nixos-version && echo ;;
    esac
  '';

  # The `lab.service` shorthand as a unit in NixOS's shape (merged under the modules' own
  # `systemd.services`): its start succeeds once the port listens, its reload is SIGHUP.
  # LAB_SYSTEM names the system, so a new system restarts (or reloads) it.
  shorthand =
    options:
    let
      service = options.service;
      self = builtins.placeholder "out";
    in
    if service.command == null && service.port == null then
      { }
    else
      {
        ${service.name} =
          {
            description = "nixherd lab service (lab.service)";
            wantedBy = [ "multi-user.target" ];
            environment = {
              PORT = if service.port == null then "" else toString service.port;
              LAB_NODE = options.hostName;
              LAB_VERSION = options.version;
              LAB_SYSTEM = self;
            };
            serviceConfig =
              {
                ExecReload = "/bin/kill -HUP $MAINPID";
              }
              // (if service.command == null then { ExecStart = "${self}/sw/bin/lab-responder"; } else { })
              // (
                if service.port != null then
                  { ExecStartPost = "${self}/sw/bin/lab-wait-port ${toString service.port}"; }
                else
                  { }
              );
          }
          // (if service.command != null then { script = service.command; } else { });
      };

  # The toplevel's units, written by its builder (paths under etc/systemd/system).
  writeUnits = ''
    import json, os, sys
    root = os.path.join(os.environ["out"], "etc/systemd/system")
    with open(os.environ["unitsJsonPath"]) as f:
        entries = json.load(f)
    for entry in entries:
        path = os.path.join(root, entry["path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if "link" in entry:
            os.symlink(entry["link"], path)
        else:
            with open(path, "w") as f:
                f.write(entry["text"])
  '';

  toplevel =
    {
      system,
      options,
      config,
      services,
      ballast,
    }:
    let
      names = attrNames options.files;
      fileAttrs = genList (i: "file${toString i}") (length names);
      payloads =
        (if options.payload.sharedMB > 0 then [ (payloadBlob system "shared" options.payload.sharedMB "shared") ] else [ ])
        ++ (
          if options.payload.nodeMB > 0 then
            [ (payloadBlob system options.hostName options.payload.nodeMB options.payload.seed) ]
          else
            [ ]
        );
      units = (import ./lab/units.nix { inherit system check; }).render services;
      flagFile = name: on: if on then "touch \"$out/lab/${name}\"\n" else "";
      copyFiles = concatStringsSep "" (
        genList (
          i:
          let
            name = builtins.elemAt names i;
          in
          "mkdir -p \"$(dirname \"$out/etc/${name}\")\"\ncp \"$file${toString i}Path\" \"$out/etc/${name}\"\n"
        ) (length names)
      );
      builderScript = ''
        set -eu
        mkdir -p "$out/bin" "$out/sw/bin" "$out/etc/systemd/system" "$out/lab"
        install() { sed "s|@out@|$out|g" "$1" >"$2" && chmod 0555 "$2"; }
        install "$activateScriptPath" "$out/activate"
        install "$switchScriptPath" "$out/bin/switch-to-configuration"
        install "$versionToolPath" "$out/sw/bin/nixos-version"
        install "$responderPath" "$out/sw/bin/lab-responder"
        install "$waitPortPath" "$out/sw/bin/lab-wait-port"
        cp "$configJsonPath" "$out/config.json"
        printf '%s' "$version" >"$out/nixos-version"
        printf '%s' "$system" >"$out/system"
        printf '%s\n' "$hostName" >"$out/lab/hostname"
        : >"$out/lab/payload"
        for p in $payloads; do printf '%s\n' "$p" >>"$out/lab/payload"; done
        ${copyFiles}
        python3 "$writeUnitsPath"
        ${flagFile "fail-activation" options.fail.activation}${flagFile "fail-hang" options.fail.hang}${flagFile "cut-ssh" options.fail.cutSsh}${flagFile "fail-boot" options.fail.boot}
      '';
    in
    assert units.valid;
    derivation (
      {
        name = "nixos-system-${options.hostName}-${options.version}";
        inherit system;
        builder = "/bin/sh";
        args = [
          "-c"
          builderScript
        ];
        PATH = "/usr/bin:/bin";
        inherit (options) hostName version;
        inherit payloads versionTool writeUnits;
        activateScript = builtins.readFile ./lab/activate.py;
        switchScript = builtins.readFile ./lab/switch.py;
        responder = builtins.readFile ./lab/responder.py;
        waitPort = builtins.readFile ./lab/wait-port.py;
        unitsJson = toJSON units.entries;
        configJson = toJSON (toData (removeAttrs config [ "system" ] // {
          system = removeAttrs (config.system or { }) [ "build" ];
        }));
      }
      // lib.optionalAttrs (ballast != null) {
        # Depends on the whole cost, so that evaluating the system pays it.
        evalCost = builtins.hashString "sha256" ballast + builtins.hashString "sha256" (workOf options.evalCost);
      }
      // {
        passAsFile = [
          "activateScript"
          "switchScript"
          "versionTool"
          "responder"
          "waitPort"
          "writeUnits"
          "unitsJson"
          "configJson"
        ] ++ fileAttrs;
      }
      // listToAttrs (
        genList (i: {
          name = "file${toString i}";
          value = options.files.${builtins.elemAt names i};
        }) (length names)
      )
    );

  mkSystem =
    {
      system ? "x86_64-linux",
      specialArgs ? { },
      modules ? [ ],
      ...
    }:
    let
      noNixpkgs = name: throw "nixherd lab: `${name}` is not available (lab systems are built without nixpkgs)";
      args =
        {
          pkgs = noNixpkgs "pkgs";
          modulesPath = noNixpkgs "modulesPath";
          options = { };
        }
        // specialArgs
        // {
          inherit config lib;
        };
      merged = mergeDefinitions (collect args modules);
      options = labOptions merged;
      # The shorthand first: a module's own `systemd.services.<name>` values win over it.
      services = mergeDefinitions [
        (shorthand options)
        (merged.systemd.services or { })
      ];
      costly = options.evalCost.megabytes > 0 || options.evalCost.seconds > 0;
      ballast = if costly then ballastOf options.evalCost.megabytes else null;
      drv = toplevel {
        inherit system options services ballast;
        config = merged;
      };
      config = merged // {
        system = (merged.system or { }) // {
          build = ((merged.system or { }).build or { }) // {
            toplevel = drv;
          };
        };
      };
    in
    {
      _type = "configuration";
      inherit config;
      options = { };
      lab = options;
      # Held here, the ballast lives as long as the configuration: in one nix process evaluating
      # many nodes, every node's memory adds up, as with NixOS systems.
      evalBallast = ballast;
    };
in
{
  inherit mkSystem lib;
}

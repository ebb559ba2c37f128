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
#   lab.service.command         one long-running service (sh -c), restarted on every activation;
#                               env PORT, LAB_NODE, LAB_VERSION, LAB_SYSTEM
#   lab.service.port            its port; without a command, a responder answers HTTP GET with
#                               {"node", "version", "system"} as JSON. Activation waits (10 s)
#                               until the port listens, else exits 4 as NixOS does on failed units.
#   lab.payload.sharedMB        closure size: a blob shared by every node using the same size,
#   lab.payload.nodeMB          plus one per node (deterministic pseudo-random bytes, seeded by
#   lab.payload.seed            the host name unless a seed is given)
#   lab.fail.activation         activation exits 1 after moving /run/current-system and the files
#   lab.fail.hang               activation hangs after moving them, in a helper process that
#                               ignores SIGTERM (only SIGKILL of the activation ends it)
#   lab.fail.boot               switch and boot fail (exit 1) to install the boot entry, as a
#                               broken boot loader does; nothing is activated or changed
#   lab.fail.cutSsh             activation freezes the host's sshd listener (SIGSTOP): new SSH
#                               connections hang, open ones keep working. Any later activation
#                               without it (the rollback to the previous generation) thaws it; a
#                               reboot starts a fresh sshd.
#   lab.evalCost.megabytes      what evaluating this system costs, for tests and benchmarks of
#   lab.evalCost.seconds        evaluation: a string of that many MiB, kept alive by the
#                               configuration as a real NixOS evaluation keeps its values, and
#                               about that many seconds of CPU (SHA-256 over 1 MiB, repeated
#                               evalCost.hashesPerSecond times a second: 700, measured with Nix
#                               2.8 on the lab's x86_64 machine). Both default to 0: no cost (the
#                               toplevel then has no evalCost attribute).
#
# Every other option (boot.isContainer, services.*, ...) is accepted, recorded in the toplevel's
# `config.json`, and otherwise ignored. Builders use the machine's /bin/sh, coreutils and python3
# (impure, as the lab's sandbox is off): lab systems are for lab hosts only.
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

  # -- the few module-system functions lab modules need -------------------------------------------

  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };

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
    optional = condition: value: if condition then [ value ] else [ ];
    optionals = condition: values: if condition then values else [ ];
    optionalAttrs = condition: attrs: if condition then attrs else { };
  };

  defaultPriority = 100;

  # A definition as a list of { priority; value; }: mkIf/mkMerge expanded, overrides unwrapped.
  # mkIf and overrides over an attrset are pushed down to its values (as NixOS does), so that
  # `config = mkIf config.x { ... }` does not need its condition to know which keys it defines.
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

  isPlainAttrs = v: isAttrs v && !(v ? _type) && (v.type or null) != "derivation";

  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

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

  moduleMeta = [
    "imports"
    "_file"
    "key"
    "disabledModules"
    "meta"
    "freeformType"
  ];

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

  activateScript = ''
    #!/bin/sh
    # Activate this lab system now (NixOS's `activate`): files, /run/current-system, the service.
    set -u
    PATH=@out@/sw/bin:/usr/bin:/bin
    export PATH
    out=@out@
    state=/nix/var/lab
    mkdir -p /run/lab "$state" /nix/var/nix/gcroots

    # Swap a symlink atomically: a new link, renamed over the old one.
    relink() {
      ln -sfn "$1" "$2.tmp.$$" && mv -Tf "$2.tmp.$$" "$2"
    }

    relink "$out/etc" "$state/etc"
    relink "$out" /run/current-system
    relink /run/current-system /nix/var/nix/gcroots/current-system

    if [ -e "$out/lab/fail-activation" ]; then
      echo "lab: activation fails on purpose (lab.fail.activation)" >&2
      exit 1
    fi
    if [ -e "$out/lab/fail-hang" ]; then
      echo "lab: activation hangs on purpose (lab.fail.hang)" >&2
      # Stuck in a helper that ignores SIGTERM (as one in an endless retry may): only SIGKILL
      # of the whole activation ends it, not a TERM that ends this script alone.
      (trap "" TERM; while :; do sleep 3600; done) &
      wait
    fi

    status=0
    # The service runs in its own session: stopping it (its process group, `-PGID`; dash's
    # kill takes no `--`) stops all it started.
    if [ -r /run/lab/service.pid ]; then
      old=$(cat /run/lab/service.pid)
      kill -TERM "-$old" 2>/dev/null
      i=0
      while kill -0 "-$old" 2>/dev/null && [ "$i" -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
      done
      kill -KILL "-$old" 2>/dev/null
      rm -f /run/lab/service.pid
    fi
    if [ -r "$out/lab/service-command" ]; then
      port=$(cat "$out/lab/service-port" 2>/dev/null || true)
      LAB_NODE=$(cat "$out/lab/hostname") LAB_VERSION=$(cat "$out/nixos-version") \
        LAB_SYSTEM=$out PORT=$port \
        setsid sh -c "$(cat "$out/lab/service-command")" </dev/null >>"$state/service.log" 2>&1 &
      echo "$!" >/run/lab/service.pid
      if [ -n "$port" ]; then
        # Wait until it listens; give up at once if it died, else after 10 s.
        if ! python3 -c '
    import socket, sys, time
    port, pid = int(sys.argv[1]), sys.argv[2]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            sys.exit(0)
        except OSError:
            pass
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    sys.exit(1)
        except OSError:
            sys.exit(1)
        time.sleep(0.05)
    sys.exit(1)
    ' "$port" "$(cat /run/lab/service.pid)"; then
          echo "lab: the service does not listen on port $port (see $state/service.log)" >&2
          status=4
        fi
      fi
    fi

    if [ -r /run/sshd.pid ]; then
      if [ -e "$out/lab/cut-ssh" ]; then
        echo "lab: sshd stops answering on purpose (lab.fail.cutSsh)" >&2
        kill -STOP "$(cat /run/sshd.pid)"
      else
        kill -CONT "$(cat /run/sshd.pid)" 2>/dev/null
      fi
    fi
    exit "$status"
  '';

  switchScript = ''
    #!/bin/sh
    # Switch to this lab system as NixOS does: switch | boot | test | dry-activate.
    set -u
    PATH=@out@/sw/bin:/usr/bin:/bin
    export PATH
    out=@out@
    action=''${1:-}
    case "$action" in
      switch | boot | test | dry-activate) ;;
      *)
        echo "Usage: $0 [switch|boot|test|dry-activate]" >&2
        exit 1
        ;;
    esac
    if [ "$(id -u)" != 0 ]; then
      echo "switch-to-configuration: must be run as root" >&2
      exit 1
    fi

    if [ "$action" = dry-activate ]; then
      current=$(readlink /run/current-system 2>/dev/null || echo none)
      echo "would activate $out (current: $current)"
      old=/nix/var/lab/etc
      for f in $(cd "$out/etc" && find . -type f | sort); do
        if [ ! -e "$old/$f" ]; then
          echo "would add etc/''${f#./}"
        elif ! cmp -s "$old/$f" "$out/etc/$f"; then
          echo "would change etc/''${f#./}"
        fi
      done
      if [ -d "$old" ]; then
        for f in $(cd "$old" && find . -type f | sort); do
          [ -e "$out/etc/$f" ] || echo "would remove etc/''${f#./}"
        done
      fi
      if [ -r /run/lab/service.pid ]; then echo "would stop the service"; fi
      if [ -r "$out/lab/service-command" ]; then echo "would start the service"; fi
      exit 0
    fi

    if [ "$action" = switch ] || [ "$action" = boot ]; then
      if [ -e "$out/lab/fail-boot" ]; then
        echo "lab: installing the boot loader fails on purpose (lab.fail.boot)" >&2
        exit 1
      fi
      # The boot loader boots the system profile's generation, as NixOS installs it; with no
      # profile, this system.
      target=$out
      if [ -e /nix/var/nix/profiles/system ]; then
        target=$(readlink -f /nix/var/nix/profiles/system)
      fi
      if [ "$target" != "$out" ]; then
        echo "warning: the system profile points at $target: that is what will boot" >&2
      fi
      mkdir -p /nix/var/lab /nix/var/nix/gcroots
      ln -sfn "$target" "/nix/var/lab/boot-default.tmp.$$"
      mv -Tf "/nix/var/lab/boot-default.tmp.$$" /nix/var/lab/boot-default
      ln -sfn /nix/var/lab/boot-default /nix/var/nix/gcroots/lab-boot-default
    fi
    if [ "$action" = switch ] || [ "$action" = test ]; then
      exec "$out/activate"
    fi
  '';

  versionTool = ''
    #!/bin/sh
    # nixos-version for a lab system.
    case "''${1:-}" in
      --json) printf '{"nixosVersion":"%s"}\n' "$(cat @out@/nixos-version)" ;;
      --hash | --revision) echo lab ;;
      *) cat @out@/nixos-version && echo ;;
    esac
  '';

  responder = ''
    #!/usr/bin/python3
    """nixherd lab responder: HTTP GET answers this node's name, version and system as JSON."""
    import http.server
    import json
    import os

    BODY = (
        json.dumps(
            {
                "node": os.environ["LAB_NODE"],
                "version": os.environ["LAB_VERSION"],
                "system": os.environ["LAB_SYSTEM"],
            }
        ).encode()
        + b"\n"
    )


    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] not in ("/", "/health"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, *args):
            pass


    http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
  '';

  toplevel =
    {
      system,
      options,
      config,
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
      service = options.service;
      serviceCommand =
        if service.command != null then
          service.command
        else if service.port != null then
          "exec \"$LAB_SYSTEM/sw/bin/lab-responder\""
        else
          null;
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
        mkdir -p "$out/bin" "$out/sw/bin" "$out/etc" "$out/lab"
        install() { sed "s|@out@|$out|g" "$1" >"$2" && chmod 0555 "$2"; }
        install "$activateScriptPath" "$out/activate"
        install "$switchScriptPath" "$out/bin/switch-to-configuration"
        install "$versionToolPath" "$out/sw/bin/nixos-version"
        install "$responderPath" "$out/sw/bin/lab-responder"
        cp "$configJsonPath" "$out/config.json"
        printf '%s' "$version" >"$out/nixos-version"
        printf '%s' "$system" >"$out/system"
        printf '%s\n' "$hostName" >"$out/lab/hostname"
        : >"$out/lab/payload"
        for p in $payloads; do printf '%s\n' "$p" >>"$out/lab/payload"; done
        ${copyFiles}
        ${
          if serviceCommand != null then
            "cp \"$serviceCommandPath\" \"$out/lab/service-command\"\n"
          else
            ""
        }${
          if service.port != null then "printf '%s' ${toString service.port} >\"$out/lab/service-port\"\n" else ""
        }${flagFile "fail-activation" options.fail.activation}${flagFile "fail-hang" options.fail.hang}${flagFile "cut-ssh" options.fail.cutSsh}${flagFile "fail-boot" options.fail.boot}
      '';
    in
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
        inherit payloads activateScript switchScript versionTool responder;
        configJson = toJSON (toData (removeAttrs config [ "system" ] // {
          system = removeAttrs (config.system or { }) [ "build" ];
        }));
        serviceCommand = if serviceCommand == null then "" else serviceCommand;
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
          "configJson"
          "serviceCommand"
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
      costly = options.evalCost.megabytes > 0 || options.evalCost.seconds > 0;
      ballast = if costly then ballastOf options.evalCost.megabytes else null;
      drv = toplevel {
        inherit system options ballast;
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

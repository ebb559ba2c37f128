#!/usr/bin/python3
"""switch-to-configuration of a lab system: NixOS's contract, on a lab host's systemd.

    $out/bin/switch-to-configuration switch|boot|test|dry-activate

Follows nixpkgs' switch-to-configuration-ng (pkgs/by-name/sw/switch-to-configuration-ng/src/
src/main.rs) and the .pl it replaced (nixos/modules/system/activation/
switch-to-configuration.pl); docs/lab.md lists the facts relied on and where the lab differs.
systemd is reached with `systemctl` (its private socket: a lab host has no D-Bus).

Exit codes: 0 all well; 1 usage, not root, lock held elsewhere or the boot loader failed
(nothing changed); 2 the activation failed; 3 daemon-reload failed; 4 a unit failed to
stop/reload/restart/start or is failed afterwards (its status is printed).
"""

import ctypes
import fcntl
import glob
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable

OUT = "@out@"
UNITS = "/etc/systemd/system"
NEW_UNITS = os.path.join(OUT, "etc/systemd/system")
STORE = "/nix/store/"
SYSTEMCTL = "/usr/bin/systemctl"
# Where systemd finds the host's own units after /etc (systemd.unit(5), "Unit File Load Path").
HOST_UNIT_DIRS = ("/run/systemd/system", "/usr/local/lib/systemd/system", "/lib/systemd/system")
PROFILE = "/nix/var/nix/profiles/system"
LAB = "/nix/var/lab"
BOOT = os.path.join(LAB, "boot")
ACTIONS = ("switch", "boot", "test", "dry-activate")
# Robust against interruption, as -ng: the units still to start, restart or reload are recorded
# here and read back by the next run.
RUN = "/run/nixos"
START_LIST = os.path.join(RUN, "start-list")
RESTART_LIST = os.path.join(RUN, "restart-list")
RELOAD_LIST = os.path.join(RUN, "reload-list")
# [Unit] keys whose change alone never restarts a unit (-ng's compare_units).
UNIT_IGNORES = frozenset(
    (
        "X-Reload-Triggers",
        "Description",
        "Documentation",
        "OnFailure",
        "OnSuccess",
        "OnFailureJobMode",
        "IgnoreOnIsolate",
        "StopWhenUnneeded",
        "RefuseManualStart",
        "RefuseManualStop",
        "AllowIsolate",
        "CollectMode",
        "SourcePath",
    )
)

UnitInfo = dict[str, dict[str, list[str]]]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def usage(argv0: str) -> None:
    say(
        f"Usage: {argv0} [switch|boot|test|dry-activate]\n"
        "switch:       make the configuration the boot default and activate now\n"
        "boot:         make the configuration the boot default\n"
        "test:         activate the configuration, but don't make it the boot default\n"
        "dry-activate: show what would be done if this configuration were activated"
    )


# -- unit files --------------------------------------------------------------------------------


def parse_ini(info: UnitInfo, text: str) -> None:
    """Add a unit file's keys to `info` (section -> key -> values); an empty value clears the
    key's earlier values, as systemd does. [Install] is skipped (-ng's parse_systemd_ini)."""
    section: str | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            if section != "Install":
                info.setdefault(section, {})
            continue
        if section is None or section == "Install" or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if value == "":
            info[section][key] = []
        else:
            info[section].setdefault(key, []).append(value)


def parse_unit(files: Iterable[str]) -> UnitInfo:
    info: UnitInfo = {}
    for path in files:
        try:
            with open(path) as f:
                parse_ini(info, f.read())
        except OSError:
            continue
    return info


def unit_bool(info: UnitInfo | None, section: str, key: str, default: bool) -> bool:
    values = (info or {}).get(section, {}).get(key)
    if not values:
        return default
    return values[-1] in ("1", "yes", "true", "on")


def compare_units(current: UnitInfo, new: UnitInfo) -> str:
    """How a unit changed: "equal", "reload" (only X-Reload-Triggers) or "restart" (-ng's
    compare_units: a few [Unit] keys never count, any other difference restarts)."""
    result = "equal"
    for name, keys in current.items():
        if name not in new:
            if name == "Unit" and all(k in UNIT_IGNORES for k in keys):
                continue
            return "restart"
        new_keys = new[name]
        for key, values in keys.items():
            if key not in new_keys:
                if name == "Unit" and key in UNIT_IGNORES:
                    continue
                return "restart"
            if values != new_keys[key]:
                if name == "Unit" and key == "X-Reload-Triggers":
                    result = "reload"
                    continue
                if name == "Unit" and key in UNIT_IGNORES:
                    continue
                if name == "Mount" and key == "Options":
                    result = "reload"
                    continue
                return "restart"
        for key in new_keys.keys() - keys.keys():
            if name != "Unit":
                return "restart"
            if key == "X-Reload-Triggers":
                result = "reload"
            elif key not in UNIT_IGNORES:
                return "restart"
    for name in new.keys() - current.keys():
        if name != "Unit":
            return "restart"
        for key in new[name]:
            if key not in UNIT_IGNORES:
                return "restart"
            if key == "X-Reload-Triggers":
                result = "reload"
    return result


def is_ours(path: str) -> bool:
    """A link a lab system's activation made (into the store), not a file of the host's."""
    return os.path.islink(path) and os.readlink(path).startswith(STORE)


def host_unit_file(unit: str) -> str | None:
    """The host's own file of a unit (in /etc/systemd/system if not a lab system's link, else
    further down systemd's load path), or None."""
    here = os.path.join(UNITS, unit)
    if os.path.lexists(here) and not is_ours(here):
        return here
    for directory in HOST_UNIT_DIRS:
        path = os.path.join(directory, unit)
        if os.path.lexists(path):
            return path
    return None


def dropins(directory: str) -> list[str]:
    return glob.glob(os.path.join(glob.escape(directory), "*.conf"))


def by_name(paths: Iterable[str]) -> list[str]:
    """Drop-ins in the order systemd applies them: by file name (systemd.unit(5))."""
    return sorted(paths, key=os.path.basename)


class Unit:
    """One unit as the running system has it and as the new system will."""

    def __init__(self, name: str) -> None:
        self.name = name
        base = name
        if "@" in name and not os.path.lexists(os.path.join(UNITS, name)):
            prefix, _, rest = name.partition("@")
            base = f"{prefix}@.{rest.rsplit('.', 1)[-1]}"
        self.base = base
        current_file = os.path.join(UNITS, base)
        self.current_file = current_file if os.path.lexists(current_file) else host_unit_file(base)
        current_dropins = dropins(os.path.join(UNITS, f"{base}.d"))
        self.old_is_ours = is_ours(current_file) or any(map(is_ours, current_dropins))
        new_file = os.path.join(NEW_UNITS, base)
        new_dropins = dropins(os.path.join(NEW_UNITS, f"{base}.d"))
        self.new_is_ours = os.path.lexists(new_file) or bool(new_dropins)
        # After activation: this system's unit file, else the host's own; the host's own
        # drop-ins stay beside this system's.
        self.new_file = new_file if os.path.lexists(new_file) else host_unit_file(base)
        host_dropins = [path for path in current_dropins if not is_ours(path)]
        self.current_files = [f for f in [self.current_file] if f] + by_name(current_dropins)
        self.new_files = [f for f in [self.new_file] if f] + by_name(new_dropins + host_dropins)

    @property
    def removed(self) -> bool:
        """Gone from the new system: its file was a lab system's and nothing replaces it."""
        return self.new_file is None or os.path.realpath(self.new_file) == "/dev/null"

    def current_info(self) -> UnitInfo:
        return parse_unit(self.current_files)

    def new_info(self) -> UnitInfo:
        return parse_unit(self.new_files)


# -- systemd -----------------------------------------------------------------------------------


def systemctl(*words: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYSTEMCTL, *words],
        stdout=subprocess.PIPE if capture else None,
        text=True,
        check=False,
    )


def active_units() -> dict[str, tuple[str, str]]:
    """Units systemd has loaded that are not inactive: name -> (active state, sub state)."""
    listed = systemctl("list-units", "--all", "--output=json", "--no-pager", capture=True)
    if listed.returncode != 0:
        raise SystemExit(f"switch-to-configuration: cannot list units: {SYSTEMCTL} failed")
    units = {}
    for entry in json.loads(listed.stdout or "[]"):
        if entry["active"] != "inactive":
            units[entry["unit"]] = (entry["active"], entry["sub"])
    return units


def show(units: Iterable[str], *properties: str) -> dict[str, dict[str, str]]:
    """`systemctl show` of some units: unit -> property -> value."""
    names = sorted(units)
    if not names:
        return {}
    shown = systemctl("show", "-p", ",".join(("Id", *properties)), "--", *names, capture=True)
    result: dict[str, dict[str, str]] = {}
    for block in shown.stdout.split("\n\n"):
        values = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in values:
            result[values["Id"]] = values
    return result


# -- the boot loader ---------------------------------------------------------------------------


def relink(target: str, link: str) -> None:
    temporary = f"{link}.tmp.{os.getpid()}"
    os.symlink(target, temporary)
    os.replace(temporary, link)


def install_boot_loader() -> None:
    """The lab's boot loader: /nix/var/lab/boot-default is what the host boots (the system
    profile's generation, as NixOS's loaders default to it), /nix/var/lab/boot/entries one
    entry per profile generation, /nix/var/lab/boot/loader the loader itself. With
    NIXOS_INSTALL_BOOTLOADER=1 (or none installed yet) the loader is installed afresh and every
    entry rewritten, as NixOS's loader scripts reinstall on that variable."""
    if os.path.exists(os.path.join(OUT, "lab/fail-boot")):
        say("lab: installing the boot loader fails on purpose (lab.fail.boot)")
        say("Failed to install bootloader")
        sys.exit(1)
    target = os.path.realpath(PROFILE) if os.path.lexists(PROFILE) else OUT
    if target != OUT:
        say(f"warning: the system profile points at {target}: that is what will boot")
    entries = os.path.join(BOOT, "entries")
    loader = os.path.join(BOOT, "loader")
    os.makedirs(BOOT, 0o755, exist_ok=True)
    if os.environ.get("NIXOS_INSTALL_BOOTLOADER") == "1" or not os.path.exists(loader):
        say("installing the lab boot loader (every entry rewritten)")
        if os.path.isdir(entries) and not os.path.islink(entries):
            for name in os.listdir(entries):
                os.unlink(os.path.join(entries, name))
        with open(f"{loader}.tmp", "w") as f:
            f.write(f"lab boot loader, installed {time.time_ns()}\n")
        os.replace(f"{loader}.tmp", loader)
    os.makedirs(entries, 0o755, exist_ok=True)
    wanted = {}
    profiles = os.path.dirname(PROFILE)
    for link in glob.glob(os.path.join(profiles, "system-*-link")):
        generation = os.path.basename(link)[len("system-") : -len("-link")]
        if generation.isdigit():
            wanted[f"nixos-generation-{generation}"] = os.path.realpath(link)
    for name in os.listdir(entries):
        if name.startswith("nixos-generation-") and name not in wanted:
            os.unlink(os.path.join(entries, name))
    for name, system in wanted.items():
        path = os.path.join(entries, name)
        if not (os.path.islink(path) and os.readlink(path) == system):
            relink(system, path)
    relink(target, os.path.join(LAB, "boot-default"))
    os.makedirs("/nix/var/nix/gcroots", 0o755, exist_ok=True)
    relink(os.path.join(LAB, "boot-default"), "/nix/var/nix/gcroots/lab-boot-default")


# -- planning ----------------------------------------------------------------------------------


class Plan:
    def __init__(self, dry: bool) -> None:
        self.dry = dry
        self.stop: set[str] = set()
        self.skip: set[str] = set()
        self.filtered: set[str] = set()
        self.start = self.recorded(START_LIST)
        self.restart = self.recorded(RESTART_LIST)
        self.reload = self.recorded(RELOAD_LIST)

    @staticmethod
    def recorded(path: str) -> set[str]:
        try:
            with open(path) as f:
                return {line.strip() for line in f if line.strip()}
        except OSError:
            return set()

    def record(self, path: str, unit: str) -> None:
        if not self.dry:
            with open(path, "a") as f:
                f.write(f"{unit}\n")

    def unrecord(self, path: str, unit: str) -> None:
        if self.dry:
            return
        kept = [u for u in sorted(self.recorded(path)) if u != unit]
        with open(path, "w") as f:
            f.writelines(f"{u}\n" for u in kept)

    def add(self, kind: str, unit: str) -> None:
        units, path = {
            "start": (self.start, START_LIST),
            "restart": (self.restart, RESTART_LIST),
            "reload": (self.reload, RELOAD_LIST),
        }[kind]
        units.add(unit)
        self.record(path, unit)

    def drop_reload(self, unit: str) -> None:
        if unit in self.reload:
            self.reload.discard(unit)
            self.unrecord(RELOAD_LIST, unit)

    def modified(self, unit: Unit, info: UnitInfo, active: dict[str, tuple[str, str]]) -> None:
        """A changed unit: what to do with it (-ng's handle_modified_unit)."""
        name = unit.name
        if name in ("sysinit.target", "basic.target", "multi-user.target", "graphical.target"):
            return
        if name.endswith((".unit", ".slice", ".socket")):
            return
        if name.endswith(".mount"):
            self.add("reload" if name in ("-.mount", "nix.mount") else "restart", name)
            return
        if (
            unit_bool(info, "Service", "X-ReloadIfChanged", False)
            and name not in self.restart
            and name not in self.stop
        ):
            self.add("reload", name)
        elif (
            not unit_bool(info, "Service", "X-RestartIfChanged", True)
            or unit_bool(info, "Unit", "RefuseManualStop", False)
            or unit_bool(info, "Unit", "X-OnlyManualStart", False)
        ):
            self.skip.add(name)
        elif not unit_bool(info, "Service", "X-StopIfChanged", True) or not name.endswith(
            ".service"
        ):
            self.add("restart", name)
            self.drop_reload(name)
        else:
            # Socket-activated: stop the socket too and start it rather than the service.
            socket_activated = False
            sockets = " ".join(info.get("Service", {}).get("Sockets", [])).split()
            for socket in sockets or [f"{unit.base.rsplit('.', 1)[0]}.socket"]:
                if socket in active:
                    self.stop.add(socket)
                    if os.path.lexists(os.path.join(NEW_UNITS, socket)):
                        self.add("start", socket)
                        socket_activated = True
            if unit_bool(info, "Service", "X-NotSocketActivated", False):
                socket_activated = False
            if not socket_activated:
                self.add("start", name)
            self.stop.add(name)
            self.drop_reload(name)

    def compare(self, active: dict[str, tuple[str, str]]) -> None:
        for name, (state, _sub) in sorted(active.items()):
            if state not in ("active", "activating"):
                continue
            unit = Unit(name)
            if name.endswith(".target"):
                self.target(unit)
                continue
            if not (unit.old_is_ours or unit.new_is_ours) or unit.current_file is None:
                continue  # the host's own unit, untouched by lab systems
            if unit.removed:
                if unit_bool(unit.current_info(), "Unit", "X-StopOnRemoval", True):
                    self.stop.add(name)
                continue
            new = unit.new_info()
            change = compare_units(unit.current_info(), new)
            if change == "restart":
                self.modified(unit, new, active)
            elif change == "reload" and name not in self.restart:
                self.add("reload", name)

    def target(self, unit: Unit) -> None:
        """Active targets are started again (pulling in units newly wanted by them), unless they
        refuse it; X-StopOnReconfiguration ones are stopped first."""
        info = unit.new_info()
        if not (
            unit.name in ("suspend.target", "hibernate.target", "hybrid-sleep.target")
            or unit_bool(info, "Unit", "RefuseManualStart", False)
            or unit_bool(info, "Unit", "X-OnlyManualStart", False)
        ):
            self.add("start", unit.name)
            if os.environ.get("STC_DISPLAY_ALL_UNITS") != "1":
                self.filtered.add(unit.name)
        if unit_bool(info, "Unit", "X-StopOnReconfiguration", False):
            self.stop.add(unit.name)

    def shown(self, units: set[str]) -> str:
        return ", ".join(sorted(units - self.filtered, key=str.lower))


# -- the switch --------------------------------------------------------------------------------


def dry_activate(plan: Plan) -> int:
    if plan.shown(plan.stop):
        say(f"would stop the following units: {plan.shown(plan.stop)}")
    if plan.skip:
        say(f"would NOT stop the following changed units: {plan.shown(plan.skip)}")
    say(f"would activate the configuration {OUT}")
    if plan.reload:
        say(f"would reload the following units: {plan.shown(plan.reload)}")
    if plan.restart:
        say(f"would restart the following units: {plan.shown(plan.restart)}")
    if plan.shown(plan.start):
        say(f"would start the following units: {plan.shown(plan.start)}")
    return 0


def remove(path: str) -> None:
    if os.path.lexists(path):
        os.unlink(path)


def run_jobs(verb: str, units: set[str]) -> bool:
    """systemctl VERB: it waits for every job and fails when one did."""
    return systemctl(verb, "--", *sorted(units)).returncode == 0


def switch(plan: Plan, before: dict[str, tuple[str, str]]) -> int:
    code = 0
    if plan.stop:
        if plan.shown(plan.stop):
            say(f"stopping the following units: {plan.shown(plan.stop)}")
        run_jobs("stop", plan.stop)
    if plan.skip:
        say(f"NOT restarting the following changed units: {plan.shown(plan.skip)}")

    say("activating the configuration...")
    if subprocess.run([os.path.join(OUT, "activate"), OUT], check=False).returncode != 0:
        say("Failed to run activate script")
        code = 2

    systemctl("reset-failed")
    if systemctl("daemon-reload").returncode != 0:
        say("Failed to reload systemd's units (daemon-reload)")
        code = 3

    if plan.reload:
        # A unit no longer active is started rather than reloaded (a reload would fail).
        states = show(plan.reload, "ActiveState", "RefuseManualStart")
        for name in sorted(plan.reload):
            state = states.get(name, {})
            if state.get("ActiveState") not in ("active", "activating"):
                if state.get("RefuseManualStart") != "yes":
                    plan.add("start", name)
                plan.drop_reload(name)
    if plan.reload:
        say(f"reloading the following units: {plan.shown(plan.reload)}")
        if not run_jobs("reload", plan.reload):
            code = 4
        remove(RELOAD_LIST)
    if plan.restart:
        say(f"restarting the following units: {plan.shown(plan.restart)}")
        if not run_jobs("restart", plan.restart):
            code = 4
        remove(RESTART_LIST)
    if plan.start:
        if plan.shown(plan.start):
            say(f"starting the following units: {plan.shown(plan.start)}")
        if not run_jobs("start", plan.start):
            code = 4
    remove(START_LIST)

    # Let units that fail right after starting be seen (-ng waits for systemd to settle).
    time.sleep(0.25)
    after = active_units()
    failed = sorted(name for name, (state, _sub) in after.items() if state == "failed")
    restarting = [
        n for n, (_s, sub) in after.items() if sub == "auto-restart" and n.endswith(".service")
    ]
    for name, values in show(restarting, "ExecMainStatus").items():
        if values.get("ExecMainStatus", "0") != "0":
            failed.append(name)
    new = sorted(
        (
            n
            for n, (s, _sub) in after.items()
            if s != "failed" and n not in before and not n.endswith(".scope")
        ),
        key=str.lower,
    )
    if new:
        say(f"the following new units were started: {', '.join(new)}")
    if failed:
        failed.sort(key=str.lower)
        say(f"warning: the following units failed: {', '.join(failed)}")
        systemctl("status", "--no-pager", "--full", "--", *failed)
        code = 4
    return code


def sync_store() -> None:
    """Just in case the new configuration hangs the host: the store's file system on disk first
    (syncfs(2) of /nix/store, as -ng; not a sync of every file system of the shared machine)."""
    fd = os.open("/nix/store", os.O_RDONLY)
    try:
        ctypes.CDLL(None, use_errno=True).syncfs(fd)
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    argv0 = os.path.basename(argv[0]) if argv else "switch-to-configuration"
    action = argv[1] if len(argv) > 1 else None
    if action not in ACTIONS:
        usage(argv0)
        return 1
    if os.geteuid() != 0:
        say(f"{argv0} must be run as the root user")
        return 1
    os.environ["NIXOS_ACTION"] = action
    os.makedirs(RUN, 0o755, exist_ok=True)
    os.chmod(RUN, 0o755)
    lock = open(os.path.join(RUN, "switch-to-configuration.lock"), "a")  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        say("Could not acquire lock")
        return 1

    if action in ("switch", "boot"):
        install_boot_loader()
    if os.environ.get("NIXOS_NO_SYNC") != "1":
        sync_store()
    if action == "boot":
        return 0

    before = active_units()
    plan = Plan(dry=action == "dry-activate")
    plan.compare(before)
    if action == "dry-activate":
        return dry_activate(plan)
    return switch(plan, before)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

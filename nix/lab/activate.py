#!/usr/bin/python3
"""Activate this lab system now: NixOS's `activate` for a lab host.

Run by `switch-to-configuration` (switch, test) and by the host's pid-1 stage at boot, before
systemd starts (as NixOS's stage 2 runs it): so it only installs files and links, and never
talks to systemd. It

1. points /nix/var/lab/etc at this system's files (`lab.files`);
2. replaces the previous lab system's units in /etc/systemd/system by this one's: every symlink
   there (and in its `*.d`, `*.wants`, `*.requires` directories) that points into /nix/store is
   removed, then every file of `$out/etc/systemd/system` is linked in. Anything else there is
   the host's own (regular files, masks, links elsewhere): never replaced or deleted, and a unit
   of this system that would replace one is an error (it stays out);
3. points /run/current-system at this system (a GC root keeps it);
4. then misbehaves if asked to (lab.fail.activation, lab.fail.hang, lab.fail.cutSsh).

Exit 0, or 1 when a step failed (the others still ran, as NixOS's activation snippets do).
"""

import contextlib
import os
import signal
import sys
import time

OUT = "@out@"
UNITS = "/etc/systemd/system"
STORE = "/nix/store/"
STATE = "/nix/var/lab"


def relink(target: str, link: str) -> None:
    """Point `link` at `target` atomically: a new link renamed over the old one."""
    temporary = f"{link}.tmp.{os.getpid()}"
    os.symlink(target, temporary)
    os.replace(temporary, link)


def ours(path: str) -> bool:
    """A symlink into the store: a unit file a lab system linked here."""
    return os.path.islink(path) and os.readlink(path).startswith(STORE)


def real_directory(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def remove_previous_units() -> None:
    for name in sorted(os.listdir(UNITS)):
        path = os.path.join(UNITS, name)
        if ours(path):
            os.unlink(path)
        elif real_directory(path):
            for inner in sorted(os.listdir(path)):
                if ours(os.path.join(path, inner)):
                    os.unlink(os.path.join(path, inner))


def install_units(errors: list[str]) -> None:
    source = os.path.join(OUT, "etc/systemd/system")
    for directory, dirs, files in os.walk(source):
        relative = os.path.relpath(directory, source)
        host_dir = UNITS if relative == "." else os.path.join(UNITS, relative)
        if not os.path.lexists(host_dir):
            os.mkdir(host_dir, 0o755)
        elif not real_directory(host_dir):
            errors.append(f"{host_dir} is not a directory of the host's: its units stay out")
            dirs[:] = []
            continue
        entries = files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]
        for name in sorted(entries):
            link = os.path.join(host_dir, name)
            if os.path.lexists(link) and not ours(link):
                errors.append(f"{link} is the host's own: not replaced by this system's")
                continue
            relink(os.path.join(directory, name), link)


def hang() -> None:
    print("lab: activation hangs on purpose (lab.fail.hang)", file=sys.stderr, flush=True)
    # Stuck in a helper that ignores SIGTERM (as one in an endless retry may): only SIGKILL of the
    # whole activation ends it, not a TERM that ends this process alone.
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(3600)
    os.waitpid(child, 0)


def sshd(cut: bool) -> None:
    """Freeze the host's sshd listener (cutSsh) or thaw it (any activation without it)."""
    try:
        with open("/run/sshd.pid") as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return
    if cut:
        print("lab: sshd stops answering on purpose (lab.fail.cutSsh)", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP if cut else signal.SIGCONT)


def main() -> int:
    os.umask(0o022)
    errors: list[str] = []
    for directory in ("/run/lab", STATE, "/nix/var/nix/gcroots"):
        os.makedirs(directory, 0o755, exist_ok=True)
    relink(os.path.join(OUT, "etc"), os.path.join(STATE, "etc"))
    os.makedirs(UNITS, 0o755, exist_ok=True)
    remove_previous_units()
    install_units(errors)
    relink(OUT, "/run/current-system")
    relink("/run/current-system", "/nix/var/nix/gcroots/current-system")
    for error in errors:
        print(f"lab: activation: {error}", file=sys.stderr)

    if os.path.exists(os.path.join(OUT, "lab/fail-activation")):
        print("lab: activation fails on purpose (lab.fail.activation)", file=sys.stderr)
        return 1
    if os.path.exists(os.path.join(OUT, "lab/fail-hang")):
        hang()
    sshd(cut=os.path.exists(os.path.join(OUT, "lab/cut-ssh")))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

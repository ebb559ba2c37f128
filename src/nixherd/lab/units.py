"""The systemd side of a lab host's /etc: its base units, pure text (no I/O).

A host boots Debian's systemd with `/etc/systemd/system` replaced by what `base_units` returns:
none of the machine's enabled units (its own sshd on port 22, cron, getty...), the host's sshd and
nix-daemon, and masks for what must not run in a host that shares the machine's kernel:

- units that would change the whole machine: kernel modules, sysctl, binfmt, the audit socket
  (every host's journal would get the machine's audit log), udev, clock sync;
- units that need D-Bus, which a lab host does not run (logind, the bus itself): started, they
  fail, and a failed unit makes a switch exit 4.

Lab systems add their own units beside these as links into /nix/store (nix/lab.nix's `activate`);
the base files here are regular files a lab system never replaces.
"""

from __future__ import annotations

from collections.abc import Mapping

# Entry in /etc/systemd/system -> a symlink target (str starting with "/") or file text.
Tree = Mapping[str, str]

MASKED = (
    # need D-Bus (a lab host has none: systemctl reaches systemd over its private socket)
    "dbus.service",
    "dbus.socket",
    "systemd-logind.service",
    # consoles and logins on terminals a host does not have
    "getty.target",
    "console-getty.service",
    "systemd-ask-password-wall.path",
    "systemd-ask-password-console.path",
    # the machine's kernel, clock and devices: never a host's to change
    "systemd-modules-load.service",
    "kmod-static-nodes.service",
    "systemd-sysctl.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-journald-audit.socket",
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "systemd-hwdb-update.service",
    "systemd-timesyncd.service",
    "systemd-remount-fs.service",
    "dev-hugepages.mount",
    "sys-fs-fuse-connections.mount",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "systemd-random-seed.service",
    "systemd-firstboot.service",
    "systemd-machine-id-commit.service",
    "systemd-pcrphase.service",
    "systemd-pcrphase-sysinit.service",
    "systemd-repart.service",
)


# tmpfiles.d rules (Debian's, by file name) a host must not apply: a host shares the machine's
# /tmp, /root, /home and /srv, and these would empty /tmp (`D /tmp`), delete every other host's and
# the machine's PrivateTmp directories (`R! /tmp/systemd-private-*`), or change the machine's
# directories. Masked by a link to /dev/null in the host's /etc/tmpfiles.d, which overrides the
# file of the same name in /usr/lib/tmpfiles.d (tmpfiles.d(5), "Configuration Directories").
TMPFILES_MASKED = ("tmp.conf", "systemd-tmp.conf", "x11.conf", "home.conf", "provision.conf")
# Debian's nix-daemon.conf makes the daemon's socket directory 0770 root:nix-users; on a lab host,
# as on NixOS, every user reaches the daemon (the deploy user copies closures through it).
NIX_DAEMON_TMPFILES = (
    "# nixherd lab: every user may reach nix-daemon, as on NixOS.\n"
    "d /nix/var/nix/daemon-socket 0755 root root\n"
    "d /nix/var/nix/gcroots/per-user 1777\n"
    "d /nix/var/nix/profiles/per-user 1777\n"
)


def tmpfiles() -> dict[str, str]:
    """Every entry of a host's /etc/tmpfiles.d: name -> link target or file text."""
    tree = {name: "/dev/null" for name in TMPFILES_MASKED}
    tree["nix-daemon.conf"] = NIX_DAEMON_TMPFILES
    return tree


def sshd_unit(host_name: str, sshd_config: str, log_file: str) -> str:
    """The host's sshd as a unit, as NixOS's and Debian's: sessions outlive a restart of sshd."""
    return "\n".join(
        [
            "# nixherd lab: written by `nixherd lab up`.",
            "[Unit]",
            f"Description=OpenSSH server of lab host {host_name}",
            # Never give up restarting it: tests kill it on purpose, more often than the
            # default start limit allows.
            "StartLimitIntervalSec=0",
            "",
            "[Service]",
            # Debian's sshd tells systemd when it listens.
            "Type=notify",
            f"ExecStart=/usr/sbin/sshd -D -f {sshd_config} -E {log_file}",
            "ExecReload=/bin/kill -HUP $MAINPID",
            # Only the listener: open sessions (a deploy's own) survive its restart.
            "KillMode=process",
            # Read by switch-to-configuration when a lab system's drop-in changes it: restart
            # it in one go rather than stop it before the activation (NixOS's sshd module sets
            # stopIfChanged = false, nixos/modules/services/networking/ssh/sshd.nix), so a
            # hanging activation never leaves the host without an sshd.
            "X-StopIfChanged=false",
            "Restart=always",
            "RestartSec=300ms",
            "RuntimeDirectory=sshd",
            "RuntimeDirectoryPreserve=yes",
            "",
        ]
    )


def base_units(host_name: str, sshd_config: str, sshd_log: str) -> dict[str, str]:
    """Every entry of a host's /etc/systemd/system: relative path -> link target or file text."""
    tree: dict[str, str] = {
        "default.target": "/lib/systemd/system/multi-user.target",
        "sshd.service": sshd_unit(host_name, sshd_config, sshd_log),
        "multi-user.target.wants/sshd.service": "/etc/systemd/system/sshd.service",
        # Debian's own units (nix-setup-systemd); socket-activated as on NixOS.
        "sockets.target.wants/nix-daemon.socket": "/lib/systemd/system/nix-daemon.socket",
    }
    for unit in MASKED:
        tree[unit] = "/dev/null"
    return tree


def is_link(value: str) -> bool:
    """True for a symlink target in a `base_units` tree, False for file text."""
    return value.startswith("/") and "\n" not in value

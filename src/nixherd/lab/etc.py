"""A lab host's own /etc: a copy of the machine's, made each time the host starts.

The host bind-mounts this directory over /etc as a whole. Single files bind-mounted over
/etc/passwd and friends vanish from a running host the moment the machine replaces its own file
(`useradd`, apt adding a user: both rename a new file into place), and sshd then knows no
`deploy`. A directory of the lab's is never replaced by anything on the machine. A restarted host
sees the machine's current /etc, minus its secrets, with the host's own:

- passwd, group, shadow (no hash anywhere), sudoers, hosts, hostname, machine-id (kept per host, so
  its journal stays one machine's across boots), an empty fstab;
- systemd/system: the lab's base units only (`units.base_units`), none of the machine's;
- tmpfiles.d: the rules that would touch the machine's shared directories masked;
- nix/nix.conf trusting the deploy user, as NixOS does a trusted user, so `nix copy --to
  ssh://deploy@...` can add unsigned paths.
"""

from __future__ import annotations

import contextlib
import grp
import os
import secrets
import shutil
from pathlib import Path

from nixherd.lab import render, units
from nixherd.lab.render import Account, HostFiles
from nixherd.run import process

# Files of the machine's /etc that a host's copy leaves out: hashes and backups of the user
# database (the host gets its own shadow, without any hash), never needed inside.
ETC_SECRETS = ("shadow-", "gshadow", "gshadow-", "passwd-", "group-", "subuid-", "subgid-")


def write(path: str, text: str, mode: int = 0o644) -> None:
    """Write a file whole: a new file renamed over the old one."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def machine_id(host: HostFiles) -> str:
    """The host's machine id: made once, kept in its directory."""
    path = os.path.join(host.dir, "machine-id")
    with contextlib.suppress(OSError):
        value = Path(path).read_text().strip()
        if len(value) == 32 and all(c in "0123456789abcdef" for c in value):
            return value
    value = secrets.token_hex(16)
    write(path, value + "\n")
    return value


def make_etc(host: HostFiles, user: Account, index: int) -> None:
    """Make `host.dir/etc` anew from the machine's /etc (see the module's docstring)."""
    etc = os.path.join(host.dir, "etc")
    new = etc + ".new"
    shutil.rmtree(new, ignore_errors=True)
    process.run(["cp", "-a", "/etc", new], what="copy /etc for a lab host")
    for secret in ETC_SECRETS:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(new, secret))
    ssh_dir = os.path.join(new, "ssh")
    if os.path.isdir(ssh_dir):
        for entry in os.listdir(ssh_dir):
            if entry.startswith("ssh_host_"):  # the machine's host keys stay the machine's
                os.unlink(os.path.join(ssh_dir, entry))
    # Rendered from the copy just taken, not the machine's live files: one snapshot of /etc.
    machine = {name: _read(new, name) for name in ("passwd", "group", "hosts", "shadow")}
    build_uids = render.build_uid_base(index)
    write(os.path.join(new, "passwd"), render.passwd(machine["passwd"], user, build_uids))
    write(os.path.join(new, "group"), render.group(machine["group"], user))
    write(os.path.join(new, "hosts"), render.hosts_file(machine["hosts"], host.name))
    write(os.path.join(new, "hostname"), host.name + "\n")
    write(os.path.join(new, "machine-id"), machine_id(host) + "\n", mode=0o444)
    write(os.path.join(new, "fstab"), "# nixherd lab host: no file systems of its own\n")
    write(os.path.join(new, "sudoers"), render.sudoers(), mode=0o440)
    shadow = os.path.join(new, "shadow")
    write(shadow, render.shadow(machine["shadow"]), mode=0o640)
    with contextlib.suppress(KeyError):
        os.chown(shadow, 0, grp.getgrnam("shadow").gr_gid)
    os.makedirs(os.path.join(new, "nix"), exist_ok=True)
    nix_conf = _read(new, "nix/nix.conf")
    write(os.path.join(new, "nix", "nix.conf"), render.nix_conf(nix_conf))
    _write_tree(
        os.path.join(new, "systemd", "system"),
        units.base_units(host.name, f"{host.dir}/sshd_config", f"{host.log_dir}/sshd.log"),
    )
    _write_tree(os.path.join(new, "tmpfiles.d"), units.tmpfiles())
    shutil.rmtree(etc, ignore_errors=True)
    os.rename(new, etc)


def _read(etc: str, name: str) -> str:
    try:
        return Path(etc, name).read_text()
    except FileNotFoundError:
        return ""


def _write_tree(directory: str, tree: units.Tree) -> None:
    """Replace `directory` with exactly `tree` (the machine's entries there are not the host's)."""
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, mode=0o755)
    for relative, value in sorted(tree.items()):
        path = os.path.join(directory, relative)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if units.is_link(value):
            os.symlink(value, path)
        else:
            write(path, value)

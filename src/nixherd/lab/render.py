"""The text of every file the lab writes: sshd_config, ssh_config, known_hosts, the per-host user
database and sudoers, and the inventory snippet `lab up` prints. Pure functions, no I/O."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

# The login user every lab host has besides root, with passwordless sudo.
DEPLOY_USER = "deploy"
# Its home, in the host's own /nix (reachable whatever the permissions above the lab directory).
DEPLOY_HOME = "/nix/var/lab/home/deploy"
ROOT_HOME = "/nix/var/lab/home/root"

# Lab paths end up in ssh_config, sshd_config, passwd and NIX_SSHOPTS: none of them can carry
# whitespace (nix splits NIX_SSHOPTS on it), `:` (passwd's separator), quotes or `#`.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+@,=-]*$")


def is_safe_path(path: str) -> bool:
    """True when `path` is absolute and can be written bare into every lab config file."""
    return bool(_SAFE_PATH.match(path))


@dataclass(frozen=True, slots=True)
class HostFiles:
    """Where one lab host's files live and what it is called: the inputs of its configs."""

    name: str
    port: int
    dir: str  # the host's state directory (absolute)

    @property
    def host_key(self) -> str:
        return f"{self.dir}/ssh_host_ed25519_key"

    @property
    def authorized_keys(self) -> str:
        return f"{self.dir}/authorized_keys"

    @property
    def log_dir(self) -> str:
        return f"{self.dir}/log"


# PATH inside a lab host: the active system's tools, then Debian's (`reboot` is systemd's).
HOST_PATH = (
    "/run/current-system/sw/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)


def sshd_config(host: HostFiles) -> str:
    """The sshd_config of one lab host (OpenSSH 9, no PAM, keys only)."""
    return "\n".join(
        [
            f"# nixherd lab host {host.name}: written by `nixherd lab up`, rewritten on every up.",
            f"Port {host.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host.host_key}",
            # Read as root: the lab directory may sit below a directory only root can enter,
            # and sshd reads an AuthorizedKeysFile as the user logging in.
            "AuthorizedKeysFile none",
            f"AuthorizedKeysCommand /bin/cat {host.authorized_keys}",
            "AuthorizedKeysCommandUser root",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # The key files live in the lab directory, not in the users' homes.
            "StrictModes no",
            "PidFile /run/sshd.pid",
            f"SetEnv PATH={HOST_PATH} NIXHERD_LAB_HOST={host.name}",
            "PrintMotd no",
            "PrintLastLog no",
            # Tests and parallel deploys open many connections and multiplexed sessions at once.
            "MaxStartups 200",
            "MaxSessions 64",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            "",
        ]
    )


def authorized_keys(client_public_key: str) -> str:
    return client_public_key.strip() + "\n"


def ssh_config(hosts: Sequence[HostFiles], identity: str, known_hosts: str) -> str:
    """One `Host lab-N` entry per host, then a `Host 127.0.0.1` entry for inventories that name
    the hosts by address and port. Host keys are always checked (StrictHostKeyChecking yes)."""
    common = [
        f"  IdentityFile {identity}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {known_hosts}",
        "  StrictHostKeyChecking yes",
    ]
    lines = ["# nixherd lab: written by `nixherd lab up`; use with `ssh -F` or NIX_SSHOPTS=-F."]
    for host in hosts:
        lines += [
            f"Host {host.name}",
            "  HostName 127.0.0.1",
            f"  Port {host.port}",
            "  User root",
            f"  HostKeyAlias {host.name}",
            *common,
        ]
    lines += ["Host 127.0.0.1", *common, ""]
    return "\n".join(lines)


def known_hosts(entries: Sequence[tuple[HostFiles, str]]) -> str:
    """known_hosts lines for each (host, public host key): as `[127.0.0.1]:port` and as its name."""
    lines: list[str] = []
    for host, public_key in entries:
        key = " ".join(public_key.split()[:2])  # drop the comment
        lines.append(f"[127.0.0.1]:{host.port} {key}")
        lines.append(f"{host.name} {key}")
    return "\n".join(lines) + "\n" if lines else ""


@dataclass(frozen=True, slots=True)
class Account:
    """The deploy user's numeric ids, chosen once per lab, and its home."""

    uid: int
    gid: int
    home: str = DEPLOY_HOME


def free_id(passwd: str, group: str, start: int = 2000) -> int:
    """The smallest id >= start used neither as a uid in `passwd` nor as a gid in `group`."""
    used = {int(f[2]) for f in _records(passwd) if len(f) > 2 and f[2].isdigit()}
    used |= {int(f[2]) for f in _records(group) if len(f) > 2 and f[2].isdigit()}
    candidate = start
    while candidate in used:
        candidate += 1
    return candidate


def _records(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _without(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.split(":", 1)[0] != name]


# Nix's build users, by name (nixbld1, nixbld2, ...).
_BUILD_USER = re.compile(r"^nixbld([0-9]+)$")


def build_uid_base(index: int) -> int:
    """Where lab host number `index` numbers its Nix build users: above every range Debian hands
    out (system, regular, nobody), one block of 100 per host."""
    return 100_000 + index * 100


def passwd(machine: str, account: Account, build_uids_from: int | None = None) -> str:
    """The machine's passwd plus the deploy user (an existing `deploy` entry is replaced).

    Root's home moves to the host's own ROOT_HOME: a login on a lab host starts clean (no
    profile from the machine's /root) and nothing it writes under ~ reaches the machine.

    With `build_uids_from`, the Nix build users get uids of the host's own. Before a build Nix
    kills every process of its build user (kill(-1) as that uid); the machine's Nix sees the
    hosts' processes (their PID namespaces are its children), so a machine build as nixbld1
    killed a build running as the same uid in a lab host ("failed due to signal 9").
    """
    lines = []
    for line in _without(machine, DEPLOY_USER):
        fields = line.split(":")
        if fields[0] == "root" and len(fields) == 7:
            fields[5] = ROOT_HOME
        build = _BUILD_USER.match(fields[0])
        if build and build_uids_from is not None and len(fields) == 7:
            fields[2] = str(build_uids_from + int(build.group(1)))
        lines.append(":".join(fields))
    lines.append(
        f"{DEPLOY_USER}:x:{account.uid}:{account.gid}:nixherd lab deploy user:"
        f"{account.home}:/bin/sh"
    )
    return "\n".join(lines) + "\n"


def group(machine: str, account: Account) -> str:
    lines = _without(machine, DEPLOY_USER)
    lines.append(f"{DEPLOY_USER}:x:{account.gid}:")
    return "\n".join(lines) + "\n"


def shadow(machine: str) -> str:
    """The machine's shadow with no password anywhere and the deploy user added.

    `*` (no password, not locked) for root and deploy: sshd without PAM refuses keys for a locked
    (`!`) account. Every other entry keeps its field but loses any hash: the lab never needs one.
    """
    lines = []
    for line in _without(machine, DEPLOY_USER):
        fields = line.split(":")
        if len(fields) > 1 and fields[1] not in ("*", "!", "!*", "x", ""):
            fields[1] = "!" if fields[1].startswith("!") else "*"
        if fields[0] == "root":
            fields[1] = "*"
        lines.append(":".join(fields))
    lines.append(f"{DEPLOY_USER}:*:19000:0:99999:7:::")
    return "\n".join(lines) + "\n"


def sudoers() -> str:
    """A complete sudoers (no includes): root and the deploy user, the latter without password."""
    return "\n".join(
        [
            "# nixherd lab host sudoers: in the host's own /etc, never the machine's.",
            "Defaults env_reset",
            f'Defaults secure_path="{HOST_PATH}"',
            "Defaults !lecture",
            "root ALL=(ALL:ALL) ALL",
            f"{DEPLOY_USER} ALL=(ALL:ALL) NOPASSWD: ALL",
            "",
        ]
    )


def nix_conf(machine: str) -> str:
    """The machine's nix.conf with root and the deploy user trusted (their own line, last)."""
    lines = [
        line
        for line in machine.splitlines()
        if line.split("=", 1)[0].strip() not in ("trusted-users", "extra-trusted-users")
    ]
    lines.append(f"trusted-users = root {DEPLOY_USER}")
    return "\n".join(lines) + "\n"


def hosts_file(machine: str, name: str) -> str:
    """The machine's /etc/hosts plus the host's own name, so sudo and others can resolve it."""
    return machine.rstrip("\n") + f"\n127.0.1.1 {name}\n"


def inventory_snippet(hosts: Sequence[HostFiles], ssh_config_path: str, role: str = "lab") -> str:
    """TOML a user can paste into an inventory to deploy to these hosts."""
    lines = ["[defaults]", f"ssh_config = {json.dumps(ssh_config_path)}", ""]
    for host in hosts:
        lines += [
            f"[[roles.{role}.targets]]",
            f"name = {json.dumps(host.name)}",
            'host = "127.0.0.1"',
            f"port = {host.port}",
            "",
        ]
    return "\n".join(lines)

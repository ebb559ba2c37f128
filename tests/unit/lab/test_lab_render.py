"""The lab's files: ssh_config and known_hosts as ssh reads them, sshd_config as sshd accepts it,
the per-host user database, sudoers and the inventory snippet."""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

import pytest

from nixherd.inventory import load
from nixherd.lab import render
from nixherd.lab.render import Account, HostFiles
from nixherd.run import process

HOSTS = [
    HostFiles(name="lab-1", port=2201, dir="/srv/lab/hosts/lab-1"),
    HostFiles(name="lab-2", port=2202, dir="/srv/lab/hosts/lab-2"),
]
IDENTITY = "/srv/lab/id_ed25519"
KNOWN = "/srv/lab/known_hosts"


def ssh_effective(config: Path, *args: str) -> dict[str, str]:
    """`ssh -G`: the options ssh would use (it reads the config; nothing connects)."""
    out = process.run(["ssh", "-G", "-F", str(config), *args]).stdout
    options: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        options.setdefault(key, value)
    return options


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the ssh client")
def test_ssh_config_as_ssh_reads_it(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(render.ssh_config(HOSTS, IDENTITY, KNOWN))
    by_name = ssh_effective(config, "lab-2")
    assert by_name["hostname"] == "127.0.0.1"
    assert by_name["port"] == "2202"
    assert by_name["user"] == "root"
    assert by_name["hostkeyalias"] == "lab-2"
    assert by_name["identityfile"] == IDENTITY
    assert by_name["identitiesonly"] == "yes"
    assert by_name["userknownhostsfile"] == KNOWN
    assert by_name["stricthostkeychecking"] == "true"
    # By address and port, as an inventory names a lab host.
    by_address = ssh_effective(config, "-p", "2201", "deploy@127.0.0.1")
    assert by_address["port"] == "2201"
    assert by_address["user"] == "deploy"
    assert by_address["identityfile"] == IDENTITY
    assert by_address["userknownhostsfile"] == KNOWN
    assert by_address["stricthostkeychecking"] == "true"
    assert "hostkeyalias" not in by_address
    # Connection sharing is the deployer's business, not the lab's.
    assert by_name["controlmaster"] == "false"


def test_ssh_config_blocks_in_order() -> None:
    text = render.ssh_config(HOSTS, IDENTITY, KNOWN)
    hosts = [line for line in text.splitlines() if line.startswith("Host ")]
    assert hosts == ["Host lab-1", "Host lab-2", "Host 127.0.0.1"]
    assert "Control" not in text


def test_known_hosts_by_address_and_by_name() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample lab-1-host\n"
    text = render.known_hosts([(HOSTS[0], key)])
    assert text.splitlines() == [
        "[127.0.0.1]:2201 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample",
        "lab-1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample",
    ]
    assert render.known_hosts([]) == ""


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_known_hosts_as_ssh_keygen_finds_it(tmp_path: Path) -> None:
    key = tmp_path / "key"
    process.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    known = tmp_path / "known_hosts"
    known.write_text(render.known_hosts([(HOSTS[1], Path(f"{key}.pub").read_text())]))
    public = Path(f"{key}.pub").read_text().split()[1]
    for host in ("lab-2", "[127.0.0.1]:2202"):
        found = process.run(["ssh-keygen", "-F", host, "-f", str(known)]).stdout
        assert public in found
    missing = process.run(["ssh-keygen", "-F", "[127.0.0.1]:2201", "-f", str(known)], check=False)
    assert missing.returncode == 1


@pytest.mark.skipif(
    not Path("/usr/sbin/sshd").exists() or os.geteuid() != 0, reason="needs sshd and root"
)
def test_sshd_accepts_its_config(tmp_path: Path) -> None:
    host = HostFiles(name="lab-7", port=2207, dir=str(tmp_path))
    process.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host.host_key])
    config = tmp_path / "sshd_config"
    config.write_text(render.sshd_config(host))
    # -T: check the file and print the effective settings (nothing listens). sshd wants
    # /run/sshd, which the machine may lack: give it one in a private mount namespace.
    script = 'mount -t tmpfs tmpfs /run && mkdir /run/sshd && exec /usr/sbin/sshd -T -f "$0"'
    out = process.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(config)]
    ).stdout
    settings = {line.split(" ", 1)[0]: line.partition(" ")[2] for line in out.splitlines()}
    assert settings["port"] == "2207"
    assert settings["listenaddress"] == "127.0.0.1:2207"
    assert settings["passwordauthentication"] == "no"
    assert settings["permitrootlogin"] == "without-password"
    assert settings["authorizedkeyscommand"] == f"/bin/cat {host.authorized_keys}"
    assert settings["authorizedkeyscommanduser"] == "root"
    setenv = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("setenv ")]
    assert any(v.startswith("PATH=/run/current-system/sw/bin:/usr/local/sbin:") for v in setenv)
    assert "NIXHERD_LAB_HOST=lab-7" in setenv


def test_user_database() -> None:
    machine_passwd = "root:x:0:0:root:/root:/bin/bash\ndeploy:x:5:5::/old:/bin/false\n"
    machine_group = "root:x:0:\ndeploy:x:5:\n"
    account = Account(uid=2000, gid=2000)
    passwd = render.passwd(machine_passwd, account).splitlines()
    assert passwd == [
        f"root:x:0:0:root:{render.ROOT_HOME}:/bin/bash",
        f"deploy:x:2000:2000:nixherd lab deploy user:{render.DEPLOY_HOME}:/bin/sh",
    ]
    assert render.group(machine_group, account).splitlines() == ["root:x:0:", "deploy:x:2000:"]


def test_shadow_keeps_no_password_hash() -> None:
    machine = "root:$y$j9T$abc$def:20000:0:99999:7:::\nbin:*:1::::::\nold:!$6$x$y:1::::::\n"
    lines = render.shadow(machine).splitlines()
    assert lines[0].startswith("root:*:")  # sshd without PAM refuses a locked (!) root
    assert lines[1] == "bin:*:1::::::"
    assert lines[2] == "old:!:1::::::"
    assert lines[3].startswith("deploy:*:")
    assert "$" not in render.shadow(machine)


def test_free_id_skips_uids_and_gids() -> None:
    passwd = "a:x:2000:2000::/:/bin/sh\n"
    group = "g:x:2001:\n"
    assert render.free_id(passwd, group) == 2002
    assert render.free_id("", "") == 2000


def test_sudoers_gives_deploy_passwordless_root() -> None:
    text = render.sudoers()
    assert "deploy ALL=(ALL:ALL) NOPASSWD: ALL" in text
    assert "#include" not in text and "@include" not in text
    assert 'secure_path="/run/current-system/sw/bin:/usr/local/sbin:' in text


def test_hosts_file_names_the_host() -> None:
    assert render.hosts_file("127.0.0.1 localhost\n", "lab-3").splitlines() == [
        "127.0.0.1 localhost",
        "127.0.1.1 lab-3",
    ]


def test_inventory_snippet_is_a_valid_inventory(tmp_path: Path) -> None:
    snippet = render.inventory_snippet(HOSTS, "/srv/lab/ssh_config", role="web")
    data = tomllib.loads(snippet)
    assert data["defaults"] == {"ssh_config": "/srv/lab/ssh_config"}
    assert data["roles"]["web"]["targets"] == [
        {"name": "lab-1", "host": "127.0.0.1", "port": 2201},
        {"name": "lab-2", "host": "127.0.0.1", "port": 2202},
    ]
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(snippet)
    nodes = load(str(inventory)).nodes.values()
    assert [(n.name, n.host, n.port) for n in nodes] == [
        ("lab-1", "127.0.0.1", 2201),
        ("lab-2", "127.0.0.1", 2202),
    ]


@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("/work/main/lab-state", True),
        ("/tmp/pytest-of-root/pytest-3/lab0", True),
        ("relative/dir", False),
        ("/with space", False),
        ("/with:colon", False),
        ("/quote'd", False),
        ("/hash#", False),
        ("/new\nline", False),
    ],
)
def test_safe_paths(path: str, safe: bool) -> None:
    assert render.is_safe_path(path) is safe


def test_build_users_get_uids_of_the_host_s_own() -> None:
    machine = (
        "root:x:0:0:root:/root:/bin/bash\n"
        "nixbld1:x:999:994:Nix build user 1:/var/empty:/usr/sbin/nologin\n"
        "nixbld12:x:985:994:Nix build user 12:/var/empty:/usr/sbin/nologin\n"
        "nixbldx:x:500:500::/:/bin/sh\n"
    )
    account = render.Account(uid=2000, gid=2000)
    text = render.passwd(machine, account, render.build_uid_base(3))
    uids = {line.split(":")[0]: int(line.split(":")[2]) for line in text.splitlines()}
    assert uids["nixbld1"] == 100_301 and uids["nixbld12"] == 100_312
    assert uids["nixbldx"] == 500 and uids["root"] == 0  # not build users: unchanged
    # Two hosts never share one, nor the machine.
    other = render.passwd(machine, account, render.build_uid_base(4))
    assert "nixbld1:x:100401:" in other
    assert "nixbld1:x:999:" in render.passwd(machine, account)

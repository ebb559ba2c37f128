"""The user's ssh config on real lab hosts (issue 15): a node reached through an ssh_config alias
(HostName, Port, User, IdentityFile, its own known_hosts file) with nothing in the inventory but
the node; a host key that is unknown or changed explained with the host's real fingerprint; and
`host_key_policy = "accept-new"` recording the key where the user's config says."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonkit
import pytest
import rtoml
from deploykit import Fleet, by_node, make_fleet
from labkit import LabFactory, LabHosts

from nixherd.run import process

pytestmark = [pytest.mark.lab, pytest.mark.nix]

ALIAS = "web-alias"


@pytest.fixture(scope="module")
def ssh_lab(lab_hosts: LabFactory) -> Iterator[LabHosts]:
    # Unreachable substituters (cache.nixos.org) would cost every build seconds of retries.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NIX_CONFIG", "substituters =")
        yield lab_hosts(1, fresh=True)


def host_key(lab: LabHosts, name: str = "lab-1") -> str:
    """The host's public key, `TYPE BASE64` (no comment)."""
    path = next(h.host_key for h in lab.lab.hosts() if h.name == name) + ".pub"
    return " ".join(Path(path).read_text().split()[:2])


def fingerprint(public_key: str) -> str:
    """`SHA256:...` of a public key line, as ssh-keygen computes it."""
    out = process.run(["ssh-keygen", "-lf", "-"], input=public_key + "\n").stdout
    return out.split()[1]


def write_alias(fleet: Fleet, known: str, *, user: str = "deploy", **inventory: Any) -> Path:
    """An ssh config with one alias for lab-1, an inventory naming only the node (its host
    defaults to its name: the alias), and the known_hosts file `known`. Returns its path."""
    lab = fleet.lab
    known_hosts = fleet.work / "user_known_hosts"
    known_hosts.write_text(known)
    config = fleet.work / "user_ssh_config"
    config.write_text(
        f"Host {ALIAS}\n"
        "  HostName 127.0.0.1\n"
        f"  Port {lab.port('lab-1')}\n"
        f"  User {user}\n"
        f"  IdentityFile {lab.lab.identity}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known_hosts}\n"
    )
    fleet.version = f"alias-{len(known)}-{user}-{fleet.dir.name}"
    data = {
        "defaults": {
            "ssh_config": str(config),
            "user": False,
            "vars": {"version": fleet.version, "motd": "hello"},
            **inventory,
        },
        "roles": {"app": {"modules": ["app.nix"]}},
        "nodes": {ALIAS: {"role": "app"}},
    }
    fleet.inventory.write_text(rtoml.dumps(data))
    return known_hosts


@pytest.fixture
def fleet(tmp_path: Path, ssh_lab: LabHosts) -> Fleet:
    return make_fleet(tmp_path / "fleet", ssh_lab)


def test_an_alias_is_all_the_inventory_needs(fleet: Fleet) -> None:
    # Before: `-p 22` and `root@` always, so the alias's Port and User never counted.
    lab = fleet.lab
    write_alias(fleet, f"[127.0.0.1]:{lab.port('lab-1')} {host_key(lab)}\n")
    # Listed as set (null: ssh decides), valid against the JSON schema.
    listing = jsonkit.document(fleet.nixherd("nodes", "--json", check=True).stdout, "nodes")
    assert (listing["nodes"][0]["user"], listing["nodes"][0]["port"]) == (None, None)
    result, report = fleet.apply("switch")
    assert result.returncode == 0, result.stdout + result.stderr
    path = by_node(report)[ALIAS]["store_path"]
    # Logged in as the config's User (deploy), so activation went through sudo.
    assert fleet.current("lab-1") == path and fleet.profile("lab-1") == path
    whoami = fleet.nixherd("exec", "--", "id", "-un")
    assert whoami.returncode == 0 and whoami.stdout.strip() == f"{ALIAS} | deploy", whoami
    root = fleet.nixherd("exec", "--sudo", "--", "id", "-un")
    assert root.stdout.strip() == f"{ALIAS} | root", root
    status = fleet.nixherd("status", "--json", check=True)
    (row,) = jsonkit.document(status.stdout, "status")["nodes"]
    assert row["reachable"] and row["current"] == path


def test_an_unknown_host_key_is_explained_with_its_fingerprint(fleet: Fleet) -> None:
    known_hosts = write_alias(fleet, "")
    result = fleet.nixherd("status")
    shown = result.stdout + result.stderr
    assert result.returncode != 0
    port = fleet.lab.port("lab-1")
    assert f"unknown host key: [127.0.0.1]:{port} is not in {known_hosts}" in shown, shown
    assert f"It offers ED25519 key {fingerprint(host_key(fleet.lab))}." in shown
    assert 'host_key_policy = "accept-new"' in shown
    # The command it shows records the key (here without asking: the test trusts the lab).
    (command,) = [line.strip() for line in shown.splitlines() if "accept-new --" in line]
    process.run(shlex.split(command), check=False, timeout=30)
    recorded = known_hosts.read_text()
    assert f"[127.0.0.1]:{port} {host_key(fleet.lab)}" in recorded
    assert fleet.nixherd("status").returncode == 0
    # exec (a plain connection, its exit code its own) explains the same way.
    write_alias(fleet, "")
    run = fleet.nixherd("exec", "--", "true")
    assert run.returncode == 1 and "unknown host key" in run.stdout + run.stderr


def test_accept_new_records_the_key_in_the_file_the_config_names(fleet: Fleet) -> None:
    known_hosts = write_alias(fleet, "", host_key_policy="accept-new")
    result, report = fleet.apply("switch")
    assert result.returncode == 0, result.stdout + result.stderr
    assert by_node(report)[ALIAS]["result"] == "ok"
    port = fleet.lab.port("lab-1")
    assert known_hosts.read_text().splitlines() == [f"[127.0.0.1]:{port} {host_key(fleet.lab)}"]


def test_a_changed_host_key_is_refused_sternly_even_with_accept_new(fleet: Fleet) -> None:
    other = fleet.work / "other_key"
    process.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)])
    wrong = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    port = fleet.lab.port("lab-1")
    known_hosts = write_alias(fleet, f"[127.0.0.1]:{port} {wrong}\n", host_key_policy="accept-new")
    for argv in (("status",), ("exec", "--", "true")):
        result = fleet.nixherd(*argv)
        shown = result.stdout + result.stderr
        assert result.returncode != 0
        assert (
            f"HOST KEY CHANGED: [127.0.0.1]:{port} now offers ED25519 key "
            f"{fingerprint(host_key(fleet.lab))}, not the key recorded for it "
            f"({known_hosts}:1)" in shown
        ), shown
        assert "man in the middle" in shown
        assert f"ssh-keygen -R '[127.0.0.1]:{port}' -f {known_hosts}" in shown
    # Nothing was written: the old (wrong) key is still the only one.
    assert known_hosts.read_text() == f"[127.0.0.1]:{port} {wrong}\n"

"""examples/lab for real: built with `nix build`, copied and switched on lab hosts, serving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from labkit import LabFactory, build, example_fleet, free_ports, http_get, http_json, toplevel

pytestmark = [pytest.mark.lab, pytest.mark.nix]

NODES = ("lab-1", "lab-2", "lab-3")


def test_example_fleet_builds_and_runs_on_lab_hosts(lab_hosts: LabFactory, tmp_path: Path) -> None:
    lab = lab_hosts(3)
    ports = dict(zip(NODES, free_ports(3), strict=True))
    ref = example_fleet(tmp_path, ports, lab)
    systems = dict(zip(NODES, build([toplevel(ref, node) for node in NODES]), strict=True))
    assert len(set(systems.values())) == 3

    # As root (lab-1, lab-3), and as the deploy user through sudo (lab-2).
    for node in ("lab-1", "lab-3"):
        lab.switch(node, systems[node])
    path = systems["lab-2"]
    lab.copy("lab-2", path, user="deploy")
    lab.ssh(
        "lab-2",
        "sudo",
        "-n",
        "nix-env",
        "-p",
        "/nix/var/nix/profiles/system",
        "--set",
        path,
        user="deploy",
    )
    lab.ssh("lab-2", "sudo", "-n", f"{path}/bin/switch-to-configuration", "switch", user="deploy")

    for node in NODES:
        assert lab.ssh(node, "readlink", "/run/current-system").stdout.strip() == systems[node]
        assert lab.status(node).system == systems[node]
        assert lab.ssh(node, "nixos-version").stdout.strip() == "1"
        # Each node's service is a unit of its system, run by the host's systemd.
        assert lab.ssh(node, "ps", "-p", "1", "-o", "comm=").stdout.strip() == "systemd"
        assert lab.ssh(node, "systemctl", "is-active", "app.service").stdout == "active\n"
        unit = lab.ssh(node, "readlink", "/etc/systemd/system/app.service").stdout.strip()
        assert unit == f"{systems[node]}/etc/systemd/system/app.service"
    for node in ("lab-1", "lab-2"):
        assert http_json(ports[node]) == {"node": node, "version": "1", "system": systems[node]}
    status, body = http_get(ports["lab-3"], "/db/db.conf")
    assert status == 200
    assert f"listen = 127.0.0.1:{ports['lab-3']}" in body.decode()
    assert "name = lab-3" in body.decode()
    page = lab.ssh("lab-1", "cat", "/nix/var/lab/etc/web/index.html").stdout
    assert "hello from the lab: lab-1, version 1" in page
    # An option the lab does not know is recorded, not lost.
    config = json.loads(Path(systems["lab-3"], "config.json").read_text())
    assert config["boot"] == {"isContainer": True}
    assert config["networking"]["hostName"] == "lab-3"

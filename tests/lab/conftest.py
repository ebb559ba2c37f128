"""Fixtures for tests on real lab hosts (run as root).

`lab_hosts(n)` returns `n` running hosts of the session's shared lab (started once, grown on
demand); `lab_hosts(n, fresh=True)` a lab of its own, for tests that reboot or kill things. Every
lab started here is stopped by recorded pid at the end of the session, whatever happened.

    def test_something(lab_hosts: LabFactory) -> None:
        lab = lab_hosts(2)
        assert lab.ssh("lab-1", "hostname").stdout.strip() == "lab-1"
        lab.switch("lab-2", toplevel)       # nix copy + profile + switch-to-configuration
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from labkit import PORT_BLOCK, LabFactory, LabHosts, free_base

from nixherd.errors import LabError
from nixherd.lab.hosts import Lab


@pytest.fixture(scope="session")
def lab_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFactory]:
    if os.geteuid() != 0:
        pytest.skip("lab hosts need root")
    labs: list[Lab] = []
    shared: list[LabHosts] = []

    def start(n: int, lab: Lab | None = None) -> LabHosts:
        if lab is None:
            lab = Lab(tmp_path_factory.mktemp("lab"))
            labs.append(lab)
            lab.up(n, base_port=free_base(max(n, PORT_BLOCK)))
        else:
            lab.up(n)
        return LabHosts(lab, [f"lab-{i}" for i in range(1, n + 1)])

    def get(n: int = 3, *, fresh: bool = False) -> LabHosts:
        if fresh:
            return start(n)
        if not shared:
            shared.append(start(max(n, 3)))
        elif len(shared[0].names) < n:
            shared[0] = start(n, shared[0].lab)
        return LabHosts(shared[0].lab, shared[0].names[:n])

    try:
        yield get
    finally:
        failures = []
        for lab in labs:
            try:
                lab.down()
            except LabError as exc:
                failures.append(str(exc))
        if failures:
            pytest.fail("lab teardown: " + "; ".join(failures))

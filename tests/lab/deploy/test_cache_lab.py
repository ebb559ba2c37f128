"""Delivery through a binary cache, on real lab hosts: the deployer signs and pushes once, a real
nginx serves the cache on 127.0.0.1, each host substitutes its system from it (the access log
shows each host's fetches). A wrong key is refused by the host (it falls back to a direct copy,
the report says why), a dead cache or a failed push falls back to a direct copy per node. And a
build on a lab host used as a Nix remote builder."""

from __future__ import annotations

import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rtoml
from deploykit import Fleet, by_node, free_port, make_fleet
from labkit import LabFactory

from nixherd.lab.cacheserver import CacheServer
from nixherd.run import nix, process

pytestmark = [pytest.mark.lab, pytest.mark.nix]

NAMES = ["lab-1", "lab-2", "lab-3"]


def keypair(where: Path, name: str) -> tuple[Path, str]:
    """A Nix signing key pair: (secret key file, public key)."""
    where.mkdir(parents=True, exist_ok=True)
    secret = where / f"{name}.sec"
    made = process.run(nix.nix_argv("key", "generate-secret", "--key-name", name))
    secret.write_text(made.stdout)
    os.chmod(secret, 0o600)
    public = process.run(nix.nix_argv("key", "convert-secret-to-public"), input=made.stdout)
    return secret, public.stdout.strip()


@pytest.fixture
def fleet(tmp_path: Path, lab_hosts: LabFactory, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    # Unreachable substituters (cache.nixos.org) would cost every build seconds of retries.
    monkeypatch.setenv("NIX_CONFIG", "substituters =")
    return make_fleet(tmp_path / "fleet", lab_hosts(len(NAMES)))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CacheServer]:
    with CacheServer(tmp_path / "cache", tmp_path / "nginx", free_port()) as running:
        yield running


def with_cache(fleet: Fleet, cache: dict[str, Any]) -> None:
    data = rtoml.loads(fleet.inventory.read_text())
    data["defaults"]["cache"] = cache
    fleet.inventory.write_text(rtoml.dumps(data))


def hash_of(store_path: str) -> str:
    return os.path.basename(store_path).split("-", 1)[0]


def fetched(server: CacheServer, suffix: str) -> list[str]:
    """The paths of the successful GETs ending in `suffix`."""
    pattern = re.compile(r'"GET (\S+) HTTP/[0-9.]+" 200 ')
    found = (pattern.search(line) for line in server.requests())
    return [m.group(1) for m in found if m is not None and m.group(1).endswith(suffix)]


def test_apply_through_the_cache_every_node_substitutes(
    fleet: Fleet, server: CacheServer, tmp_path: Path
) -> None:
    secret, public = keypair(tmp_path / "keys", "lab-cache-1")
    # lab-2 logs in as `deploy` (a trusted user there): its realise runs through sudo.
    fleet.write(NAMES, users={"lab-2": "deploy"})
    cache_dir = tmp_path / "cache"
    with_cache(
        fleet,
        {
            "push": f"file://{cache_dir}?compression=none",
            "url": server.url,
            "public_key": public,
            "secret_key_file": str(secret),
        },
    )
    result, report = fleet.apply("switch")
    assert result.returncode == 0, result.stdout + result.stderr
    nodes = by_node(report)
    narinfos = fetched(server, ".narinfo")
    for name in NAMES:
        node = nodes[name]
        assert node["result"] == "ok"
        assert node["delivery"] == {"way": "cache", "cache": server.url, "cache_error": None}
        assert fleet.current(name) == node["store_path"]
        # The cache server's log shows this node's system fetched from it.
        assert f"/{hash_of(node['store_path'])}.narinfo" in narinfos
    assert len(fetched(server, ".nar")) >= len(NAMES)
    assert report["run_seconds"]["push"] > 0
    # Pushed once, signed by the deployer's key: the narinfos carry its signature.
    some = next(cache_dir.glob("*.narinfo")).read_text()
    assert "Sig: lab-cache-1:" in some
    # The secret key never reaches the output or the report.
    key_text = secret.read_text().strip().split(":", 1)[1]
    assert key_text not in result.stdout + result.stderr
    assert key_text not in str(report)


def test_a_wrong_key_is_refused_and_the_node_gets_a_direct_copy(
    fleet: Fleet, server: CacheServer, tmp_path: Path
) -> None:
    secret, _ = keypair(tmp_path / "keys", "lab-cache-1")
    _, other = keypair(tmp_path / "keys", "lab-cache-other")
    fleet.write(NAMES[:1])
    with_cache(
        fleet,
        {
            "push": f"file://{tmp_path / 'cache'}",
            "url": server.url,
            "public_key": other,  # the node trusts a key that did not sign the paths
            "secret_key_file": str(secret),
        },
    )
    result, report = fleet.apply("switch")
    assert result.returncode == 0, result.stdout + result.stderr
    (node,) = report["nodes"]
    assert node["result"] == "ok"
    assert node["delivery"]["way"] == "direct"
    assert "not signed by any of the keys" in node["delivery"]["cache_error"]
    # The node read the narinfo, refused it, and fetched no NAR from the cache.
    assert f"/{hash_of(node['store_path'])}.narinfo" in fetched(server, ".narinfo")
    assert fetched(server, ".nar") == []
    assert fleet.current("lab-1") == node["store_path"]


def test_a_dead_cache_falls_back_to_a_direct_copy(fleet: Fleet, tmp_path: Path) -> None:
    secret, public = keypair(tmp_path / "keys", "lab-cache-1")
    fleet.write(NAMES[:2])
    with_cache(
        fleet,
        {
            "push": f"file://{tmp_path / 'cache'}",
            "url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
            "public_key": public,
            "secret_key_file": str(secret),
        },
    )
    result, report = fleet.apply("switch")
    assert result.returncode == 0, result.stdout + result.stderr
    for name, node in by_node(report).items():
        assert node["result"] == "ok"
        assert node["delivery"]["way"] == "direct"
        assert "Couldn't connect" in node["delivery"]["cache_error"]
        assert fleet.current(name) == node["store_path"]


def test_a_failed_push_sends_every_node_the_direct_way(fleet: Fleet, tmp_path: Path) -> None:
    secret, public = keypair(tmp_path / "keys", "lab-cache-1")
    fleet.write(NAMES[:2])
    with_cache(
        fleet,
        {
            "push": "file:///dev/null/cache",  # cannot be created
            "url": "http://127.0.0.1:1",
            "public_key": public,
            "secret_key_file": str(secret),
        },
    )
    result, report = fleet.apply("switch")
    assert result.returncode == 0, result.stdout + result.stderr
    for node in report["nodes"]:
        assert node["result"] == "ok"
        assert node["delivery"]["way"] == "direct"
        assert node["delivery"]["cache_error"].startswith("nix copy to the cache failed")


def test_a_secret_key_inside_the_flake_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    secret, public = keypair(fleet.dir, "lab-cache-1")
    fleet.write(NAMES[:1])
    before = fleet.current("lab-1")
    with_cache(
        fleet,
        {
            "push": f"file://{tmp_path / 'cache'}",
            "url": "http://127.0.0.1:1",
            "public_key": public,
            "secret_key_file": str(secret),
        },
    )
    result, _ = fleet.apply("switch")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "lab-1: cache.secret_key_file" in result.stderr
    assert "Traceback" not in result.stderr
    assert fleet.current("lab-1") == before


def test_build_on_a_lab_host_used_as_a_remote_builder(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet.write(NAMES[:1])
    data = rtoml.loads(fleet.inventory.read_text())
    data["defaults"]["builders"] = [
        {"uri": "ssh-ng://root@lab-3", "systems": ["x86_64-linux"], "max_jobs": 2}
    ]
    fleet.inventory.write_text(rtoml.dumps(data))
    # Nix's ssh to the builder takes the lab's ssh config (host alias, key, known hosts) from
    # NIX_SSHOPTS, as for any Nix remote build.
    monkeypatch.setenv("NIX_SSHOPTS", f"-F {fleet.lab.ssh_config}")
    # --max-jobs 0: nothing may build here, so a success means lab-3 built it.
    result = fleet.nixherd("build", "--max-jobs", "0", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (out,) = [n["store_path"] for n in rtoml_json(result.stdout)["nodes"]]
    on_builder = fleet.lab.ssh("lab-3", "nix-store", "--check-validity", out, check=False)
    assert on_builder.returncode == 0, on_builder.stderr

    # Without the builders, the same build cannot run anywhere (the proof cuts both ways).
    del data["defaults"]["builders"]
    data["defaults"]["vars"]["motd"] = "no builder"
    fleet.inventory.write_text(rtoml.dumps(data))
    alone = fleet.nixherd("build", "--max-jobs", "0")
    assert alone.returncode == 1
    assert "max-jobs" in alone.stderr


def rtoml_json(text: str) -> dict[str, Any]:
    import json

    document: dict[str, Any] = json.loads(text)
    data: dict[str, Any] = document["data"]
    return data


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


def test_the_cache_server_serves_the_directory_and_stops_by_pid(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "nix-cache-info").write_text("StoreDir: /nix/store\n")
    server = CacheServer(tmp_path / "cache", tmp_path / "nginx", free_port())
    server.start()
    try:
        assert server.proc is not None
        master = server.proc.pid
        workers = children(master)
        assert workers, "nginx started no worker"
        with urllib.request.urlopen(f"{server.url}/nix-cache-info", timeout=10) as answer:
            body = answer.read().decode()
        assert "StoreDir: /nix/store" in body
        assert any("GET /nix-cache-info" in line for line in server.requests())
    finally:
        server.stop()
    for pid in (master, *workers):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()

"""The inventory's `cache` and `[defaults] builders`: validation (file, key path, message), the
deep merge across layers, the typed Cache, and Nix's builders line."""

from __future__ import annotations

import pytest
from connkit import problems

from nixherd.inventory import loads
from nixherd.inventory.cachecfg import Cache, builders_spec, cache_of

KEY = "cache-1:" + "A" * 43 + "="


def test_cache_layers_deep_merge_and_become_a_cache() -> None:
    inventory = loads(
        f'[defaults.cache]\npush = "file:///srv/cache"\npublic_key = "{KEY}"\n'
        'secret_key_file = "keys/cache.sec"\n'
        '[roles.web]\ncache = { url = "http://cache-eu:8080" }\n'
        '[[roles.web.targets]]\nhost = "10.0.0.1"\n'
        '[nodes.db]\nrole = "web"\ncache = { url = "http://cache-us:8080" }\n'
    )
    web = inventory.nodes["web-10-0-0-1"]
    assert dict(web.cache) == {
        "push": "file:///srv/cache",
        "public_key": KEY,
        "secret_key_file": "keys/cache.sec",
        "url": "http://cache-eu:8080",
    }
    assert cache_of(web.cache, "/fleet") == Cache(
        "file:///srv/cache", "http://cache-eu:8080", KEY, "/fleet/keys/cache.sec"
    )
    assert inventory.nodes["db"].cache["url"] == "http://cache-us:8080"
    # Deployer-side: never in the data Nix sees.
    assert "cache" not in web.to_data()
    assert web.origins(deployer=True)["cache"]["url"].value == "role"


def test_no_cache_is_no_cache() -> None:
    node = loads('[nodes.a]\nhost = "h"\n').nodes["a"]
    assert dict(node.cache) == {}
    assert cache_of(node.cache, "/x") is None


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            'cache = { push = "/srv/cache", url = "http://c", public_key = "KEY" }',
            "nodes.a.cache.push: must be a store URL like file:///srv/cache, s3://bucket, "
            'ssh-ng://host, got "/srv/cache"',
        ),
        (
            'cache = { push = "file:///c", url = "http://c x", public_key = "KEY" }',
            "nodes.a.cache.url: must be a store URL like http://cache:8080 (scheme://..., one "
            'word), got "http://c x"',
        ),
        (
            'cache = { push = "file:///c", url = "http://c", public_key = "cache-1:short" }',
            "nodes.a.cache.public_key: must be a Nix public key NAME:BASE64 (nix key "
            'convert-secret-to-public), got "cache-1:short"',
        ),
        (
            'cache = { push = "file:///c", url = "http://c", public_key = "KEY", sign = 1 }',
            "nodes.a.cache.sign: unknown field",
        ),
        (
            'cache = { push = "file:///c", public_key = "KEY" }',
            "nodes.a: cache: url must be set (in defaults, the role or the node)",
        ),
        (
            'cache = { url = "http://c;rm -rf /", push = "file:///c", public_key = "KEY" }',
            "nodes.a.cache.url: must be a store URL like http://cache:8080 (scheme://..., one "
            'word), got "http://c;rm -rf /"',
        ),
    ],
)
def test_bad_cache_is_named_by_file_and_key(toml: str, message: str) -> None:
    text = "[nodes.a]\n" + toml.replace('"KEY"', f'"{KEY}"') + "\n"
    assert problems(text) == [f"inventory.toml: {message}"]


def test_builders_become_nix_machine_lines() -> None:
    inventory = loads(
        "[[defaults.builders]]\n"
        'uri = "ssh-ng://nix@builder-1"\nsystems = ["x86_64-linux", "i686-linux"]\n'
        'ssh_key = "keys/builder"\nmax_jobs = 8\nspeed_factor = 2\n'
        'supported_features = ["kvm", "big-parallel"]\n'
        "[[defaults.builders]]\n"
        'uri = "ssh://builder-2"\n'
        '[nodes.a]\nhost = "h"\n'
    )
    assert builders_spec(inventory.builders, "/fleet") == (
        "ssh-ng://nix@builder-1 x86_64-linux,i686-linux /fleet/keys/builder 8 2 kvm,big-parallel -"
        " ; ssh://builder-2 - - 1 1 - -"
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[defaults.builders]]\nuri = "http://b"\n', "defaults.builders[0].uri: must be"),
        ("[[defaults.builders]]\nmax_jobs = 2\n", "defaults.builders[0]: uri is required"),
        (
            '[[defaults.builders]]\nuri = "ssh://b"\nmax_jobs = 0\n',
            "defaults.builders[0].max_jobs: must be 1..65535, got 0",
        ),
        (
            '[[defaults.builders]]\nuri = "ssh://b ; ssh://c"\n',
            "defaults.builders[0].uri: must be",
        ),
        ("[nodes.a]\nbuilders = []\n", "nodes.a.builders: not allowed in [nodes.<name>]"),
        ('[defaults]\nbuilders = "ssh://b"\n', "defaults.builders: must be an array of tables"),
    ],
)
def test_bad_builders_are_named_by_file_and_key(toml: str, message: str) -> None:
    (found,) = problems(toml)
    assert found.startswith(f"inventory.toml: {message}")


def test_the_command_lines_builders_replace_the_inventorys() -> None:
    from nixherd.cli.runs import with_builders
    from nixherd.run.nix import NixFlags

    inventory = loads('[[defaults.builders]]\nuri = "ssh://b"\n[nodes.a]\nhost = "h"\n')
    assert with_builders(NixFlags(), inventory).builders == "ssh://b - - 1 1 - -"
    given = NixFlags(builders="ssh://other x86_64-linux")
    assert with_builders(given, inventory).builders == "ssh://other x86_64-linux"
    bare = loads('[nodes.a]\nhost = "h"\n')
    assert with_builders(NixFlags(), bare).builders is None


def test_dry_run_names_each_cache_and_its_nodes() -> None:
    from nixherd.cli.runs import cache_plan
    from nixherd.fleet.plan import DeployOptions
    from nixherd.node.goal import Goal

    cache = Cache("file:///srv/c", "http://c:8080", KEY, "/k/c.sec")
    lines = cache_plan({"a": cache, "b": cache}, DeployOptions())
    assert lines == {
        "binary cache http://c:8080": "2 nodes substitute from it, trusting cache-1; pushed once "
        "to file:///srv/c (signed with the key in /k/c.sec); a node it fails gets a direct nix copy"
    }
    # Building on the target, or a goal that copies nothing, leaves the cache out.
    assert cache_plan({"a": cache}, DeployOptions(build_on_target=True)) == {}
    assert cache_plan({"a": cache}, DeployOptions(goal=Goal.BUILD)) == {}

"""Delivery through binary caches: the deployer signs and pushes the union of the nodes' closures
once per cache, then each node substitutes its system from that cache (node/delivery.FromCache)
instead of receiving it from the deployer. A push that fails sends every node of that cache the
direct way; a node whose substitution fails gets a direct copy too (the report says which way
each node got its system, and why).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from nixherd.errors import CommandError, UsageError
from nixherd.events import RUN_WIDE, EventSink, LogLine
from nixherd.inventory.cachecfg import Cache
from nixherd.node.delivery import COPY_TIMEOUT, Delivery, FromCache, PushFromHere, System
from nixherd.run import nix


def refuse_exposed(caches: Mapping[str, Cache], *, flake_dir: str | None) -> None:
    """A cache's secret key inside the flake's directory would be copied into the world-readable
    Nix store with the flake's source when it is evaluated: refused before anything runs."""
    if flake_dir is None:
        return
    root = os.path.realpath(flake_dir)
    for name, cache in sorted(caches.items()):
        if cache.secret_key_file is None:
            continue
        real = os.path.realpath(cache.secret_key_file)
        if os.path.commonpath([root, real]) == root:
            raise UsageError(
                f"{name}: cache.secret_key_file {cache.secret_key_file} is inside the flake "
                f"{root}: evaluating it would copy the signing key into the world-readable Nix "
                "store (keep the key outside the flake)"
            )


def push(
    caches: Mapping[str, Cache],
    systems: Mapping[str, System],
    *,
    fallback: PushFromHere,
    emit: EventSink,
) -> tuple[dict[str, Delivery], float]:
    """Sign and push each cache's systems (one `nix store sign` and one `nix copy` per cache),
    then how each of its nodes gets its system; (deliveries by node, seconds)."""
    started = time.monotonic()
    groups: dict[Cache, list[str]] = {}
    for name in systems:
        cache = caches.get(name)
        if cache is not None:
            groups.setdefault(cache, []).append(name)
    deliveries: dict[str, Delivery] = {}
    for cache, names in groups.items():
        paths = sorted({systems[n].out_path for n in names})
        error = _push_one(cache, paths, emit)
        for name in names:
            if error is None:
                deliveries[name] = FromCache(cache.url, cache.public_key, fallback)
            else:
                deliveries[name] = PushFromHere(
                    substitute_on_destination=fallback.substitute_on_destination,
                    cache=cache.url,
                    cache_error=error,
                )
    return deliveries, time.monotonic() - started


def _push_one(cache: Cache, paths: Sequence[str], emit: EventSink) -> str | None:
    """Sign and push `paths` to `cache`; None when done, else why not (one line)."""
    emit(LogLine(RUN_WIDE, f"pushing {len(paths)} systems to the cache {cache.push}"))
    try:
        if cache.secret_key_file is not None:
            nix.sign(paths, key_file=cache.secret_key_file, timeout=COPY_TIMEOUT)
        nix.copy(paths, to=cache.push, timeout=COPY_TIMEOUT)
    except CommandError as exc:
        last = exc.tail(1).strip() or ("timed out" if exc.returncode is None else "failed")
        error = f"{exc.what or 'push'} to the cache failed: {last}"
        emit(LogLine(RUN_WIDE, f"{error}: its nodes get a direct copy instead"))
        return error
    return None

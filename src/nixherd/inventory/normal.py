"""One spelling per file and per address: what "the same" means when validation compares the
entries of a node (two keys or data files writing one file) and nodes (two on one host and port).

Everything here is lexical: nothing on a node is looked at and no name is resolved.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nixherd.inventory.entries import DataFile, Key

# A dotted quad as inet_ntoa writes it; anything else numeric is read the way ssh's resolver
# reads it (inet_aton: `127.1`, `0x7f.0.0.1`, octal `010`).
_CANONICAL_IPV4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
).fullmatch


def normal_path(path: str) -> str:
    """An absolute path with `//`, `/./` and `x/..` collapsed: two spellings of one file compare
    equal (lexically, as nothing on the node is looked at)."""
    # normpath keeps a leading `//` (POSIX leaves its meaning open); on Linux it is `/`.
    return "/" + posixpath.normpath(path).lstrip("/")


def endpoint_host(host: str) -> str:
    """The address a valid `host` names, spelled one way: two nodes on `::1` and
    `0:0:0:0:0:0:0:1` (or `127.1` and `127.0.0.1`, `Web.example.com.` and `web.example.com`)
    are on one host. Names are compared without case and trailing dot; nothing is resolved."""
    # ipaddress and socket only for the hosts that need them (10,000-node inventories load in
    # a fraction of a second; most hosts are names or canonical IPv4 addresses).
    if ":" in host:
        import ipaddress

        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            return host.lower()
        mapped = address.ipv4_mapped
        return str(mapped) if mapped is not None else str(address)
    host = host.lower().removesuffix(".")
    if host[:1].isdigit() and _CANONICAL_IPV4(host) is None:
        import socket

        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            pass
    return host


def destination_clash(keys: Mapping[str, Key], data: Mapping[str, DataFile]) -> str | None:
    """Two keys or data files of one node writing one file, however spelled, including the
    previous copy a data file keeps beside itself (the last writer would win silently)."""
    # Imported here, like the entries it compares (see resolve.entries).
    from nixherd.inventory.entries import DATA_BACKUP_SUFFIX

    seen: dict[str, str] = {}

    def claim(path: str, who: str) -> str | None:
        normal = normal_path(path)
        other = seen.get(normal)
        if other is not None:
            return f"{who} and {other} both write {normal}"
        seen[normal] = who
        return None

    for name, key in keys.items():
        clash = claim(key.dest, f"keys.{name}")
        if clash is not None:
            return clash
    for name, data_file in data.items():
        path = data_file.path
        clash = claim(path, f"data.{name}") or claim(
            path + DATA_BACKUP_SUFFIX, f"the backup of data.{name}"
        )
        if clash is not None:
            return clash
    return None

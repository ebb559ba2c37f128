"""The parse cache: inventory documents already parsed, keyed by a hash of their exact bytes.

Parsing is the largest cost of `nixherd nodes` on a big inventory (rtoml: about 70 ms of CPU for
10,000 nodes, half of it the kernel handing out memory); reading back the parsed document with
`marshal` costs a fifth of that. Only the parse is cached: validation and resolution always run,
so the cache can never serve a stale or unchecked result. The same bytes always parse the same,
and the key includes the parser's version.

Location: `$NIXHERD_CACHE_DIR`, else `$XDG_CACHE_HOME/nixherd`, else `~/.cache/nixherd` (created
0700). `NIXHERD_NO_CACHE=1` turns it off. Any failure to read or write it only means parsing.
"""

from __future__ import annotations

import contextlib
import marshal
import os
from collections.abc import Callable
from typing import Any

KEEP = 8  # parsed documents kept; the oldest go first
SUFFIX = ".marshal"


def directory() -> str | None:
    """Where parsed documents are kept, or None when the cache is off."""
    if os.environ.get("NIXHERD_NO_CACHE"):
        return None
    explicit = os.environ.get("NIXHERD_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nixherd", "parsed")


def _key(data: bytes, parser: str) -> str:
    import hashlib

    digest = hashlib.blake2b(data, digest_size=20, person=b"nixherd-toml")
    digest.update(parser.encode())
    return digest.hexdigest()


def parsed(data: bytes, parser: str, parse: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The document `parse()` gives for `data`, from the cache when it holds it.

    `parser` names the parser and its version (part of the key). Errors of `parse()` propagate
    and nothing is stored for them.
    """
    where = directory()
    if where is None:
        return parse()
    path = os.path.join(where, _key(data, parser) + SUFFIX)
    try:
        with open(path, "rb") as handle:
            doc = marshal.loads(handle.read())
        if type(doc) is dict:
            return doc
    except Exception:  # a missing, truncated or foreign file: parse instead
        pass
    doc = parse()
    _store(where, path, doc)
    return doc


def _store(where: str, path: str, doc: dict[str, Any]) -> None:
    try:
        blob = marshal.dumps(doc)
    except ValueError:
        return  # holds values marshal cannot write (dates): such inventories are invalid anyway
    try:
        os.makedirs(where, mode=0o700, exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
        os.replace(temporary, path)  # readers see the whole file or none
        _prune(where)
    except OSError:
        pass  # a read-only or full disk: the cache is only an optimisation


def _prune(where: str) -> None:
    entries = []
    with os.scandir(where) as scan:
        for entry in scan:
            if entry.name.endswith(SUFFIX):
                entries.append((entry.stat().st_mtime_ns, entry.path))
    entries.sort()
    for _, path in entries[:-KEEP]:
        with contextlib.suppress(OSError):  # another process may have removed it already
            os.unlink(path)

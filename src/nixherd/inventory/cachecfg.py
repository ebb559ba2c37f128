"""The inventory's delivery fields: `cache` (a binary cache the deployer pushes to once and every
node substitutes from) and `[defaults] builders` (Nix remote builders for the deployer's builds).

Both are deployer-side (never part of the Nix data: a cache or a builder changes how a system
travels or where it is built, never what it is). Their validators, the typed `Cache` a node's
merged table becomes, and the Nix `builders` line the builder tables become, are declared here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from nixherd.inventory.validate import (
    MAX_PATH,
    SYSTEM,
    SYSTEM_PATTERN,
    Issue,
    got,
    integer,
    list_of,
    name_check,
    one,
    record,
    string,
)

# --- cache ----------------------------------------------------------------------------------------

# A store URL: scheme://rest, one word. It reaches Nix's argv as one word and a node's remote
# shell through run/ssh.py's quoting; whitespace, NUL and `;` are refused anyway so that no value
# can read as two settings or two words in a log line someone pastes.
_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s\x00;'\"\\]+").fullmatch
# A Nix public key as `nix key convert-secret-to-public` prints it: NAME:BASE64 (an ed25519 key
# is 32 bytes, 44 characters of base64).
_PUBLIC_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*:[A-Za-z0-9+/]{43}=").fullmatch
_PATH = re.compile(r"[^\s\x00]+").fullmatch

CACHE_FIELDS: Final = ("push", "url", "public_key", "secret_key_file")
# What a node's merged `cache` table must hold once its layers are merged.
CACHE_REQUIRED: Final = ("push", "url", "public_key")

_check_url = string(_URL, "a store URL like http://cache:8080 (scheme://..., one word)", MAX_PATH)

check_cache = record(
    {
        "push": string(
            _URL, "a store URL like file:///srv/cache, s3://bucket, ssh-ng://host", MAX_PATH
        ),
        "url": _check_url,
        "public_key": string(
            _PUBLIC_KEY, "a Nix public key NAME:BASE64 (nix key convert-secret-to-public)", 200
        ),
        "secret_key_file": string(
            _PATH, "a path without whitespace (relative to the inventory's directory)", MAX_PATH
        ),
    }
)


# The field table's entry (fields.py), without its merge rule and place.
CACHE_FIELD: Final[dict[str, Any]] = {
    "type": "table: push, url, public_key (store URLs, a Nix public key), secret_key_file",
    "check": check_cache,
    "doc": "a binary cache: apply pushes the systems there once, each node substitutes from "
    "`url` trusting only `public_key` (docs/scale.md; not in the Nix data)",
}


def incomplete(table: Mapping[str, Any]) -> str | None:
    """Why a node's merged cache table cannot be used (None when it can, or when it is empty)."""
    if not table:
        return None
    missing = [key for key in CACHE_REQUIRED if key not in table]
    if missing:
        return "cache: " + ", ".join(missing) + " must be set (in defaults, the role or the node)"
    return None


@dataclass(frozen=True, slots=True)
class Cache:
    """A binary cache: the deployer writes `push` once, the nodes substitute from `url` and
    trust only `public_key`. `secret_key_file` (absolute, or None when the store at `push` signs
    itself or the paths are already signed) is a path: its content is read by `nix store sign`
    alone, never by nixherd, so it never reaches argv, a log or a report."""

    push: str
    url: str
    public_key: str
    secret_key_file: str | None = None


def cache_of(table: Mapping[str, Any], base_dir: str) -> Cache | None:
    """The node's cache from its merged (valid, complete) table; None without one."""
    if not table:
        return None
    key_file = table.get("secret_key_file")
    if key_file is not None:
        key_file = os.path.join(base_dir, key_file)
    return Cache(table["push"], table["url"], table["public_key"], key_file)


# --- builders -------------------------------------------------------------------------------------

_WORD = re.compile(r"[^\s\x00;,'\"\\]+").fullmatch
_BUILDER_URI = re.compile(r"(ssh|ssh-ng)://[^\s\x00;,'\"\\]+").fullmatch
_FEATURE = name_check("a feature name")

check_builder = record(
    {
        "uri": string(_BUILDER_URI, "ssh://HOST or ssh-ng://[USER@]HOST", 300),
        "systems": list_of(
            string(SYSTEM, f"a system like x86_64-linux ({SYSTEM_PATTERN})", 63),
        ),
        "ssh_key": string(_WORD, "a path without whitespace, ',' or ';'", MAX_PATH),
        "max_jobs": integer(1, 65535),
        "speed_factor": integer(1, 65535),
        "supported_features": list_of(_FEATURE),
        "mandatory_features": list_of(_FEATURE),
    },
    required=("uri",),
)


def check_builders(value: Any) -> list[Issue] | None:
    if type(value) is not list:
        return one(f"must be an array of tables ([[defaults.builders]]), {got(value)}")
    issues: list[Issue] = []
    for index, entry in enumerate(value):
        bad = check_builder(entry)
        if bad is not None:
            issues.extend((f"[{index}]{suffix}", message) for suffix, message in bad)
    return issues or None


def builders_spec(builders: Sequence[Mapping[str, Any]], base_dir: str) -> str:
    """Nix's `builders` setting for these tables: one machine per entry, `;`-separated, each
    `URI SYSTEMS SSH-KEY MAX-JOBS SPEED-FACTOR SUPPORTED MANDATORY`, `-` for a default.

    The field order is Nix's machine line, the members of `Machine` in NixOS/nix
    src/libstore/machines.hh (storeUri, systemTypes, sshKey, maxJobs, speedFactor,
    supportedFeatures, mandatoryFeatures, sshPublicHostKey) as `parseBuilderLines` in
    src/libstore/machines.cc reads them; the host key is left to ssh's known_hosts.
    """
    lines = []
    for entry in builders:
        key = entry.get("ssh_key")
        words = [
            str(entry["uri"]),
            ",".join(entry.get("systems", ())) or "-",
            "-" if key is None else os.path.join(base_dir, key),
            str(entry.get("max_jobs", 1)),
            str(entry.get("speed_factor", 1)),
            ",".join(entry.get("supported_features", ())) or "-",
            ",".join(entry.get("mandatory_features", ())) or "-",
        ]
        lines.append(" ".join(words))
    return " ; ".join(lines)


BUILDERS_FIELD: Final[dict[str, Any]] = {
    "type": "array of tables: uri, systems, ssh_key, max_jobs, speed_factor, "
    "supported_features, mandatory_features",
    "check": check_builders,
    "doc": "Nix remote builders for the builds run here (`--builders` replaces them)",
}

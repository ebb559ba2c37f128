"""Why ssh refused a host key, in words a user can act on.

ssh itself only says "Host key verification failed.". `Connection.host_key_error` then looks
again with `ssh -v` through the node's own config and options (so an alias, `HostName`, `Port`,
`HostKeyAlias` and `ProxyJump` count exactly as for the deploy), and this module reads what ssh
logged there: the key the host offers (`debug1: Server host key: TYPE SHA256:...`), the name the
key is looked up under in known_hosts, and whether no key is known or a different one is. It
never trusts anything itself: it shows the fingerprint, how to check it out of band and the exact
command to record it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

# What ssh prints when it refuses a host key (with StrictHostKeyChecking yes or accept-new).
REFUSED = "Host key verification failed."

_OFFERED = re.compile(r"^debug1: Server host key: (\S+) (\S+)", re.MULTILINE)
_UNKNOWN = re.compile(r"^No (\S+) host key is known for (\S+) and you have requested", re.MULTILINE)
_CHANGED = re.compile(r"^(?:\S+ )?[Hh]ost key for (\S+) has changed and you have", re.MULTILINE)
_OFFENDING = re.compile(r"^Offending \S+ key in (\S+?):(\d+)$", re.MULTILINE)

# The public key file of each key type on a NixOS (or most Linux) host, for the console check.
_KEY_FILES = {"ed25519": "ed25519", "ecdsa": "ecdsa", "rsa": "rsa"}


class Kind(Enum):
    UNKNOWN = "unknown"  # no key recorded for the host
    CHANGED = "changed"  # a different key recorded: possibly an attack


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `ssh -v` logged about a refused host key."""

    kind: Kind
    name: str  # the name known_hosts is searched for (`host`, `[host]:port`, a HostKeyAlias)
    key_type: str  # as ssh names it: ssh-ed25519, ecdsa-sha2-nistp256, rsa-sha2-512, ...
    fingerprint: str  # SHA256:...
    offending: str | None = None  # file:line of the recorded key that differs (CHANGED)


def refused(output: str) -> bool:
    """Whether ssh's output says it refused the host key."""
    return REFUSED in output


def verdict(verbose: str) -> Verdict | None:
    """What an `ssh -v` attempt's stderr says about the host key; None when it was not refused
    (or the log has no key to show)."""
    if not refused(verbose):
        return None
    verbose = verbose.replace("\r", "")  # ssh ends its log lines in CR LF
    offered = _OFFERED.findall(verbose)
    if not offered:
        return None
    # The last key offered is the node's (a ProxyJump host's comes first).
    key_type, fingerprint = offered[-1]
    changed = _CHANGED.search(verbose)
    if changed is not None:
        offending = _OFFENDING.search(verbose)
        where = f"{offending.group(1)}:{offending.group(2)}" if offending else None
        return Verdict(Kind.CHANGED, changed.group(1), key_type, fingerprint, where)
    unknown = _UNKNOWN.search(verbose)
    if unknown is not None:
        return Verdict(Kind.UNKNOWN, unknown.group(2), key_type, fingerprint)
    return None


def _short_type(key_type: str) -> str:
    for short in _KEY_FILES:
        if short in key_type:
            return short
    return "rsa" if key_type.startswith("rsa-") else key_type


def explain(found: Verdict, *, known_hosts: str, trust: Sequence[str], policy: str) -> str:
    """The message for a refused host key: the key offered, how to check and record it."""
    short = _short_type(found.key_type)
    console = f"ssh-keygen -lf /etc/ssh/ssh_host_{short}_key.pub"
    offered = f"{short.upper()} key {found.fingerprint}"
    record = shlex.join(trust)
    if found.kind is Kind.CHANGED:
        recorded = found.offending or known_hosts
        file = recorded.rpartition(":")[0] if found.offending else known_hosts
        return "\n".join(
            [
                f"HOST KEY CHANGED: {found.name} now offers {offered}, not the key recorded for "
                f"it ({recorded})",
                "  Someone may be intercepting the connection (a man in the middle): nixherd will "
                "not connect,",
                '  and host_key_policy = "accept-new" does not change that.',
                "  Only if you know why the key changed (the host was reinstalled, its keys "
                "rotated) and have",
                "  checked the new fingerprint out of band, e.g. on the host's console:",
                f"    {console}",
                "  remove the old key and record the new one:",
                f"    {shlex.join(['ssh-keygen', '-R', found.name, '-f', file])}",
                f"    {record}",
            ]
        )
    lines = [
        f"unknown host key: {found.name} is not in {known_hosts}",
        f"  It offers {offered}.",
        "  Check that fingerprint out of band before trusting it, e.g. on the host's console:",
        f"    {console}",
        "  If it matches, record the key (ssh writes it where your ssh config says):",
        f"    {record}",
    ]
    if policy == "accept-new":
        lines.append('  (host_key_policy is already "accept-new": ssh still refused this key.)')
    else:
        lines += [
            '  Or set host_key_policy = "accept-new" for this node (or its role, or [defaults]): '
            "a new",
            "  host's key is then recorded on first contact; a changed key is still refused.",
        ]
    return "\n".join(lines)

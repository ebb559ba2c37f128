"""Closure diffs: what a new system changes against the one a node runs (packages, versions, size).

Both closures come from `nix path-info -r --json` (the node's through its ssh store), so the diff
needs nothing on the node but Nix. Packages are recognised from store path names the way Nix
splits `name-version`: the version starts at the first `-` followed by a digit. Two kinds of
names break that rule and are read otherwise: a NixOS system, whose host name may itself hold
`-<digit>` (`nixos-system-lab-1-4` is host `lab-1`, label `4`), and a file named with a number
(`unit-getty-2.target`), which has no version at all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nixherd.run import nix
from nixherd.run.ssh import Connection

_HASH = re.compile(r"^[0-9a-z]{32}-")
# Outputs other than `out` end the name of their path; they are the same package.
_OUTPUTS = ("bin", "dev", "lib", "man", "doc", "info", "out", "debug", "static", "devdoc")
_OUTPUT_SUFFIX = re.compile(r"-(?:" + "|".join(_OUTPUTS) + r")$")
_VERSION_START = re.compile(r"-(?=[0-9])")
# A NixOS toplevel is "nixos-system-${system.name}-${system.nixos.label}" (nixpkgs
# nixos/modules/system/activation/top-level.nix); the label is the sorted tags and then the
# version ("24.05.20240101.abcdef", "24.05pre-git": nixos/modules/misc/label.nix, version.nix).
# The host name comes first and may hold "-<digit>" itself ("lab-1", "10-0-1-2"), so the version
# is the LAST word that starts with a digit, with whatever follows it ("pre-git").
_NIXOS_SYSTEM = re.compile(r"^(nixos-system-.+?)-([0-9][^-]*(?:-[^0-9][^-]*)*)$")
# Names of single files (systemd units, configuration files): a number in them is part of the
# file's name, not a version.
_FILE_SUFFIX = re.compile(
    r"\.(?:service|socket|target|timer|mount|automount|path|slice|scope|device|swap|conf|json"
    r"|toml|ya?ml|ini|sh|py|pl|nix|rules|network|netdev|link)$"
)


def split_name(path: str) -> tuple[str, str]:
    """`/nix/store/<hash>-hello-2.12.1` -> ("hello", "2.12.1"); no version -> (name, "")."""
    base = _HASH.sub("", path.rsplit("/", 1)[-1])
    base = _OUTPUT_SUFFIX.sub("", base)
    system = _NIXOS_SYSTEM.match(base)
    if system is not None:
        return system[1], system[2]
    if _FILE_SUFFIX.search(base):
        return base, ""
    match = _VERSION_START.search(base)
    if match is None:
        return base, ""
    return base[: match.start()], base[match.end() :]


@dataclass(frozen=True, slots=True)
class VersionChange:
    name: str
    before: tuple[str, ...]
    after: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.name}: {', '.join(self.before) or '-'} -> {', '.join(self.after) or '-'}"


@dataclass(frozen=True, slots=True)
class ClosureDiff:
    """The difference between a node's current system and a new one."""

    before: str | None  # the system the node runs (None: nothing yet)
    after: str
    added: tuple[tuple[str, tuple[str, ...]], ...]  # (name, versions) new in the closure
    removed: tuple[tuple[str, tuple[str, ...]], ...]
    changed: tuple[VersionChange, ...]
    paths_added: int
    paths_removed: int
    # Same name and version, different store path (rebuilt: a dependency or option changed).
    rebuilt: tuple[str, ...]
    size_before: int
    size_after: int

    @property
    def identical(self) -> bool:
        return self.before == self.after

    @property
    def size_change(self) -> int:
        return self.size_after - self.size_before

    def to_data(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "after": self.after,
            "identical": self.identical,
            "added": {name: list(v) for name, v in self.added},
            "removed": {name: list(v) for name, v in self.removed},
            "changed": {
                c.name: {"before": list(c.before), "after": list(c.after)} for c in self.changed
            },
            "rebuilt": list(self.rebuilt),
            "paths_added": self.paths_added,
            "paths_removed": self.paths_removed,
            "size_before": self.size_before,
            "size_after": self.size_after,
            "size_change": self.size_change,
        }


def _packages(paths: Sequence[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in paths:
        name, version = split_name(path)
        found.setdefault(name, set()).add(version)
    return found


def _versions(values: set[str]) -> tuple[str, ...]:
    return tuple(sorted(v for v in values if v)) or (("",) if "" in values else ())


def diff_closures(
    before: Mapping[str, int],
    after: Mapping[str, int],
    *,
    before_system: str | None,
    after_system: str,
) -> ClosureDiff:
    """Compare two closures (store path -> NAR size)."""
    gone = [p for p in before if p not in after]
    new = [p for p in after if p not in before]
    old_pkgs, new_pkgs = _packages(list(before)), _packages(list(after))
    added = tuple(
        (name, _versions(new_pkgs[name])) for name in sorted(new_pkgs) if name not in old_pkgs
    )
    removed = tuple(
        (name, _versions(old_pkgs[name])) for name in sorted(old_pkgs) if name not in new_pkgs
    )
    changed = tuple(
        VersionChange(name, _versions(old_pkgs[name]), _versions(new_pkgs[name]))
        for name in sorted(old_pkgs.keys() & new_pkgs.keys())
        if old_pkgs[name] != new_pkgs[name]
    )
    changed_names = {c.name for c in changed}
    gone_keys = {split_name(p) for p in gone}
    rebuilt = tuple(
        sorted(
            {
                name
                for name, version in (split_name(p) for p in new)
                if (name, version) in gone_keys and name not in changed_names
            }
        )
    )
    return ClosureDiff(
        before=before_system,
        after=after_system,
        added=added,
        removed=removed,
        changed=changed,
        paths_added=len(new),
        paths_removed=len(gone),
        rebuilt=rebuilt,
        size_before=sum(before.values()),
        size_after=sum(after.values()),
    )


def current_system(conn: Connection) -> str | None:
    """The system the node runs now (`/run/current-system`), or None."""
    result = conn.run(
        ["sh", "-c", "if [ -e /run/current-system ]; then readlink -f /run/current-system; fi"],
        timeout=60,
        what="read current system",
    )
    path = result.stdout.strip()
    return path or None


def node_diff(conn: Connection, toplevel: str, *, timeout: float | None = 600) -> ClosureDiff:
    """What deploying `toplevel` (built here) would change on the node behind `conn`."""
    before_system = current_system(conn)
    after = nix.closure_sizes([toplevel], timeout=timeout)
    if before_system is None:
        before: dict[str, int] = {}
    elif before_system == toplevel:
        before = dict(after)
    else:
        before = nix.closure_sizes(
            [before_system],
            store=conn.store_uri("ssh"),
            env=conn.nix_env(),
            timeout=timeout,
            node=conn.target.node,
        )
    return diff_closures(before, after, before_system=before_system, after_system=toplevel)


def human_size(size: int, *, signed: bool = False) -> str:
    sign = ("+" if size > 0 else "-" if size < 0 else "±") if signed else ""
    value = float(abs(size))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def node_text(node: str, diff: ClosureDiff, *, limit: int = 50) -> str:
    """The diff of one node, as lines for a terminal."""
    if diff.identical:
        return f"{node}: up to date ({diff.after})\n"
    head = f"{node}: {diff.before or '(no system)'} -> {diff.after}"
    lines = [
        head,
        f"  {diff.paths_added} paths added, {diff.paths_removed} removed; closure "
        f"{human_size(diff.size_before)} -> {human_size(diff.size_after)} "
        f"({human_size(diff.size_change, signed=True)})",
    ]
    entries: list[str] = []
    entries += [f"  ~ {c}" for c in diff.changed]
    entries += [f"  + {name} {', '.join(v)}".rstrip() for name, v in diff.added]
    entries += [f"  - {name} {', '.join(v)}".rstrip() for name, v in diff.removed]
    if diff.rebuilt:
        shown = ", ".join(diff.rebuilt[:8]) + (" ..." if len(diff.rebuilt) > 8 else "")
        entries.append(f"  * rebuilt: {shown}")
    if len(entries) > limit:
        entries = [*entries[:limit], f"  ... and {len(entries) - limit} more"]
    return "\n".join(lines + entries) + "\n"


def plan_text(diffs: Mapping[str, ClosureDiff | BaseException]) -> str:
    """Every node's diff (or why it could not be computed): what `apply --confirm` shows."""
    parts: list[str] = []
    for node, diff in diffs.items():
        if isinstance(diff, BaseException):
            first = (str(diff).splitlines() or [type(diff).__name__])[0]
            parts.append(f"{node}: cannot diff: {first}\n")
        else:
            parts.append(node_text(node, diff))
    changing = sum(1 for d in diffs.values() if isinstance(d, ClosureDiff) and not d.identical)
    parts.append(f"{changing} of {len(diffs)} nodes change.\n")
    return "".join(parts)

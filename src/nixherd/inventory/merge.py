"""How the layers of an inventory combine: one merge function per `fields.Merge` rule, and
`apply_layer`, which merges one valid layer onto a node's values (docs/inventory.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nixherd.inventory.fields import NODE_FIELDS, Merge

Values = dict[str, Any]


def deep_merge(earlier: Mapping[str, Any], later: Mapping[str, Any]) -> Mapping[str, Any]:
    """Tables merge key by key, recursively; anything else in `later` replaces what was there.

    Never mutates its arguments; unchanged sub-tables are shared, not copied.
    """
    if not earlier:
        return later
    if not later:
        return earlier
    merged = dict(earlier)
    for key, value in later.items():
        old = merged.get(key)
        if type(old) is dict and type(value) is dict:
            merged[key] = deep_merge(old, value)
        else:
            merged[key] = value
    return merged


def _union(earlier: tuple[Any, ...], later: list[Any]) -> tuple[Any, ...]:
    # dict keys keep insertion order: the first occurrence keeps its place.
    return tuple(dict.fromkeys((*earlier, *later)))


def replace(_earlier: Any, later: Any) -> Any:
    return later


def _named(earlier: Mapping[str, Any], later: Mapping[str, Any]) -> Mapping[str, Any]:
    return {**earlier, **later} if earlier else later


MERGERS: dict[Merge, Callable[[Any, Any], Any]] = {
    Merge.REPLACE: replace,
    Merge.UNION: _union,
    Merge.DEEP: deep_merge,
    Merge.NAMED: _named,
}

# Field name -> merge function, for the fields every node carries, except the fields whose later
# value simply wins: those are in _REPLACED, so that the common case costs no call.
_MERGE_BY_FIELD: dict[str, Callable[[Any, Any], Any]] = {
    f.name: MERGERS[f.merge] for f in NODE_FIELDS if f.merge is not Merge.REPLACE
}
_REPLACED = frozenset(f.name for f in NODE_FIELDS if f.merge is Merge.REPLACE)


def apply_layer(values: Values, layer: Mapping[str, Any]) -> Values:
    """`values` with one more (valid) layer merged on top; keys that are not node fields are
    skipped (targets, name, role, ssh_config)."""
    out = values.copy()
    for key, value in layer.items():
        if key in _REPLACED:
            out[key] = value
        else:
            merge = _MERGE_BY_FIELD.get(key)
            if merge is not None:
                out[key] = merge(out[key], value)
    return out

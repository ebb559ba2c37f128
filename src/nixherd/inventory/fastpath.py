"""The fast path of resolution: merging a fan-out target or a node onto its role while checking
it, in one pass over its own keys.

Why it exists: `nixherd nodes` on 10,000 nodes (bench/inventory/run.sh) must answer in well under
200 ms, and validating each node's table whole before merging it (the reference path:
`TableSchema.check`, then `merge.apply_layer`) costs a second pass per node. Both paths give the
same result for a valid table; at the first key that is unknown or invalid this one gives up
(None) and the resolver takes the reference path, which reports every problem. So the messages
are always the reference path's, and this module only ever makes a valid inventory faster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from nixherd.inventory.fields import NODE_FIELDS, NODE_TABLE, TARGET_TABLE, TableSchema
from nixherd.inventory.merge import MERGERS, Values, replace

# Per table kind, each allowed key's validator and how it merges: `_replace`, a merge function,
# or None for the keys that describe the table rather than the node (name, role, targets, ...).
Plan = dict[str, tuple[Callable[[Any], Any], Callable[[Any, Any], Any] | None]]


def _plan(schema: TableSchema) -> Plan:
    merges = {f.name: MERGERS[f.merge] for f in NODE_FIELDS}
    return {key: (check, merges.get(key)) for key, check in schema.checks.items()}


TARGET_PLAN: Final = _plan(TARGET_TABLE)
NODE_PLAN: Final = _plan(NODE_TABLE)


def merge_checked(values: Values, table: Mapping[str, Any], plan: Plan) -> Values | None:
    """`values` with `table` merged on top, validating as it goes; None at the first key that is
    unknown or invalid (the caller then takes the reference path, which reports every problem).

    This is the path of every node of a valid inventory: one pass over the node's own keys.
    """
    out = values.copy()
    for key, value in table.items():
        step = plan.get(key)
        if step is None:
            return None
        check, merge = step
        if check(value) is not None:
            return None
        if merge is replace:
            out[key] = value
        elif merge is not None:
            out[key] = merge(out[key], value)
    return out

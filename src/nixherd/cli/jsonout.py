"""The machine-readable contract: every JSON document nixherd writes, built at this one place.

Every `--json` output and every `--report FILE` is one envelope:

    {"schema": "nixherd/v1", "command": "status", "data": {...}}

`schema` names the contract and its major version; `command` says which payload `data` holds
(the command line's words: "status", "keys upload", "lab status"). The payloads are declared as
TypedDicts in `nixherd.cli.payloads` (the run report's in `nixherd.fleet.report`); the JSON
Schema in docs/schema/ is derived from them. Rules every payload follows: a per-node collection
is a list named `nodes`, in the selection's (name) order, each element an object whose `node`
key names it; a key that has no value is null, never left out (except where a TypedDict marks it
NotRequired). v1 only grows by new keys; a renamed or removed key, or a changed type, is a new
`schema` (nixherd/v2). docs/json.md says it for users.

Standard library only at import (the payload types under TYPE_CHECKING): `nixherd nodes --json`
imports this module and stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nixherd.cli.payloads import Envelope as Envelope
    from nixherd.cli.payloads import (
        EvalNode,
        LabHostData,
        NodeSummary,
        Payload,
    )
    from nixherd.fleet.evaluate import NodeEval
    from nixherd.inventory import Node
    from nixherd.lab.hosts import HostStatus

SCHEMA = "nixherd/v1"


def add_json(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    """`--json`: the command's document on stdout, nothing else there."""
    parser.add_argument(
        "--json",
        action="store_true",
        help=f"print {what} as JSON on stdout (docs/json.md); progress stays on stderr",
    )


def envelope(command: str, data: Payload) -> Envelope:
    return {"schema": SCHEMA, "command": command, "data": data}


def emit(command: str, data: Payload) -> None:
    """The document on stdout, alone (progress and errors go to stderr)."""
    from nixherd.cli import render

    render.print_json(envelope(command, data))
    sys.stdout.flush()


def write(command: str, data: Payload, path: str) -> None:
    """The document in the file `path`, atomically: a reader never sees half of it."""
    import json
    import os
    import tempfile

    from nixherd.errors import NixherdError

    text = json.dumps(envelope(command, data), indent=2) + "\n"
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".nixherd-report-", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise NixherdError(f"cannot write the report to {path}: {exc}") from exc


def node_summary(node: Node) -> NodeSummary:
    """A node of the inventory in a listing."""
    return {
        "name": node.name,
        "role": node.role,
        "host": node.host,
        "user": node.user,
        "port": node.port,
        "tags": list(node.tags),
    }


def eval_node(result: NodeEval) -> EvalNode:
    """One node's evaluation (`check --eval`, `eval`)."""
    return {
        "node": result.name,
        "ok": result.ok,
        "drv_path": result.drv_path,
        "out_path": result.out_path,
        "error": result.error,
    }


def lab_host(host: HostStatus) -> LabHostData:
    """One lab host (`lab status`)."""
    return {
        "name": host.name,
        "port": host.port,
        "dir": host.dir,
        "pid": host.pid,
        "state": host.state,
        "system": host.system,
        "boots": host.boots,
        "pidns": host.pidns,
    }

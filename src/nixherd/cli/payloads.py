"""The JSON contract's payloads, declared once as TypedDicts (the run report's are in
`nixherd.fleet.report`): mypy checks that the commands build them key for key, and
`nixherd.cli.schemagen` derives the published JSON Schema (docs/schema/nixherd-v1.json) from
these same declarations. How a document is put together and written: `nixherd.cli.jsonout`.

Only type checking and the schema generator import this module: defining the classes costs
milliseconds that `nixherd nodes --json` does not spend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

if TYPE_CHECKING:
    from typing import TypeAlias

    from nixherd.fleet.report import ReportData


class Envelope(TypedDict):
    """What every JSON document of nixherd is."""

    schema: str
    command: str
    data: Any


class NodeSummary(TypedDict):
    """One node of a listing."""

    name: str
    role: str | None
    host: str
    user: str | None  # null: not set (`user = false`), ssh decides
    port: int | None  # null: not set, ssh decides
    tags: list[str]


class NodesData(TypedDict):
    """`nodes`: the selected nodes, as the inventory resolves them (no Nix)."""

    nodes: list[NodeSummary]


class ShowData(TypedDict):
    """`show NODE`: every resolved field, and the layer each value came from (same shape)."""

    node: dict[str, Any]
    origins: dict[str, Any]
    source: str


class ProblemData(TypedDict):
    """One thing wrong with the inventory."""

    file: str
    path: str
    message: str


class EvalNode(TypedDict):
    """One node's evaluation: its system's derivation and output path, or Nix's error."""

    node: str
    ok: bool
    drv_path: str | None
    out_path: str | None
    error: str | None


class EvalData(TypedDict):
    """`eval`: the selected nodes' systems, evaluated in one nix process."""

    nodes: list[EvalNode]


class CheckData(TypedDict):
    """`check`: the inventory's problems (nodes, roles and selected are null when it has any);
    with --eval, each selected node's evaluation."""

    ok: bool
    nodes: int | None
    roles: int | None
    selected: list[str] | None
    problems: list[ProblemData]
    eval: list[EvalNode] | None


class StatusNode(TypedDict):
    """One node's state; `matches` is null when unknown (not evaluated, or unreachable)."""

    node: str
    reachable: bool
    current: str | None
    profile: str | None
    generation: int | None
    generation_time: int | None  # epoch seconds
    expected: str | None
    matches: bool | None
    error: str | None
    eval_error: str | None


class StatusData(TypedDict):
    """`status`: every node's state. `drifted`: reachable nodes that do not run the flake's
    build; `unknown`: nodes whose build did not evaluate."""

    evaluated: bool
    ok: bool
    unreachable: list[str]
    drifted: list[str]
    unknown: list[str]
    nodes: list[StatusNode]


class VersionsData(TypedDict):
    before: list[str]
    after: list[str]


class ClosureDiffData(TypedDict):
    """What a new system changes against the one a node runs (sizes in bytes)."""

    before: str | None
    after: str
    identical: bool
    added: dict[str, list[str]]
    removed: dict[str, list[str]]
    changed: dict[str, VersionsData]
    rebuilt: list[str]
    paths_added: int
    paths_removed: int
    size_before: int
    size_after: int
    size_change: int


class DiffNode(TypedDict):
    node: str
    diff: ClosureDiffData | None
    error: str | None


class DiffData(TypedDict):
    """`diff`: per node, the closure diff or why there is none."""

    nodes: list[DiffNode]


class KeysNode(TypedDict):
    """One node's upload: the keys written and those already in place, or the error."""

    node: str
    outcome: Literal["ok", "up to date", "failed"]
    sent: NotRequired[list[str]]
    unchanged: NotRequired[list[str]]
    error: NotRequired[str]


class KeysData(TypedDict):
    """`keys upload`: the selected nodes that have keys."""

    nodes: list[KeysNode]


class DataPushNode(TypedDict):
    """One node's push: files written, files already right, reload commands run; or the error."""

    node: str
    outcome: Literal["ok", "up to date", "failed"]
    changed: NotRequired[list[str]]
    unchanged: NotRequired[list[str]]
    reloads: NotRequired[list[list[str]]]
    error: NotRequired[str]


class DataPushData(TypedDict):
    """`data push`: the selected nodes that have data files."""

    nodes: list[DataPushNode]


class DataFileDiffData(TypedDict):
    """How one data file on a node differs from its rendering."""

    name: str
    path: str
    changed: bool
    exists: bool
    state: str
    note: str
    diff: str
    ownership: str | None


class DataDiffNode(TypedDict):
    node: str
    outcome: Literal["changes", "up to date", "failed"]
    files: NotRequired[list[DataFileDiffData]]
    error: NotRequired[str]


class DataDiffData(TypedDict):
    """`data diff`: the selected nodes that have data files."""

    nodes: list[DataDiffNode]


class LabHostData(TypedDict):
    """One lab host."""

    name: str
    port: int
    dir: str
    pid: int | None
    state: str  # up (logins work), unhealthy (it runs, no login works), down
    system: str | None
    boots: int | None
    pidns: str | None


class LabStatusData(TypedDict):
    """`lab up`, `lab status`: the lab's hosts."""

    hosts: list[LabHostData]


class TerraformSourceData(TypedDict):
    """One `[terraform.NAME]` source and the outputs of it the snapshot holds."""

    source: str
    outputs: list[str]


class TerraformSyncData(TypedDict):
    """`terraform sync`: the snapshot written beside the inventory, and the nodes it changed."""

    snapshot: str
    changed: bool  # whether its content changed
    sources: list[TerraformSourceData]
    added: list[str]  # node names new with this snapshot
    removed: list[str]  # node names gone with it


if TYPE_CHECKING:
    Payload: TypeAlias = (
        NodesData
        | ShowData
        | CheckData
        | EvalData
        | StatusData
        | DiffData
        | KeysData
        | DataPushData
        | DataDiffData
        | LabStatusData
        | TerraformSyncData
        | ReportData
    )


def payloads() -> dict[str, object]:
    """Each command that writes JSON, and the type of its `data` (the schema is made of these)."""
    from nixherd.fleet.report import ReportData

    return {
        "nodes": NodesData,
        "show": ShowData,
        "check": CheckData,
        "eval": EvalData,
        "build": ReportData,
        "apply": ReportData,
        "exec": ReportData,
        "rollback": ReportData,
        "check-health": ReportData,
        "status": StatusData,
        "diff": DiffData,
        "keys upload": KeysData,
        "data diff": DataDiffData,
        "data push": DataPushData,
        "lab up": LabStatusData,
        "lab status": LabStatusData,
        "terraform sync": TerraformSyncData,
    }

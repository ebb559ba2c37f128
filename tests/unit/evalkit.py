"""A stand-in for the `nix eval` of fleet/evaluate.py: it reads the node names off the `--apply`
function and answers as Nix does, one `trace:` line per node on the merged output, in order."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nixherd.errors import CommandError
from nixherd.run.process import Result

# What the fake does with one node: a result ({"drv", "out"} or {"error"}), or a string: the
# process ends there with that Nix error.
Answer = Mapping[str, Any] | str


def names_of(argv: Sequence[str]) -> list[str]:
    """The names listed at the end of the `--apply` function (`[ "a" "b" ]`)."""
    apply = argv[-1]
    listed = apply[apply.rindex("[ ") + 2 : apply.rindex(" ]")]
    names: list[str] = json.loads("[" + listed.replace('" "', '", "') + "]")
    return names


def system(name: str) -> dict[str, str]:
    return {"drv": f"/nix/store/{'d' * 32}-{name}.drv", "out": f"/nix/store/{'o' * 32}-{name}"}


@dataclass
class FakeEval:
    """process.run for `nix eval`: every call recorded, each answered from `answers` (default: a
    system per node); `rss` is the peak memory each process reports, per node it evaluated."""

    answers: dict[str, Answer] = field(default_factory=dict)
    rss_per_node: int = 50 << 20
    calls: list[list[str]] = field(default_factory=list)
    kwargs: list[dict[str, Any]] = field(default_factory=list)
    running: int = 0
    flake_checks: int = 0
    most_at_once: int = 0
    hold: Callable[[list[str]], object] | None = None  # called while "running", before the end
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, argv: Sequence[str], **kw: Any) -> Result:
        args = tuple(argv)
        if argv[-1] == "builtins.attrNames":  # is the flake whole? (asked once, on a failure)
            with self.lock:
                self.flake_checks += 1
            return Result(args, 0, json.dumps(sorted(self.answers)), "")
        names = names_of(argv)
        with self.lock:
            self.calls.append(names)
            self.kwargs.append(kw)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            on_line = kw["on_line"]
            for count, name in enumerate(names):
                answer = self.answers.get(name, system(name))
                if isinstance(answer, str):
                    on_line(f"error: {answer}")
                    return Result(args, 1, f"error: {answer}\n", "", self.rss_per_node * count)
                on_line("trace: nixherd-eval " + json.dumps({"name": name, **answer}))
                if self.hold is not None and count == 0:
                    self.hold(names)
            return Result(args, 0, f"{len(names)}\n", "", self.rss_per_node * len(names))
        finally:
            with self.lock:
                self.running -= 1


def timing_out(argv: Sequence[str], **_kw: Any) -> Result:
    raise CommandError(argv, None, "")

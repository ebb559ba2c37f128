"""Nix's error messages as nixherd shows them: from Nix's `error:` on, bounded."""

from __future__ import annotations

import re

# Nix's error is shown whole up to this many lines; past it (a long --show-trace), see excerpt().
MAX_ERROR_LINES = 80
_HEAD_LINES = 30
_TAIL_LINES = 20
_MAX_FRAME_LINES = 100
# A line of a trace frame worth keeping when the code excerpts are cut: its position
# (`at /nix/store/...-source/web.nix:4:5:`) or what was being evaluated (`… while evaluating`).
_FRAME = re.compile(r"\s*(at \S+:\d+:\d+:?|… .*|\.\.\. .*)")


def error_message(output: str) -> str:
    """Nix's error as Nix wrote it, from its first `error:` line on, bounded (`excerpt`).

    File positions, the code they point at, "Did you mean", the trace of --show-trace and Nix's
    hint about --show-trace all stay: they are how the user finds the mistake (nixherd passes
    --show-trace on). Warnings before the error go (a dirty Git tree, a substituter retry).
    """
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
    if start is None:
        # An error not at the start of a line: nix's stdout glued before it, or a message of
        # another tool (the shell, the kernel's OOM killer).
        at = output.find("error:")
        if at < 0:
            return output.strip() or "nix eval failed without a message"
        lines = output[at:].splitlines()
        start = 0
    lines = lines[start:]
    lines[0] = lines[0][len("error:") :].strip()
    if not lines[0] and len(lines) > 1:
        lines.pop(0)  # Nix 2.16+: a bare "error:" opens the trace, the message comes last
    return "\n".join(excerpt(lines)).strip("\n").rstrip()


def excerpt(lines: list[str], limit: int = MAX_ERROR_LINES) -> list[str]:
    """`lines`, or when there are more than `limit`: the first and last lines whole (Nix 2.8
    puts the error first and the trace after it, Nix 2.16+ the trace first and the error
    last), and between them each trace frame's heading and position, without its code."""
    if len(lines) <= limit:
        return lines
    middle = lines[_HEAD_LINES : len(lines) - _TAIL_LINES]
    frames = [line for line in middle if _FRAME.fullmatch(line)]
    if len(frames) > _MAX_FRAME_LINES:
        half = _MAX_FRAME_LINES // 2
        more = f"       … {len(frames) - 2 * half} more trace lines"
        frames = [*frames[:half], more, *frames[-half:]]
    left_out = len(middle) - len(frames)
    note = f"       ({left_out} lines of Nix's message left out: code excerpts of the trace)"
    return [*lines[:_HEAD_LINES], note, *frames, *lines[len(lines) - _TAIL_LINES :]]

"""TOML as lines of text, for edits that keep every other line as it was: where the table
headers are (`headers`: a scanner of just enough of TOML's lexical rules, since a `[` starts a
header only outside strings, arrays and inline tables), where a table's own lines end, and values
rendered on one line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nixherd.errors import NixherdError

# --- the header scanner ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    line: int
    path: tuple[str, ...]
    array: bool  # [[...]]


def find_headers(lines: Sequence[str]) -> list[Header]:
    """Every table header line of a valid TOML text. A line is a header when it starts with `[`
    outside any string, array or inline table; the scanner tracks just enough of TOML's lexical
    rules (strings, comments, brackets) to know that."""
    import tomlkit

    found: list[Header] = []
    multiline: str | None = None  # the delimiter of the multi-line string we are in
    depth = 0
    for number, line in enumerate(lines):
        if multiline is None and depth == 0 and line.lstrip().startswith("["):
            parsed: Any = tomlkit.parse(line).unwrap()
            path: list[str] = []
            while isinstance(parsed, dict) and len(parsed) == 1:
                key = next(iter(parsed))
                path.append(key)
                parsed = parsed[key]
            found.append(Header(number, tuple(path), line.lstrip().startswith("[[")))
            continue
        i = 0
        while i < len(line):
            if multiline is not None:
                if multiline == '"""' and line[i] == "\\":
                    i += 2
                    continue
                if line.startswith(multiline, i):
                    i += 3
                    while i < len(line) and line[i] == multiline[0]:
                        i += 1  # up to two quotes of content may touch the closing delimiter
                    multiline = None
                    continue
                i += 1
                continue
            char = line[i]
            if char == "#":
                break
            if line.startswith('"""', i) or line.startswith("'''", i):
                multiline = line[i : i + 3]
                i += 3
            elif char == '"':
                i += 1
                while i < len(line) and line[i] != '"':
                    i += 2 if line[i] == "\\" else 1
                i += 1
            elif char == "'":
                end = line.find("'", i + 1)
                i = len(line) if end < 0 else end + 1
            else:
                if char in "[{":
                    depth += 1
                elif char in "]}":
                    depth -= 1
                i += 1
    return found


def is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def block_end(lines: Sequence[str], headers: Sequence[Header], index: int) -> int:
    """One past the last line of content of header `index`'s block: the comments and blank lines
    before the next header belong to that next header."""
    start = headers[index].line
    stop = headers[index + 1].line if index + 1 < len(headers) else len(lines)
    end = start + 1
    for number in range(start + 1, stop):
        if is_content(lines[number]):
            end = number + 1
    return end


def cut(lines: list[str], start: int, end: int) -> None:
    """Remove lines [start, end) and the comment lines directly above them (they describe what
    is removed), then one blank line where two would meet."""
    while start > 0 and lines[start - 1].strip().startswith("#"):
        start -= 1
    before_blank = start == 0 or not lines[start - 1].strip()
    if before_blank and end < len(lines) and not lines[end].strip():
        end += 1
    del lines[start:end]


# --- rendering ---------------------------------------------------------------------------------


def render_value(value: Any) -> str:
    """One TOML value on one line; tables as inline tables with blanks inside the braces."""
    import tomlkit

    if isinstance(value, Mapping):
        if not value:
            return "{}"
        inner = ", ".join(f"{render_key(k)} = {render_value(v)}" for k, v in value.items())
        return "{ " + inner + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(render_value(v) for v in value) + "]"
    rendered: str = tomlkit.item(value).as_string()
    return rendered


def render_key(key: str) -> str:
    import tomlkit

    rendered: str = tomlkit.key(key).as_string()
    return rendered


def item(text: str) -> Any:
    """A tomlkit item that keeps the formatting of `text` (a rendered value)."""
    import tomlkit

    return tomlkit.parse("v = " + text + "\n")["v"]


def lines_of(text: str) -> list[str]:
    """The text's lines, each with its line ending (the last one may have none)."""
    return text.splitlines(keepends=True)


def insert(lines: list[str], at: int, new: Sequence[str]) -> None:
    """Insert `new` (lines ending in "\n") before line `at`, with the file's own line ending;
    a last line without one gets it first, so that nothing is glued to it."""
    crlf = bool(lines) and lines[0].endswith("\r\n")
    ending = "\r\n" if crlf else "\n"
    if at > 0 and not lines[at - 1].endswith("\n"):
        lines[at - 1] += ending
    lines[at:at] = [line[:-1] + ending if line.endswith("\n") else line for line in new]


def table_blocks(headers: Sequence[Header], prefix: tuple[str, ...]) -> list[int]:
    """The indexes of the headers of table `prefix` and of its sub-tables (not arrays of
    tables of exactly that path)."""
    return [i for i, h in enumerate(headers) if h.path[: len(prefix)] == prefix]


def element_blocks(headers: Sequence[Header], path: tuple[str, ...], index: int) -> list[int]:
    """The headers of element `index` of the array of tables `path`: its `[[path]]` header and
    the sub-table headers that follow it."""
    starts = [i for i, h in enumerate(headers) if h.array and h.path == path]
    if index >= len(starts):
        raise NixherdError(f"cannot find {'.'.join(path)}[{index}] in the file")
    first = starts[index]
    found = [first]
    for i in range(first + 1, len(headers)):
        h = headers[i]
        if h.path[: len(path)] != path or (h.array and h.path == path):
            break
        found.append(i)
    return found

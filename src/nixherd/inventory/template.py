"""The tiny template language of text data files: placeholders only, no expressions, no code.

    {vars.a.b}    the node var at that dotted path (a list element by its index: {vars.l.0})
    {name}        the node's name
    {{  }}        a literal brace

Anything else between braces, or a lone brace, is refused when the inventory is loaded. Kept
apart from `nixherd.node.data` (and free of heavy imports) so that inventory validation can use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


def var_path(text: str) -> list[str]:
    """`a.b.0` -> ["a", "b", "0"]; ValueError unless every segment is a bare key or an index."""
    parts = text.split(".")
    if not all(_SEGMENT.fullmatch(part) for part in parts):
        raise ValueError(
            f"must be a dotted var path like a.b (letters, digits, _ and -), got {text!r}"
        )
    return parts


def _placeholder(expr: str) -> list[str] | None:
    """The var path of `{vars.a.b}`, None for `{name}`; ValueError for anything else."""
    text = expr.strip()
    if text == "name":
        return None
    head, dot, rest = text.partition(".")
    if head != "vars" or not dot:
        raise ValueError(_bad(expr))
    try:
        return var_path(rest)
    except ValueError:
        raise ValueError(_bad(expr)) from None


def _bad(expr: str) -> str:
    # repr: the text may hold newlines or escape sequences, and it is shown back to the user.
    return f"bad placeholder {'{' + expr + '}'!r}: use {{vars.a.b}} or {{name}}"


def check(template: str) -> None:
    """Raise ValueError if `template` is malformed (a lone brace, a placeholder not allowed)."""
    for match in _TOKEN.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if match.group(1) is None:
            raise ValueError(
                f"lone {token!r} at offset {match.start()} (write {token * 2} for a literal brace)"
            )
        _placeholder(match.group(1))


def render(template: str, *, name: str, var: Callable[[list[str]], str]) -> str:
    """`template` with its placeholders filled: `var(path)` gives a var's text."""

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        if match.group(1) is None:
            raise ValueError(f"lone {token!r} at offset {match.start()}")
        path = _placeholder(match.group(1))
        return name if path is None else var(path)

    return _TOKEN.sub(substitute, template)

"""Reading an inventory: file bytes -> TOML document (rtoml) -> resolved Inventory. Read, decode
and parse errors become InventoryError naming the file and the line."""

from __future__ import annotations

import gc
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nixherd.errors import InventoryError, Problem
from nixherd.inventory.model import Inventory
from nixherd.inventory.resolve import resolve

MAX_SIZE = 64 * 1024 * 1024  # 100,000 nodes take about 8 MB; anything this big is a mistake

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
_WHERE = re.compile(r"\s*at line (\d+) column (\d+)\s*$")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


INVENTORY_NAME = "inventory.toml"


@dataclass(frozen=True, slots=True)
class Search:
    """Where the inventory was looked for: the nearest one (None if none), and the directory
    the search stopped at (a repository's root, or the filesystem's when there is none)."""

    found: Path | None
    start: Path
    stop: Path
    in_repository: bool


def find(start: Path) -> Search:
    """The nearest `inventory.toml` in `start` or its parents, up to the repository root.

    A repository root is a directory holding `.git` (a directory, or a file in a worktree or a
    submodule). The search never leaves the repository it starts in: an inventory above it
    belongs to something else. Outside any repository it goes up to the filesystem root.
    """
    here = start
    while True:
        candidate = here / INVENTORY_NAME
        if candidate.is_file():
            return Search(candidate, start, here, in_repository=False)
        if (here / ".git").exists():
            return Search(None, start, here, in_repository=True)
        if here.parent == here:
            return Search(None, start, here, in_repository=False)
        here = here.parent


def _fail(file: str, path: str, message: str) -> InventoryError:
    return InventoryError([Problem(file, path, message)])


def load(path: str | os.PathLike[str], *, cache: bool = False) -> Inventory:
    """Read, validate and resolve the inventory at `path` (named as given in messages).

    With `cache`, the parsed document may come from the parse cache (`nixherd.inventory.cache`);
    validation and resolution run all the same.
    """
    file = os.fspath(path)
    try:
        # Non-blocking: opening a FIFO without a writer would otherwise wait forever. Only a
        # regular file is read (a FIFO or a device is refused before any read).
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise _fail(file, "", "is a directory, not an inventory file")
            if not stat.S_ISREG(mode):
                kind = _KINDS.get(stat.S_IFMT(mode), "a special file")
                raise _fail(file, "", f"not a regular file ({kind})")
            handle = open(fd, "rb")  # noqa: SIM115 (closed by the `with` below)
        except BaseException:
            os.close(fd)
            raise
        with handle:
            data = handle.read(MAX_SIZE + 1)
    except FileNotFoundError:
        raise _fail(file, "", "no such file") from None
    except OSError as exc:
        raise _fail(file, "", f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_SIZE:
        raise _fail(file, "", f"larger than {MAX_SIZE // (1024 * 1024)} MiB")
    return loads(data, file=file, path=Path(file).absolute(), cache=cache)


def loads(
    data: bytes | str,
    *,
    file: str = "inventory.toml",
    path: Path | None = None,
    cache: bool = False,
) -> Inventory:
    """Validate and resolve an inventory given as TOML text; `file` names it in messages and
    `path` (default: `file`, made absolute) anchors relative paths such as ssh_config."""

    def parse_data() -> dict[str, Any]:
        return parse(data if isinstance(data, str) else decode(data, file), file)

    # Parsing and resolving allocate a dozen containers per node and free none of them: the
    # cyclic collector would walk the growing heap again and again for nothing (a third of the
    # time for 10,000 nodes). Reference counting still frees everything as usual.
    enabled = gc.isenabled()
    gc.disable()
    try:
        if cache:
            from nixherd.inventory import cache as parse_cache

            raw = data.encode() if isinstance(data, str) else data
            doc = parse_cache.parsed(raw, f"rtoml {_parser_version()}", parse_data)
        else:
            doc = parse_data()
        return resolve(doc, file=file, path=path or Path(file).absolute())
    finally:
        if enabled:
            gc.enable()


def _parser_version() -> str:
    import rtoml

    version: str = rtoml.__version__
    return version


def decode(data: bytes, file: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise _fail(
            file,
            f"line {line}, column {column}",
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x})",
        ) from None


def parse(text: str, file: str) -> dict[str, Any]:
    """The TOML document as plain Python data, or InventoryError with the parser's position."""
    import rtoml

    try:
        doc: dict[str, Any] = rtoml.loads(text)
    except Exception as exc:  # the parser is a boundary: nothing of it escapes unconverted
        message = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", str(exc)).strip()
        where = _WHERE.search(message)
        path = ""
        if where is not None:
            path = f"line {where.group(1)}, column {where.group(2)}"
            message = message[: where.start()]
        raise _fail(file, path, f"invalid TOML: {message or type(exc).__name__}") from exc
    return doc

"""Reading what users hand in: regular files only, bounded sizes, JSON checked against a schema.

Every file the project reads (checkpoints, images, results and report JSON, dataset files)
goes through :func:`regular_file` or :func:`open_regular` first: a FIFO, device or socket
would block ``open`` or never end, so it is refused before it is opened. JSON is parsed with
its size limited before parsing and its nesting caught, and checked with a pydantic schema;
any failure is one :class:`UserError` line naming the file and the first problem.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, Field, ValidationError

from .errors import UserError
from .outputs import strict

MAX_DEPTH = 16  # nesting of free-form JSON values (metrics, training arguments, settings)
MAX_NAME = 256  # characters of a label, class name (a folder name: 255 bytes at most), corruption name
MAX_TEXT = 10_000  # characters of a free-form string

Model = TypeVar("Model", bound=BaseModel)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "of an unknown kind"


def regular_file(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> os.stat_result:
    """``stat`` of ``path`` (links followed), or :class:`UserError` unless it is a regular file
    of at most ``max_bytes``. Nothing is opened, so a FIFO or device cannot block."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror or error})") from None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path}: is {_kind(info.st_mode)}, not a regular file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise UserError(f"{path}: {info.st_size:,} bytes is over the {max_bytes:,}-byte limit")
    return info


def open_regular(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None):
    """A binary file object for ``path`` after :func:`regular_file`; opened without blocking and
    checked again on the open descriptor, so a file swapped for a FIFO in between is refused too."""
    path = Path(path)
    regular_file(path, what, max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise UserError(f"{path}: cannot be opened ({error.strerror or error})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or (max_bytes is not None and info.st_size > max_bytes):
        os.close(fd)
        raise UserError(f"{path}: changed while being opened; not a regular file within the size limit")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bytes(path: str | os.PathLike, what: str = "file", max_bytes: int = 64 << 20) -> bytes:
    """The contents of a regular file of at most ``max_bytes``."""
    with open_regular(path, what, max_bytes) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UserError(f"{path}: over the {max_bytes:,}-byte limit")
    return data


def parse_json(data: bytes | str, name: str, max_bytes: int) -> Any:
    """JSON text -> Python value; too large, malformed or too deeply nested is one line."""
    if len(data) > max_bytes:
        raise UserError(f"{name}: {len(data):,} bytes is over the {max_bytes:,}-byte limit")
    try:
        return json.loads(data)
    except json.JSONDecodeError as error:
        raise UserError(f"{name}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    except UnicodeDecodeError:
        raise UserError(f"{name}: not valid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise UserError(f"{name}: JSON nested too deeply") from None
    except ValueError as error:  # Python refuses integers of more than 4300 digits
        reason = "an integer too long to read" if "digits" in str(error) else " ".join(str(error).split())[:120]
        raise UserError(f"{name}: not usable JSON ({reason})") from None


def validate(schema: type[Model], data: Any, name: str) -> Model:
    """``data`` checked against ``schema``; the first problem as one line otherwise."""
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise UserError(f"{name}: {first_problem(error)}") from None
    except RecursionError:
        raise UserError(f"{name}: JSON nested too deeply") from None


def read_json(path: str | os.PathLike, schema: type[Model], max_bytes: int) -> Model:
    """A JSON file checked against ``schema``: regular file, size, syntax, nesting, schema."""
    return validate(schema, parse_json(read_bytes(path, "file", max_bytes), str(path), max_bytes), str(path))


def first_problem(error: ValidationError) -> str:
    """pydantic's first error as ``field.path: message (got value)``, on one line."""
    detail = error.errors(include_url=False)[0]
    location = ".".join(str(part) for part in detail["loc"])
    message = detail["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = re.sub(r" or instance of \w+$", "", message)  # pydantic's class names mean nothing to a user
    shown = ""
    if detail["type"] not in ("missing", "value_error", "assertion_error") and "input" in detail:
        value = repr(detail["input"])
        shown = f" (got {value[:60]}{'...' if len(value) > 60 else ''})"
    text = f"{location}: {message}{shown}" if location else f"{message}{shown}"
    return " ".join(text.split())


def depth(value: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _shallow_and_finite(value: Any) -> Any:
    if depth(value) > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    return strict(value)


# Free-form JSON (metrics, training arguments, settings): bounded nesting, non-finite numbers read as null.
FreeJson = Annotated[Any, AfterValidator(_shallow_and_finite)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]

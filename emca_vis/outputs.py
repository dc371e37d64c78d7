"""Writing result files: atomically, and strict JSON (every output of the project goes through here).

Every file is written to a temporary file in its own folder, flushed, synced to disk and
only then renamed over the target (:func:`atomic_open`): a full disk, a kill or an error while
writing leaves the previous file as it was, never a truncated one. ``--out`` options are
checked with :func:`check_out` before any computing, so a bad place fails at once.

Python's ``json`` writes NaN and infinities as bare ``NaN`` / ``Infinity``, which is not JSON
(browsers, ``jq`` and most parsers refuse it). Here they become ``null``, numpy scalars and
arrays become plain numbers and lists, and ``allow_nan=False`` guarantees nothing slips through.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def strict(value):
    """``value`` with NaN/infinities as ``None`` and numpy values as Python ones, recursively."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return strict(value.tolist())
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def json_text(value, indent: int | None = 1) -> str:
    """Strict JSON text of ``value`` (see :func:`strict`)."""
    return json.dumps(strict(value), indent=indent, allow_nan=False)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", newline: str | None = None) -> Iterator:
    """A file object whose contents replace ``path`` only when the block ends without error.

    The data go to a temporary file in the same folder (so the rename cannot cross file
    systems), which is flushed and fsynced, then renamed over ``path`` with ``os.replace``.
    On any failure the temporary file is removed and ``path`` keeps its previous contents; an
    ``OSError`` (full disk, permission, ...) becomes one :class:`UserError` line naming ``path``.
    """
    path = Path(path)
    binary = "b" in mode
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _write_error(path, error) from None
    try:
        with os.fdopen(fd, mode, **({} if binary else {"encoding": "utf-8", "newline": newline})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would make outputs private, unlike a plain open
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise _write_error(path, error) from None
        raise
    _sync_folder(path.parent)


def _write_error(path: Path, error: OSError) -> UserError:
    return UserError(f"{path}: could not be written ({error.strerror or error}); any previous file is unchanged")


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (where the platform lets a folder be synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_open(path) as handle:
        handle.write(text)
    return Path(path)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a log (JSONL) and sync it: a finished record survives a crash. A line
    cut short by a kill is the reader's to drop (appending cannot be made atomic by renaming)."""
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line.rstrip("\n") + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise UserError(f"{path}: could not be appended to ({error.strerror or error})") from None


def write_json(path: str | os.PathLike, value, indent: int | None = 1) -> Path:
    """Write ``value`` to ``path`` as strict JSON, atomically; returns the path."""
    return write_text(path, json_text(value, indent) + "\n")


def write_csv(path: str | os.PathLike, rows: Sequence[Sequence], header: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (sequences of cells) to ``path`` as CSV, atomically; returns the path."""
    import csv

    with atomic_open(path, newline="") as handle:
        writer = csv.writer(handle)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return Path(path)


def write_dict_csv(path: str | os.PathLike, rows: Sequence[dict], fields: Sequence[str] | None = None) -> Path:
    """Write dict ``rows`` to ``path`` as CSV (columns: ``fields``, default every key in order of
    appearance), atomically; returns the path."""
    import csv

    fields = list(fields) if fields is not None else list(dict.fromkeys(key for row in rows for key in row))
    with atomic_open(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``path`` as a compressed ``.npz``, atomically; returns the path."""
    with atomic_open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return Path(path)


def figure_format(path: str | os.PathLike) -> str:
    """The matplotlib format of a figure path (its suffix; matplotlib's default without one)."""
    import matplotlib

    return Path(path).suffix.lstrip(".").lower() or matplotlib.rcParams["savefig.format"]


def save_figure(fig, path: str | os.PathLike, **options) -> Path:
    """``fig.savefig`` to ``path`` atomically, in the format of its suffix; returns the path."""
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format=figure_format(path), **options)
    return Path(path)


def figure_formats() -> list[str]:
    """The figure suffixes matplotlib can write (png, pdf, svg, ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(FigureCanvasBase.get_supported_filetypes())


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def check_out(path: str | os.PathLike, option: str = "--out", folder: bool = False,
              files: Sequence[str] = ()) -> Path:
    """Check an output place before any computing: ``--out X: <problem>`` as a :class:`UserError`.

    ``path`` is a file (``folder=False``; ``files``: other paths written with it) or a folder
    that will hold ``files`` (names). None may be an existing folder where a file is expected
    (nor a file where a folder is), nor lie under a file; the nearest existing folder above it
    must be writable (tested by creating a temporary file there, which also catches read-only
    file systems). Missing folders are created later, when writing.
    """
    path = Path(path)

    def fail(problem: str) -> UserError:
        return UserError(f"{option} {path}: {problem}")

    targets = [path / name for name in files] if folder else [path, *map(Path, files)]
    for target in ([path] if folder else []) + targets:
        try:
            info = target.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as error:
            raise fail(f"cannot be checked ({error.strerror or error})") from None
        if target == path and folder:
            if not stat.S_ISDIR(info.st_mode):
                raise fail("is a file, not a folder")
            continue
        name = "" if target == path else f"{target} "
        if stat.S_ISDIR(info.st_mode):
            raise fail(f"{name}is a folder; give a file name" if not name else f"{name}is a folder")
        if not stat.S_ISREG(info.st_mode):
            raise fail(f"{name}is {_kind(info.st_mode)}")
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise fail(f"{existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise fail(f"folder {existing} is not writable ({error.strerror or error})") from None
    return path


@contextlib.contextmanager
def locked(path: str | os.PathLike, option: str = "--out") -> Iterator[Path]:
    """Hold an exclusive ``fcntl`` lock on ``<path>.lock`` for the block: a second process
    asking for the same output while the first runs gets one :class:`UserError` line. The lock
    file stays (removing it would let a third process lock a new file while the second holds
    the old one); the lock itself ends with the process, even when it is killed."""
    import fcntl

    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as error:
        raise UserError(f"{option} {path}: cannot create its lock file {lock} ({error.strerror or error})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{option} {path}: another run is writing it (its lock {lock} is held); "
                            f"wait for that run to end or choose another {option}") from None
        yield lock
    finally:
        os.close(fd)

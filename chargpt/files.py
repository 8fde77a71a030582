"""The one way chargpt writes a file: whole (temp file, fsync, rename) or a whole append; and
how it reads back the JSON caches it writes."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside path for writing; on success it replaces path, else it goes.

    A reader (or a resumed study) sees either the old file or the whole new one, never half:
    the data is fsynced before the rename, so even a power cut cannot leave a short file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"newline": "", "encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a successful replace; removes a failed try


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to path atomically."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def write_json(path: Path, data: Any) -> None:
    """Write data as indented JSON atomically (values JSON cannot hold become strings)."""
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object file as a dict; {} when it is missing, unreadable or not an object (a
    cache: rebuilt when bad, never trusted)."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def append_whole(path: Path, data: str) -> None:
    """Append text to an existing file all or nothing: a failed write (disk full, file too
    large) is cut back off, so the file never ends in half a line."""
    raw = data.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)

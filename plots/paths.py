"""Output paths, checked before any work: a folder or file that cannot be written is one line
naming it and why (exit 2), found before a figure is drawn, so nothing is left half-made."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UnwritableOutput(Exception):
    """An output path plots cannot write: the message names it and says why."""


def _existing_ancestor(path: Path, shown: Path, what: str) -> Path:
    """The nearest folder at or above path that exists; a file on the way is an error, since
    mkdir would meet it (FileExistsError, NotADirectoryError) after the figures were drawn."""
    probe = path
    while not probe.is_dir():
        # exists() is False below a file (ENOTDIR); is_symlink() catches a dangling link
        if probe.exists() or probe.is_symlink():
            raise UnwritableOutput(f"{shown}: {what} cannot be made: {probe} is not a folder")
        if probe.parent == probe:  # the root (or a vanished cwd): nothing above to make it in
            raise UnwritableOutput(f"{shown}: {what} cannot be made: {probe} does not exist")
        probe = probe.parent
    return probe


def _why_not(path: Path) -> str:
    """Why the process may not write in (or to) path, in words."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except (AttributeError, OSError):  # no statvfs (Windows): the permission is all we know
        pass
    return "permission denied"


def check_dir(path: Path, what: str) -> None:
    """path is a folder this process can write in, or one it can make (with its parents).

    os.access and not chmod bits: root passes a mode of 0o555 (and can write there) but not
    a read-only mount, which access reports as EROFS."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UnwritableOutput(f"{path}: {what} is a file, not a folder")
    folder = _existing_ancestor(path, path, what)
    if not os.access(folder, os.W_OK | os.X_OK):
        where = "" if folder == path else f" in {folder}"
        raise UnwritableOutput(f"{path}: {what} cannot be written{where} ({_why_not(folder)})")


def check_file(path: Path, what: str) -> None:
    """path can be written as a file: not a folder, and either an existing file this process
    may write (its folder's permissions do not matter then) or one its folder lets it make."""
    path = Path(path)
    if path.is_dir():
        raise UnwritableOutput(f"{path}: {what} is a folder; give a file name")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise UnwritableOutput(f"{path}: {what} cannot be written ({_why_not(path)})")
        return
    folder = _existing_ancestor(path.parent, path, what)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UnwritableOutput(f"{path}: {what} cannot be written in {folder} ({_why_not(folder)})")


def check_report_dir(path: Path) -> None:
    """A study (or claims) folder the report writes figures/, tables/ and REPORT.md into."""
    path = Path(path)
    check_dir(path, "the report's folder")
    check_dir(path / "figures", "the figures folder")
    check_dir(path / "tables", "the tables folder")
    check_file(path / "REPORT.md", "REPORT.md")


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """An OSError while writing path names it: open() errors do, a failed write() (a full
    disk) does not, and the one line the CLI prints must say which file."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise

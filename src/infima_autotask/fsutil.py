"""File-system helpers shared by the config file, the state folder and the files the tool
writes (plans)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and every missing parent with mode 0700 (exact, whatever the umask).

    Folders that already exist keep their mode: they are the operator's.
    """
    missing: list[Path] = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` at once (temp file, fsync, rename), mode 0600.

    A reader sees the old file or the new one, never half of one; a symlinked file stays a
    symlink (the file it points to is replaced).

    Raises:
        OSError: the folder or the file cannot be written (IsADirectoryError for a folder).
    """
    target = path.resolve() if path.is_symlink() else path
    if target.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(target))
    make_private_dirs(target.parent)
    with _temp_file(target.parent, target.name) as (fd, temp):
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    _fsync_dir(target.parent)


@contextlib.contextmanager
def _temp_file(folder: Path, name: str) -> Iterator[tuple[int, str]]:
    fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        yield fd, temp
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _fsync_dir(folder: Path) -> None:
    # Makes the rename durable across a power loss; not possible on every platform.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

"""Atomic writes: a crash never leaves a half-written distribution, checkpoint, manifest or mesh."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` only if the block succeeds.

    The temp file lives in the same directory so the final ``os.replace`` is atomic on POSIX.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    follow_umask(tmp)  # mkstemp makes 0600; the final file should follow the user's umask
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        follow_umask(tmp_path)  # writers that replace the file (safetensors' save_file) made it 0600 again
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def follow_umask(path: str | os.PathLike) -> None:
    """Give a file the mode a plain ``open()`` would under the user's umask (0644 under 022). Needed
    after ``mkstemp`` and after safetensors' ``save_file``, which renames a private 0600 file of its
    own over the path it is given."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def append_line_atomic(target: str | os.PathLike, line: str) -> None:
    """Append one line with a single O_APPEND write + fsync, so concurrent writers never interleave
    and a crash loses at most the line being written (never corrupts earlier ones)."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)

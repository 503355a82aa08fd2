"""Per-seed attempt bookkeeping: which checkpoint an attempt produced, whether a retry may resume
it, and a lock so that two attempts of one seed never run at once.

Why: a retried seed trains into the same trial folder. Lightning (>= 1.7, so threestudio's pin 2.0.0
too, and 2.6) does not overwrite a ckpts/last.ckpt that it did not write in this run: it saves
last-v1.ckpt instead (ModelCheckpoint._save_last_checkpoint's version counter). Exporting a name
guessed in advance (last.ckpt) then silently exports the interrupted attempt. So the job
  * starts a fresh attempt from an empty trial folder, or resumes on purpose (threestudio's
    `resume=`) the newest checkpoint of an interrupted attempt that had the same fingerprint;
  * after training, takes the checkpoint this attempt wrote from ckpts/: the files new or changed
    since a snapshot taken just before launch.py started, preferring Lightning's last[-vN].ckpt;
  * keeps OUT/seeds/<tag>.json (state, fingerprint, checkpoint path + size + mtime), so a later run
    exports exactly that file, while unchanged, instead of training again.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import errno
import fcntl
import json
import os
import re
import socket
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

from dreamdist.utils.atomic import atomic_write_text

# Lightning's ModelCheckpoint: CHECKPOINT_NAME_LAST "last", CHECKPOINT_JOIN_CHAR "-", version "v{n}",
# FILE_EXTENSION ".ckpt" (so last.ckpt, last-v1.ckpt, ...)
LAST_NAME = re.compile(r"^last(?:-v(\d+))?\.ckpt$")

# states in OUT/seeds/<tag>.json
TRAINING, TRAINED, FAILED, INTERRUPTED = "training", "trained", "failed", "interrupted"


# ---------------------------------------------------------------------------------- checkpoints


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint as this attempt left it; `unchanged()` tells whether it is still that file."""

    path: str
    bytes: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> "CheckpointInfo":
        st = os.stat(path)
        return cls(path=str(path), bytes=st.st_size, mtime_ns=st.st_mtime_ns)

    def unchanged(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return st.st_size == self.bytes and st.st_mtime_ns == self.mtime_ns

    def mtime_iso(self) -> str:
        return _dt.datetime.fromtimestamp(self.mtime_ns / 1e9).astimezone().isoformat(timespec="milliseconds")


Snapshot = dict[str, tuple[int, int, int]]


def snapshot(ckpts: Path) -> Snapshot:
    """name -> (size, mtime_ns, inode) of every *.ckpt, taken before launch.py starts."""
    out: Snapshot = {}
    if ckpts.is_dir():
        for p in ckpts.glob("*.ckpt"):
            try:
                st = p.stat()
            except OSError:
                continue
            out[p.name] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def _order(p: Path, st: os.stat_result) -> tuple[int, int]:
    m = LAST_NAME.match(p.name)
    return st.st_mtime_ns, int(m.group(1) or 0) if m else 0


def _pick(files: list[tuple[Path, os.stat_result]]) -> Path | None:
    """Lightning's last[-vN].ckpt if any (newest), else the newest checkpoint."""
    last = [(p, st) for p, st in files if LAST_NAME.match(p.name)]
    pool = last or files
    return max(pool, key=lambda f: _order(*f))[0] if pool else None


def written_checkpoint(ckpts: Path, before: Snapshot) -> Path | None:
    """The checkpoint this attempt wrote: among ckpts/*.ckpt new or changed since `before`."""
    found = []
    for p in ckpts.glob("*.ckpt") if ckpts.is_dir() else ():
        try:
            st = p.stat()
        except OSError:
            continue
        if st.st_size > 0 and before.get(p.name) != (st.st_size, st.st_mtime_ns, st.st_ino):
            found.append((p, st))
    return _pick(found)


def complete_checkpoint(path: Path) -> bool:
    """A checkpoint a killed writer did not tear: Lightning saves with torch.save, whose format is a
    zip archive (its central directory is written last)."""
    try:
        return path.stat().st_size > 0 and zipfile.is_zipfile(path)
    except OSError:
        return False


def newest_checkpoint(ckpts: Path) -> Path | None:
    """The most advanced complete checkpoint an interrupted attempt left (what a resume starts from)."""
    files = []
    for p in ckpts.glob("*.ckpt") if ckpts.is_dir() else ():
        if complete_checkpoint(p):
            files.append((p, p.stat()))
    return _pick(files)


# ------------------------------------------------------------------------------------- state file


def read_state(path: Path) -> dict[str, Any] | None:
    """The seed's last attempt state, or None (no file, or unreadable: then nothing is trusted)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(path: Path, **fields: Any) -> dict[str, Any]:
    fields["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_text(path, json.dumps(fields, indent=1) + "\n")
    return fields


def trained_checkpoint(state: dict[str, Any] | None, fingerprint: str) -> CheckpointInfo | None:
    """The checkpoint of a finished training with these settings, if it is still the same file."""
    if not state or state.get("state") != TRAINED or state.get("fingerprint") != fingerprint:
        return None
    try:
        info = CheckpointInfo(**state["checkpoint"])
    except (KeyError, TypeError):
        return None
    return info if info.unchanged() else None


def resumable_checkpoint(state: dict[str, Any] | None, fingerprint: str, trial: Path) -> Path | None:
    """The checkpoint to resume, when the last attempt was stopped or killed (not failed: a failure
    may come from the checkpoint itself) while training with the same settings."""
    if not state or state.get("state") not in (TRAINING, INTERRUPTED) or state.get("fingerprint") != fingerprint:
        return None
    return newest_checkpoint(trial / "ckpts")


# ------------------------------------------------------------------------------------------- lock


class SeedBusy(Exception):
    """Another attempt of this seed still runs (another runner, or a job tree still dying)."""


class SeedLock:
    """An exclusive flock on OUT/seeds/<tag>.lock.

    Not filelock: the lock must outlive the runner until the job's last process is gone, so its file
    descriptor is passed down to the guard and launch.py (process.run_logged) and the kernel releases
    the lock only when every holder has exited. Closing our descriptor (never LOCK_UN, which would
    release it for the children too) is all that `close()` does. On a shared filesystem (Ray) the
    lock works where flock does (local disks, NFSv4).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, wait_s: float, stop_event: threading.Event | None = None, poll_s: float = 0.1) -> bool:
        """True once held; False if `stop_event` was set while waiting; SeedBusy after `wait_s`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
            if stop_event is not None and stop_event.is_set():
                os.close(fd)
                return False
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 400, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise SeedBusy(f"another attempt of this seed is running ({holder}; lock {self.path})")
            time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}\n".encode(), 0)
        self.fd = fd
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

"""Child processes for batch jobs: logged, stoppable, and never outliving the runner.

Each threestudio run gets its own session (process group), so a terminal Ctrl-C reaches only the
runner, which then stops every job itself (SIGTERM to the whole group, SIGKILL after a grace
period) and records them as interrupted. On Linux the child is also started through a tiny guard
that asks the kernel to SIGTERM it if the runner dies (PR_SET_PDEATHSIG), so a SIGKILLed runner
does not leave orphaned trainings holding GPUs. The guard is an exec wrapper rather than a
`preexec_fn`, which is unsafe in a threaded program.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Mapping, Sequence

GRACE_S = 10.0

_GUARD = (
    "import ctypes,os,signal,sys\n"
    "try: ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"  # 1 = PR_SET_PDEATHSIG
    "except Exception: pass\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(143)\n"  # the runner already died
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def guarded(cmd: Sequence[str]) -> list[str]:
    if not sys.platform.startswith("linux"):
        return list(cmd)
    return [sys.executable, "-S", "-c", _GUARD, str(os.getpid()), *cmd]  # -S: no site, starts faster


def shell_line(cmd: Sequence[str], cwd: str | Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """The command as a copy-pasteable shell line (what --dry-run prints and logs record)."""
    prefix = f"cd {shlex.quote(str(cwd))} && " if cwd else ""
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    return prefix + (assigns + " " if assigns else "") + shlex.join([str(c) for c in cmd])


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """SIGTERM the job's process group, SIGKILL it if still there after `grace_s`."""
    if proc.poll() is not None:
        return
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


def run_logged(cmd: Sequence[str], log: IO[bytes], cwd: str | Path, env_updates: Mapping[str, str],
               stop_event: threading.Event | None = None, poll_s: float = 0.1) -> int | None:
    """Run `cmd` with stdout+stderr appended to `log`; return its exit code, or None if `stop_event`
    was set (the job was stopped)."""
    log.write(f"\n$ {shell_line(cmd, cwd, env_updates)}\n".encode())
    log.flush()
    env = {**os.environ, **env_updates}
    proc = subprocess.Popen(guarded(cmd), cwd=str(cwd), env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        while True:
            try:
                return proc.wait(timeout=poll_s)
            except subprocess.TimeoutExpired:
                pass
            if stop_event is not None and stop_event.is_set():
                stop(proc)
                log.write(b"\n[dreamdist batch] stopped (interrupted)\n")
                return None
    finally:
        if proc.poll() is None:  # an exception in this thread: never leave the child behind
            stop(proc, grace_s=2.0)


def elapsed(start: float) -> float:
    return round(time.monotonic() - start, 3)

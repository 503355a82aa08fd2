"""Child processes for batch jobs: logged, stoppable, and never outliving the runner.

Every launch.py runs under a tiny guard (stdlib Python started with -S) that leads a new session,
so the whole launch.py tree (it may spawn workers) is one process group:
  * the runner dies, by any signal, SIGKILL included: the guard SIGKILLs its whole group at once.
    Linux tells the guard at once (PR_SET_PDEATHSIG); elsewhere (macOS) the guard sees its parent
    change within POLL_S. SIGKILL, not SIGTERM: Lightning's SIGTERM handler (_SignalConnector) only
    sets a flag, which trainer.predict (`--export`) never reads, so a SIGTERMed export ran on as an
    orphan and raced the re-run.
  * the guard itself is killed: on Linux launch.py gets SIGKILL (its own PDEATHSIG), and the runner
    sweeps the group.
  * the runner stops a job (Ctrl-C, SIGTERM, stop_event): SIGTERM to the group (Lightning ends
    training at the next step, never mid-checkpoint), SIGKILL after a grace period.
  * launch.py exits: the runner SIGKILLs what is left in its group (stray workers).
The guard forks and execs launch.py itself because `preexec_fn` is unsafe in the threaded runner.
A descriptor passed in `keep_fds` (the seed's lock) is inherited by launch.py, so the lock is held
until the job's last process is gone. Terminal Ctrl-C reaches only the runner (jobs have their own
session), which then stops the jobs itself and records them as interrupted.
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

GRACE_S = 10.0  # SIGTERM -> SIGKILL when stopping a training
POLL_S = 0.1  # how often the guard checks that the runner is still its parent

_GUARD = r"""
import os, signal, sys, time
runner, cmd = int(sys.argv[1]), sys.argv[2:]
def sweep(*_):
    if os.getppid() != runner:  # runner gone (PDEATHSIG also fires when only its thread ended)
        os.killpg(0, signal.SIGKILL)  # launch.py, its workers, and this guard
libc = None
if sys.platform.startswith("linux"):
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        signal.signal(signal.SIGHUP, sweep)
        libc.prctl(1, int(signal.SIGHUP))  # PR_SET_PDEATHSIG
    except Exception:
        libc = None
sweep()  # the runner may have died before prctl
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stop signals the whole group: it is for launch.py
signal.signal(signal.SIGINT, signal.SIG_IGN)
guard = os.getpid()
pid = os.fork()
if pid == 0:
    try:
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        if libc is not None:
            libc.prctl(1, int(signal.SIGKILL))  # launch.py dies with this guard
        if os.getppid() != guard:
            os._exit(137)
        os.execvp(cmd[0], cmd)
    except BaseException as exc:
        sys.stderr.write(f"[dreamdist batch] cannot start {cmd[0]}: {exc}\n")
    os._exit(127)
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    sweep()
    time.sleep(POLL)
code = os.waitstatus_to_exitcode(status)
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code if code >= 0 else 128 - code)
""".replace("POLL", repr(POLL_S))


def guarded(cmd: Sequence[str]) -> list[str]:
    """`cmd` run under the guard; start it with start_new_session=True (see the module docstring)."""
    return [sys.executable, "-S", "-c", _GUARD, str(os.getpid()), *[str(c) for c in cmd]]


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
    """SIGTERM the job's process group, SIGKILL it if still there after `grace_s` (at once if 0)."""
    if proc.poll() is None:
        if grace_s > 0:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
    _signal_group(proc, signal.SIGKILL)  # also what the group has left after its leader exited
    proc.wait()


def run_logged(
    cmd: Sequence[str],
    log: IO[bytes],
    cwd: str | Path,
    env_updates: Mapping[str, str],
    stop_event: threading.Event | None = None,
    poll_s: float = 0.1,
    grace_s: float = GRACE_S,
    keep_fds: Sequence[int] = (),
) -> int | None:
    """Run `cmd` with stdout+stderr appended to `log`; return its exit code, or None if `stop_event`
    was set (the job was stopped). `keep_fds` are inherited by the command (the seed lock)."""
    log.write(f"\n$ {shell_line(cmd, cwd, env_updates)}\n".encode())
    log.flush()
    env = {**os.environ, **env_updates}
    proc = subprocess.Popen(
        guarded(cmd),
        cwd=str(cwd),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        pass_fds=tuple(keep_fds),
    )
    try:
        while True:
            try:
                code = proc.wait(timeout=poll_s)
            except subprocess.TimeoutExpired:
                pass
            else:
                _signal_group(proc, signal.SIGKILL)  # stray workers of a finished launch.py
                return code
            if stop_event is not None and stop_event.is_set():
                stop(proc, grace_s)
                log.write(b"\n[dreamdist batch] stopped (interrupted)\n")
                return None
    finally:
        if proc.poll() is None:  # an exception in this thread: never leave the child behind
            stop(proc, grace_s=min(grace_s, 2.0))


def elapsed(start: float) -> float:
    return round(time.monotonic() - start, 3)

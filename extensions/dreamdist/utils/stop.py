"""Ctrl-C and SIGTERM as a request to stop at the next safe point.

A long loop (a training run, a batch of 3D runs) that is killed mid-write leaves torn files; one
that is asked to stop finishes the unit of work in hand, saves, and then stops. ``StopRequest``
turns the first SIGINT / SIGTERM into a flag the loop polls. What a second Ctrl-C does is the
caller's choice: abort at once (training: the half-done step is not worth saving) or be ignored
(a batch runner cleaning up its jobs must not be cut short).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Any, Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Handlers for SIGINT / SIGTERM that record the request instead of raising.

    ``on_request(signal_name)`` runs in the handler on every request (to say what happens next).
    With ``second_sigint_aborts``, a SIGINT after a first request raises ``KeyboardInterrupt`` at
    once; otherwise later signals are only recorded. Handlers are installed only in the main thread
    (Python allows no other) and the previous ones are restored on leaving ``installed()``.
    """

    def __init__(self, on_request: Callable[[str], None] | None = None, *, second_sigint_aborts: bool = True) -> None:
        self.signal_name: str | None = None
        self._on_request = on_request
        self._second_sigint_aborts = second_sigint_aborts
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handler(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        if self.requested and signum == signal.SIGINT and self._second_sigint_aborts:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        if self._on_request is not None:
            self._on_request(self.signal_name)

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopRequest"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except (ValueError, OSError):  # pragma: no cover - embedders that forbid signal handlers
                pass
        try:
            yield self
        finally:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
            self._previous.clear()

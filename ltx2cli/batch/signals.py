"""Ctrl-C during a batch: the first asks to stop between jobs, the second interrupts at once."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


class StopAfterJob:
    """SIGINT handler for the batch (installed only on the main thread; elsewhere it never fires)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nstopping after the current job, or a long clip's current window (Ctrl-C again to stop now)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> StopAfterJob:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

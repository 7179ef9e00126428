"""The worker's progress updates: stage changes and throttled denoising steps, handed to a sender (RunPod's
progress_update, wired in worker.handler) as the job's interim output."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

STEP_INTERVAL = 2.0  # seconds between denoising-step updates: each one is an HTTP post to RunPod


class Progress:
    """Stage changes and (throttled) denoising steps, sent to RunPod's /status as the job's interim output."""

    def __init__(self, send: Callable[[dict[str, Any]], None] | None, interval: float = STEP_INTERVAL):
        self.send, self.interval = send, interval
        self.current: str | None = None
        self.last_step = 0.0

    def stage(self, name: str) -> None:
        if name != self.current:
            self.current = name
            self._send({"stage": name})

    def step(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self.last_step >= self.interval:
            self.last_step = now
            self._send({"stage": "denoise", "step": done, "steps": total})

    def _send(self, update: dict[str, Any]) -> None:
        if self.send is not None:
            self.send(update)

"""The background threads a batch's stages run on: one per stage, each running its calls in order, niced below
the render; and, on a CPU, one core kept free for them."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

BACKGROUND_NICE = 10  # added to the nice value of the prefetch and deliver threads


class StageThread:
    """One daemon thread running submitted calls in order. `submit` blocks while one call already waits, which
    bounds what is held in memory. Daemon: a second Ctrl-C never waits for it."""

    def __init__(self, name: str):
        self._calls: queue.Queue = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._calls.put((future, fn, args))
        return future

    def drain(self) -> None:
        """Wait until every submitted call has run, then end the thread."""
        self._calls.put(None)
        self._thread.join()

    def _loop(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: a thread is a task with its own nice value
            # The render is the critical path: background work (and the encoder threads it starts, which inherit
            # this) yields the CPU to it rather than slowing it down.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
        while (call := self._calls.get()) is not None:
            future, fn, args = call
            future.set_running_or_notify_cancel()
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # handed to whoever waits on the future
                future.set_exception(e)


@contextlib.contextmanager
def spare_core() -> Iterator[None]:
    """Rendering on the CPU: leave one core to the prefetch and deliver threads. With every core in torch's
    thread pool, the overlapped encode would stall each of its parallel steps and make the batch slower than
    running the stages one after another (measured with bench/batch_overlap.py on 2 cores). GPU renders
    need no CPU pool, so nothing changes there."""
    import torch

    threads = torch.get_num_threads()
    if torch.cuda.is_available() or threads < 2:
        yield
        return
    torch.set_num_threads(threads - 1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)

"""The engine's loop, fed by asyncio request handlers running on another thread.

The engine is single-threaded: handlers never touch it. They post requests and aborts to
an inbox; the engine's loop applies them between steps, runs steps while there is work,
and hands every delta to the asyncio queue of its request. A handler that stops
listening (a client that disconnects) aborts its request, which frees its memory at once.

`lmforge serve` runs the loop on the main thread and the HTTP server on a second one:
PyTorch's OpenMP workers answer the thread that first used them fastest, and the engine
measured about twice as slow per token on a second thread of the same process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import AsyncIterator, Callable

from lmforge.serve.engine import Delta, LLMEngine
from lmforge.serve.params import SamplingParams


class AsyncEngine:
    """Runs `engine` on a background thread; `generate` streams a request's deltas to a coroutine."""

    def __init__(self, engine: LLMEngine, on_step: Callable[[LLMEngine, list[Delta], float], None] | None = None):
        self.engine = engine
        self.on_step = on_step
        self._inbox: deque = deque()
        self._wake = threading.Condition()
        self._queues: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._stopped = False
        self._running = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        """Run the loop on a thread of its own (tests; `run` keeps it on the calling thread)."""
        self._thread = threading.Thread(target=self.run, name="lmforge-engine", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop the loop after the current step."""
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._running and self.error is None

    def queued(self) -> int:
        """Requests posted or waiting for a seat (an estimate from another thread, for admission control)."""
        return len(self._inbox) + len(self.engine.scheduler.waiting)

    def _post(self, item) -> None:
        with self._wake:
            self._inbox.append(item)
            self._wake.notify()

    async def generate(self, request_id: str, prompt: list[int], params: SamplingParams) -> AsyncIterator[Delta]:
        """Queue a request and yield its deltas until every sample finished; abort it if the consumer leaves."""
        queue: asyncio.Queue = asyncio.Queue()
        self._queues[request_id] = (asyncio.get_running_loop(), queue)
        self._post(("add", request_id, prompt, params))
        left = params.n
        try:
            while left:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                left -= item.finish_reason is not None
                yield item
        finally:
            self._queues.pop(request_id, None)
            if left:
                self._post(("abort", request_id))

    def _deliver(self, request_id: str, item) -> None:
        target = self._queues.get(request_id)
        if target is not None:
            loop, queue = target
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def _apply_inbox(self) -> None:
        while self._inbox:
            kind, request_id, *rest = self._inbox.popleft()
            if kind == "abort":
                self.engine.abort(request_id)
                continue
            try:
                self.engine.add_request(request_id, *rest)
            except Exception as e:  # a request the handler's checks let through: fail it alone
                self._deliver(request_id, e)

    def run(self) -> None:
        """The engine loop, on the calling thread, until `shutdown`."""
        self._running = True
        try:
            while True:
                with self._wake:
                    while not self._stopped and not self._inbox and not self.engine.has_unfinished():
                        self._wake.wait()
                    if self._stopped:
                        return
                    self._apply_inbox()
                started = time.perf_counter()
                deltas = self.engine.step()
                if self.on_step:
                    self.on_step(self.engine, deltas, time.perf_counter() - started)
                for delta in deltas:
                    self._deliver(delta.request_id, delta)
        except BaseException as e:  # the engine is broken (or interrupted): fail every waiting request
            self.error = e
            for request_id in list(self._queues):
                self._deliver(request_id, RuntimeError(f"the engine stopped: {e}"))
            if not isinstance(e, Exception):
                raise
        finally:
            self._running = False

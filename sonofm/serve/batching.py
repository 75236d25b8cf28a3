"""An asyncio micro-batcher: many concurrent requests, few model forwards.

Requests `await batcher.submit(item)`; one background task takes the first waiting item, keeps
collecting until `max_batch` items or `max_wait_ms` have passed, then runs `fn(items)` ONCE in a
single worker thread (the model is not re-entrant and the event loop must stay free) and resolves
each request's future with its result. While a forward runs, new requests queue up, so under load
batches fill by themselves and the wait only matters when the server is idle.

Written here because no installed library does dynamic batching for an in-process asyncio server
(Triton / Ray Serve / TorchServe are separate serving systems).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sonofm.records import pick

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchStats:
    """Counters for readiness output, tests and the benchmark."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    failed_batches: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches had it

    def record(self, n: int) -> None:
        self.batches += 1
        self.items += n
        self.largest = max(self.largest, n)
        self.sizes[n] = self.sizes.get(n, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        mean_size = self.items / self.batches if self.batches else 0.0
        return pick(self, "batches", "items", "largest", "failed_batches", mean_size=mean_size)


class MicroBatcher(Generic[T, R]):
    """Collect up to `max_batch` items or `max_wait_ms`, run `fn(items) -> results` in a thread.

    `fn` returns one result per item, in order; a result that is an `Exception` instance is raised
    in that item's caller only, an exception raised by `fn` fails every item of the batch.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.name = name
        self.stats = BatchStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sonofm-{name}")
        self._queue: asyncio.Queue[tuple[T, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the collector task on the running loop (idempotent)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.running and self._loop is loop:
                return
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(), name=f"sonofm-{self.name}")

    async def stop(self) -> None:
        """Cancel the collector; waiting requests get a RuntimeError."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await task
        if self._queue is not None:
            while not self._queue.empty():
                _, fut = self._queue.get_nowait()
                if not fut.done():
                    fut.set_exception(RuntimeError(f"{self.name} stopped"))

    def close(self) -> None:
        """Release the worker thread (after `stop`)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, item: T) -> R:
        """Queue `item`; returns its result once its batch has run."""
        loop = asyncio.get_running_loop()
        if not self.running or self._loop is not loop:
            await self.start()  # first use outside a lifespan, or a new event loop (test clients)
        fut: asyncio.Future = loop.create_future()
        assert self._queue is not None
        await self._queue.put((item, fut))
        return await fut

    async def _collect(self) -> list[tuple[T, asyncio.Future]]:
        assert self._queue is not None and self._loop is not None
        batch = [await self._queue.get()]
        deadline = self._loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            # take what is already waiting without yielding, then wait out the rest of the window
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        assert self._loop is not None
        while True:
            batch = await self._collect()
            live = [(item, fut) for item, fut in batch if not fut.done()]  # drop cancelled requests
            if not live:
                continue
            items = [item for item, _ in live]
            try:
                results = await self._loop.run_in_executor(self._executor, self.fn, items)
                if len(results) != len(items):
                    raise RuntimeError(
                        f"{self.name}: fn returned {len(results)} results for {len(items)} items"
                    )
            except asyncio.CancelledError:
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(RuntimeError(f"{self.name} stopped"))
                raise
            except Exception as err:  # the model failed: every request of this batch gets the error
                log.exception("%s: batch of %d failed", self.name, len(items))
                self.stats.failed_batches += 1
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            self.stats.record(len(items))
            for (_, fut), res in zip(live, results, strict=True):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

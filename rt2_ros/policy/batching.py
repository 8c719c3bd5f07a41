"""Micro-batching: many request threads, one model thread.

Robots send one image at a time; a GPU is fastest when it decodes several at
once.  :class:`BatchWorker` owns the model on a single thread: requests are
queued with :meth:`BatchWorker.submit` and the worker takes the oldest one,
then gathers further requests of the same kind until ``max_batch`` are
collected or the oldest has waited ``max_wait_s``, and runs them as one call.
Kinds that cannot be batched (free-text answers) run one at a time on the
same thread, so the model is never used concurrently.

The queue is bounded: a full queue is refused at once (:class:`QueueFullError`)
instead of growing latency without limit.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Collection

__all__ = ["BatchWorker", "BatchResult", "QueueFullError", "WorkerStoppedError"]


class QueueFullError(RuntimeError):
    """The worker's queue is full; the caller should answer "busy, retry later"."""


class WorkerStoppedError(RuntimeError):
    """The worker was stopped before it ran the request."""


@dataclass(frozen=True)
class BatchResult:
    """What a submitted request's future resolves to."""

    value: Any           # the run function's result for this request
    batch_size: int      # how many requests shared the model call
    queue_ms: float      # from submit to the start of the model call
    run_ms: float        # duration of the model call (shared by the batch)


@dataclass
class _Job:
    kind: str
    payload: Any
    future: Future
    enqueued: float


class BatchWorker:
    """Run ``run_batch(kind, payloads) -> results`` on one thread, batching by kind.

    ``run_batch`` must return one result per payload, in order.  If it raises
    for a batch of several requests, each request is re-run alone so that one
    bad request cannot fail the others; a request that fails alone gets the
    exception on its future.
    """

    def __init__(self, run_batch: Callable[[str, list[Any]], list[Any]], *, max_batch: int,
                 max_wait_s: float, max_queue: int, batchable: Collection[str],
                 name: str = "rt2-model") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch: expected an integer >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s: expected a number >= 0, got {max_wait_s}")
        if max_queue < 1:
            raise ValueError(f"max_queue: expected an integer >= 1, got {max_queue}")
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._batchable = frozenset(batchable)
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=max_queue)
        self._deferred: collections.deque[_Job] = collections.deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._stats_lock = threading.Lock()
        self._requests = 0
        self._batches = 0
        self._failed = 0
        self._batch_sizes: collections.Counter[int] = collections.Counter()
        self._started = False

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        """Start the worker thread (once)."""
        if not self._started:
            self._started = True
            self._thread.start()

    def submit(self, kind: str, payload: Any) -> Future:
        """Queue one request; return a Future of :class:`BatchResult`.

        Raises QueueFullError when ``max_queue`` requests are already waiting,
        WorkerStoppedError after :meth:`stop`.
        """
        if self._stop.is_set():
            raise WorkerStoppedError("the model worker is stopped")
        job = _Job(kind, payload, Future(), time.monotonic())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFullError(f"{self._queue.maxsize} requests are already queued") from None
        return job.future

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after its current batch; queued requests fail with WorkerStoppedError."""
        self._stop.set()
        if self._started:
            self._thread.join(timeout)
        leftovers = list(self._deferred)
        self._deferred.clear()
        while True:
            try:
                leftovers.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for job in leftovers:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(WorkerStoppedError("the model worker stopped"))

    def stats(self) -> dict[str, Any]:
        """Return counters: requests, batches, failed, max_batch_size, batch_sizes, queue_depth."""
        with self._stats_lock:
            return {
                "requests": self._requests,
                "batches": self._batches,
                "failed": self._failed,
                "max_batch_size": max(self._batch_sizes, default=0),
                "batch_sizes": {str(k): v for k, v in sorted(self._batch_sizes.items())},
                "queue_depth": self._queue.qsize() + len(self._deferred),
            }

    # ------------------------------------------------------------------ worker

    def _loop(self) -> None:
        while not self._stop.is_set():
            first = self._next(kind=None, timeout=0.1)
            if first is None:
                continue
            batch = [first]
            if first.kind in self._batchable:
                # The oldest request bounds the wait: one that already waited
                # while the previous batch ran takes only what is queued now.
                deadline = first.enqueued + self._max_wait_s
                while len(batch) < self._max_batch:
                    job = self._next(kind=first.kind, timeout=deadline - time.monotonic())
                    if job is None:
                        break
                    batch.append(job)
            self._run(first.kind, batch)

    def _next(self, kind: str | None, timeout: float) -> _Job | None:
        """Return the next live job (of ``kind`` if given), waiting at most ``timeout`` s."""
        while True:
            index = next((i for i, job in enumerate(self._deferred)
                          if kind is None or job.kind == kind), None)
            if index is None:
                break
            job = self._deferred[index]
            del self._deferred[index]
            if job.future.set_running_or_notify_cancel():  # False: the caller gave up
                return job
        end = time.monotonic() + max(timeout, 0.0)
        while True:
            remaining = end - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else \
                    self._queue.get_nowait()
            except queue.Empty:
                return None
            if kind is not None and job.kind != kind:
                self._deferred.append(job)
                continue
            if job.future.set_running_or_notify_cancel():  # False: the caller gave up
                return job

    def _run(self, kind: str, batch: list[_Job]) -> None:
        started = time.monotonic()
        try:
            results = self._run_batch(kind, [job.payload for job in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the model returned {len(results)} results for a batch of "
                                   f"{len(batch)}")
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the callers
            if len(batch) > 1:
                for job in batch:
                    self._run(kind, [job])
                return
            self._record(1, failed=True)
            batch[0].future.set_exception(exc)
            return
        run_ms = (time.monotonic() - started) * 1000.0
        self._record(len(batch), failed=False)
        for job, value in zip(batch, results):
            job.future.set_result(BatchResult(value=value, batch_size=len(batch),
                                              queue_ms=(started - job.enqueued) * 1000.0,
                                              run_ms=run_ms))

    def _record(self, size: int, failed: bool) -> None:
        with self._stats_lock:
            self._requests += size
            self._batches += 1
            self._batch_sizes[size] += 1
            if failed:
                self._failed += 1

"""The pool engine: N worker processes on this machine (``--workers N``).

Workers are started with the ``spawn`` method (a fresh interpreter: no state copied from
the calling process, safe with PyTorch and its threads). Each one sets its torch threads
to ``max(1, cores // N)`` and builds its state (the models) once, in the pool's
initializer; then chunks go to whichever worker is free. At most ``2 N`` chunks are in
flight, so a large run is not copied into the workers all at once.

A worker that dies (killed for memory, a crash in native code) breaks the pool: a new
one is started, and the chunks that were in flight are run again one at a time, so only
the chunk that kills its worker is reported failed; the rest finishes.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Iterator, Sequence

from flipseg.engines.base import (
    ChunkResult,
    Engine,
    Setup,
    Work,
    call_work,
    raise_setup_error,
    setup_worker,
    threads_per_worker,
)
from flipseg.errors import FlipsegError

__all__ = ["PoolEngine"]

#: The state of this worker process (set by the pool's initializer).
_WORKER: dict[str, Any] = {}


def _init_worker(setup: Setup, threads: int | None) -> None:
    _WORKER["state"], _WORKER["error"] = setup_worker(setup, threads)


def _run_chunk(index: int, work: Work, chunk: Any) -> ChunkResult:
    return call_work(index, work, _WORKER.get("state"), _WORKER.get("error"), chunk)


class PoolEngine(Engine):
    """``workers`` spawned processes, each built by ``setup()`` once.

    Parameters
    ----------
    setup
        ``setup() -> state``, picklable (a module-level function or a partial of one).
    workers
        Number of processes (>= 1).
    threads
        Torch threads per worker (default ``max(1, cores // workers)``).
    """

    def __init__(self, setup: Setup, workers: int, *, threads: int | None = None) -> None:
        if int(workers) < 1:
            raise FlipsegError(f"--workers must be >= 1, got {workers}")
        self.workers = int(workers)
        self.threads = int(threads) if threads else threads_per_worker(self.workers)
        self.describe = f"{self.workers} worker processes ({self.threads} torch thread(s) each)"
        self._setup = setup
        self._pool: ProcessPoolExecutor | None = None

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(self._setup, self.threads))
        return self._pool

    def map(self, work: Work, chunks: Sequence[Any]) -> Iterator[ChunkResult]:
        todo = deque(range(len(chunks)))
        suspects: deque[int] = deque()  # in flight when a worker died: run again one at a time
        pending: dict[Future, tuple[int, bool]] = {}  # future -> (chunk, run alone)
        while todo or suspects or pending:
            pool = self._start()
            if suspects:
                if not pending:
                    i = suspects.popleft()
                    pending[pool.submit(_run_chunk, i, work, chunks[i])] = (i, True)
            else:
                while todo and len(pending) < 2 * self.workers:
                    i = todo.popleft()
                    pending[pool.submit(_run_chunk, i, work, chunks[i])] = (i, False)
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                i, alone = pending.pop(fut)
                try:
                    res = fut.result()
                except BrokenProcessPool:
                    broken = True
                    if not alone:  # maybe another chunk's crash: try it again on its own
                        suspects.append(i)
                        continue
                    res = ChunkResult(i, error=RuntimeError(
                        "a worker process died while running this chunk (out of memory? a "
                        "crash in native code?)"))
                except Exception as exc:  # noqa: BLE001 - e.g. a chunk that does not pickle
                    res = ChunkResult(i, error=exc)
                if res.setup_failed:
                    self.close()
                    raise_setup_error(res)
                yield res
            if broken:  # the pool is gone: its other chunks go again, one at a time
                suspects.extend(i for i, _alone in pending.values())
                pending.clear()
                self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

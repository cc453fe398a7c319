"""What every engine does: build each worker's state once, run ``work(state, chunk)`` per
chunk, hand back each chunk's result or its error, the rest going on.

A worker calls :func:`call_work`; it never raises. Its answer, a :class:`ChunkResult`,
holds the chunk's value, or the exception ``work`` raised (kept whole when it pickles, so a
:class:`~flipseg.errors.FlipsegError` stays one), or the error of ``setup`` (a bad
``--model``, a bad option), which the engine raises in the calling process
(:class:`EngineSetupError` when it is not a FlipsegError): every worker would fail the same
way.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from flipseg.errors import FlipsegError

__all__ = ["ChunkResult", "Engine", "EngineSetupError", "call_work", "cpu_count", "in_order",
           "raise_setup_error", "setup_worker", "split", "spread", "threads_per_worker"]

#: ``setup() -> state``: what a worker builds once (its models).
Setup = Callable[[], Any]
#: ``work(state, chunk) -> value``: one chunk of cases.
Work = Callable[[Any, Any], Any]


class EngineSetupError(RuntimeError):
    """A worker could not build its state (the message is the worker's)."""


@dataclass
class ChunkResult:
    """The answer for chunk ``index``: ``value``, or ``error`` (an exception)."""

    index: int
    value: Any = None
    error: BaseException | None = None
    setup_failed: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def cpu_count() -> int:
    """The CPU cores this process may use (its affinity mask where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Torch threads of each of ``workers`` processes: ``max(1, cores // workers)``."""
    return max(1, (cores or cpu_count()) // max(1, int(workers)))


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (to go back to the calling process), else a
    RuntimeError with its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure: send the words instead
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def setup_worker(setup: Setup, threads: int | None) -> tuple[Any, BaseException | None]:
    """In a worker: torch threads (when given), then ``setup()``; returns (state, error)."""
    try:
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        return setup(), None
    except Exception as exc:  # noqa: BLE001 - sent back, raised in the calling process
        return None, _portable(exc)


def call_work(index: int, work: Work, state: Any, setup_error: BaseException | None,
              chunk: Any, *, portable: bool = True) -> ChunkResult:
    """In a worker: ``work(state, chunk)`` as a :class:`ChunkResult` (never raises). With
    ``portable`` an exception that would not pickle is sent as a RuntimeError of its words
    (the local engine keeps it whole, traceback and all)."""
    if setup_error is not None:
        return ChunkResult(index, error=setup_error, setup_failed=True)
    try:
        return ChunkResult(index, value=work(state, chunk))
    except Exception as exc:  # noqa: BLE001 - reported for the chunk's cases, the rest goes on
        return ChunkResult(index, error=_portable(exc) if portable else exc)


def raise_setup_error(result: ChunkResult) -> None:
    """In the calling process: a worker's setup error, as the FlipsegError it was or as an
    :class:`EngineSetupError`."""
    err = result.error
    if isinstance(err, FlipsegError):
        raise err
    raise EngineSetupError(f"a worker could not load its models: {type(err).__name__}: {err}") from err


class Engine:
    """Base of the engines: ``map(work, chunks)`` yields one :class:`ChunkResult` per chunk, in
    the order the chunks finish. Use as a context manager (or call :meth:`close`)."""

    #: Worker processes (1 for the local engine).
    workers: int = 1
    #: Words for progress lines, e.g. ``"2 worker processes"``.
    describe: str = "this process"

    def map(self, work: Work, chunks: Sequence[Any]) -> Iterator[ChunkResult]:
        raise NotImplementedError

    def run(self, work: Work, chunks: Sequence[Any]) -> list[ChunkResult]:
        """Every chunk's result, in chunk order."""
        out: list[ChunkResult | None] = [None] * len(chunks)
        for res in self.map(work, chunks):
            out[res.index] = res
        return [r for r in out if r is not None]

    def close(self) -> None:
        """Stop the workers (the engine cannot be used again)."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def split(items: Sequence[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive chunks of at most ``size``."""
    size = max(1, int(size))
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def spread(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """``items`` in at most ``parts`` consecutive chunks of nearly equal size (none empty)."""
    n = len(items)
    parts = max(1, min(int(parts), n))
    bounds = [round(k * n / parts) for k in range(parts + 1)]
    return [list(items[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]


def in_order(results: Iterable[ChunkResult]) -> list[ChunkResult]:
    return sorted(results, key=lambda r: r.index)

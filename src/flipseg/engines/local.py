"""The local engine: every chunk in this process, one after the other (``--workers 1``)."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from flipseg.engines.base import ChunkResult, Engine, Setup, Work, call_work, raise_setup_error

__all__ = ["LocalEngine"]


class LocalEngine(Engine):
    """Runs ``work(state, chunk)`` here; ``setup()`` is called once, on the first chunk.

    A setup error is raised as it is (a FlipsegError stays a one-line error); an error of
    ``work`` is that chunk's :class:`ChunkResult`, and the other chunks go on.
    """

    workers = 1
    describe = "this process"

    def __init__(self, setup: Setup) -> None:
        self._setup = setup
        self._state: Any = None
        self._ready = False

    def state(self) -> Any:
        """The worker state (built on first use)."""
        if not self._ready:
            self._state = self._setup()
            self._ready = True
        return self._state

    def map(self, work: Work, chunks: Sequence[Any]) -> Iterator[ChunkResult]:
        state = self.state()
        for i, chunk in enumerate(chunks):
            res = call_work(i, work, state, None, chunk, portable=False)
            if res.setup_failed:  # pragma: no cover - no setup error reaches here
                raise_setup_error(res)
            yield res

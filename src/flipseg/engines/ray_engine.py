"""The Ray engine: the chunks of a run on the actors of a Ray cluster (``--engine ray``).

``address=None`` starts a local cluster on this machine (``ray.init(num_cpus=workers)``);
``"auto"`` joins the cluster this machine belongs to (``ray start --head`` / ``ray start
--address``); ``"ray://HOST:PORT"`` connects through Ray Client. ``workers`` actors are
started (one CPU each, or one GPU each with ``gpus_per_worker=1``); each builds its state
(the models) once, then takes chunks as it frees up. Every node must have flipseg (and
the model files named on the command line, at the same paths) installed.

Ray is an optional extra: ``pip install 'flipseg[ray]'``.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from flipseg.engines.base import (
    ChunkResult,
    Engine,
    Setup,
    Work,
    call_work,
    raise_setup_error,
    setup_worker,
)
from flipseg.errors import FlipsegError

__all__ = ["RayEngine", "import_ray"]


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise FlipsegError("--engine ray needs Ray: pip install 'flipseg[ray]'") from None
    return ray


class _Worker:
    """One actor: its state built once, then ``work(state, chunk)`` per call."""

    def __init__(self, setup: Setup, threads: int | None) -> None:
        self.state, self.error = setup_worker(setup, threads)

    def run(self, index: int, work: Work, chunk: Any) -> ChunkResult:
        return call_work(index, work, self.state, self.error, chunk)


class RayEngine(Engine):
    """``workers`` Ray actors built by ``setup()``.

    Parameters
    ----------
    setup
        ``setup() -> state`` (pickled by Ray: a module-level function or a partial of one).
    workers
        Actors to start (>= 1).
    address
        None: a local cluster started here with ``workers`` CPUs (or the one this process
        already joined); ``"auto"`` or ``"ray://HOST:PORT"``: an existing cluster.
    threads
        Torch threads per actor (default 1).
    gpus_per_worker
        GPUs each actor reserves (``--device cuda``: 1).
    """

    def __init__(self, setup: Setup, workers: int, *, address: str | None = None,
                 threads: int | None = 1, gpus_per_worker: float = 0.0) -> None:
        if int(workers) < 1:
            raise FlipsegError(f"--workers must be >= 1, got {workers}")
        ray = import_ray()
        self.workers = int(workers)
        self._ray = ray
        self._started_here = False
        if not ray.is_initialized():
            try:
                if address is None:
                    ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                             configure_logging=False)
                else:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"at {address}" if address else "on this machine"
                words = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise FlipsegError(f"cannot start or reach a Ray cluster {where}: {words}") from None
            self._started_here = True
        where = address or "a local cluster"
        self.describe = f"{self.workers} Ray actors ({where})"
        actor = ray.remote(num_cpus=1, num_gpus=gpus_per_worker)(_Worker)
        # Ray imports ``setup``'s module by name in each actor: flipseg must be installed there
        self._actors = [actor.remote(setup, threads) for _ in range(self.workers)]

    def map(self, work: Work, chunks: Sequence[Any]) -> Iterator[ChunkResult]:
        ray = self._ray
        todo = list(range(len(chunks)))[::-1]
        running: dict[Any, tuple[int, Any]] = {}  # object ref -> (chunk, actor)
        free = list(self._actors)
        while todo or running:
            while todo and free:
                i, actor = todo.pop(), free.pop()
                running[actor.run.remote(i, work, chunks[i])] = (i, actor)
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                i, actor = running.pop(ref)
                free.append(actor)
                try:
                    res = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - an actor died: the chunk failed
                    words = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    res = ChunkResult(i, error=RuntimeError(f"Ray actor failed: {words}"))
                    free.remove(actor)
                    if not free and not running:
                        for j in sorted(todo):
                            yield ChunkResult(j, error=RuntimeError("not run: every Ray actor died"))
                        todo.clear()
                if res.setup_failed:
                    self.close()
                    raise_setup_error(res)
                yield res

    def close(self) -> None:
        ray = self._ray
        for a in getattr(self, "_actors", []):
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors = []
        if self._started_here and ray.is_initialized():
            ray.shutdown()
            self._started_here = False

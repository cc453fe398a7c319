"""The engine options of the batch commands (``segment --dataset``, ``evaluate``, ``label``)
and :func:`make_engine`, which turns them into an engine.

- ``--workers N``: N processes (default 1: this process);
- ``--engine local|ray`` and ``--address auto|ray://HOST:PORT`` (Ray);
- ``--num-parts K --part-id I``: only part I of K of the cases (:mod:`flipseg.engines.shard`).

Standard library only: the CLI parser imports this module.
"""

from __future__ import annotations

import argparse
from typing import Any

from flipseg.errors import FlipsegError

__all__ = ["ENGINES", "add_engine_args", "engine_settings", "make_engine"]

ENGINES = ("local", "ray")


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """``--workers``, ``--engine``, ``--address``, ``--num-parts``, ``--part-id``."""
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run the cases in N processes, each loading the models once (default 1; "
                        "with --engine ray: N Ray actors, default 2)")
    p.add_argument("--engine", default="local", metavar="local|ray",
                   help="local (this machine, default) or ray (a Ray cluster: pip install "
                        "'flipseg[ray]')")
    p.add_argument("--address", default=None, metavar="auto|ray://HOST:PORT",
                   help="--engine ray: the cluster to join (default: start one on this machine)")
    p.add_argument("--num-parts", type=int, default=None, metavar="K",
                   help="split the cases into K parts (job arrays) and run only --part-id")
    p.add_argument("--part-id", type=int, default=None, metavar="I",
                   help="the part to run, 0 to K-1 (with --num-parts)")


def engine_settings(args: argparse.Namespace) -> tuple[str, int]:
    """``(engine, workers)`` of the parsed options, checked before any work.

    Raises
    ------
    FlipsegError
        An unknown engine, ``--workers`` below 1, or ``--address`` without ``--engine ray``.
    """
    engine = str(getattr(args, "engine", None) or "local").lower()
    if engine not in ENGINES:
        raise FlipsegError(f"--engine {engine!r}: use local or ray")
    workers = getattr(args, "workers", None)
    if workers is not None and workers < 1:
        raise FlipsegError(f"--workers must be >= 1, got {workers}")
    if getattr(args, "address", None) and engine != "ray":
        raise FlipsegError("--address is for --engine ray")
    return engine, int(workers or (2 if engine == "ray" else 1))


def make_engine(setup: Any, args: argparse.Namespace, *, device: str = "cpu") -> Any:
    """The engine the options name, its workers built by ``setup()`` (see
    :mod:`flipseg.engines`): this process, a process pool or Ray actors."""
    engine, workers = engine_settings(args)
    if engine == "ray":
        from flipseg.engines.ray_engine import RayEngine

        address = getattr(args, "address", None)
        # on a cluster each actor takes a GPU; a local cluster shares this machine's GPU
        gpus = (1.0 if address else 1.0 / workers) if device.startswith("cuda") else 0.0
        return RayEngine(setup, workers, address=address, gpus_per_worker=gpus)
    if workers == 1:
        from flipseg.engines.local import LocalEngine

        return LocalEngine(setup)
    from flipseg.engines.pool import PoolEngine

    return PoolEngine(setup, workers)

"""Engines: where the cases of a batch command run, and which cases a run takes.

- :class:`LocalEngine`: in this process (``--workers 1``, the default);
- :class:`PoolEngine`: a pool of N worker processes on this machine (``--workers N``);
- :class:`RayEngine`: the actors of a Ray cluster (``--engine ray [--address ...]``);
- :func:`shard`: one part of K of a run (``--num-parts K --part-id I``), for job arrays.

Every engine runs the same thing: ``work(state, chunk)`` for each chunk of cases, where
``state`` is what ``setup()`` built once per worker (the models). Both are plain
module-level functions (or :func:`functools.partial` of them), so they travel to other
processes and machines by name. The engines import no method: the commands hand them
their ``setup`` and ``work``.

This package keeps to the standard library at import time (the CLI parser imports
:mod:`flipseg.engines.options`).
"""

from flipseg.methods.common import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "ChunkResult": "flipseg.engines.base",
    "Engine": "flipseg.engines.base",
    "EngineSetupError": "flipseg.engines.base",
    "LocalEngine": "flipseg.engines.local",
    "PoolEngine": "flipseg.engines.pool",
    "RayEngine": "flipseg.engines.ray_engine",
    "RemoteSegmenter": "flipseg.engines.segmenters",
    "make_engine": "flipseg.engines.options",
    "shard": "flipseg.engines.shard",
})

"""A segmenter whose work is done by an engine's workers (``evaluate --workers N``).

The workers hold the models: their state is ``{method name: segmenter}``. A call of
:meth:`RemoteSegmenter.segment_many` splits its batch into one piece per worker, runs the
pieces at once and puts the masks back in order. Masks do not depend on the batch a box is
in (every random choice of a box is seeded by the box: :func:`flipseg.segmenters.case_seed`),
so they are those of one process.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from flipseg.boxes import Box
from flipseg.engines.base import Engine, spread
from flipseg.segmenters import Segmenter

__all__ = ["RemoteSegmenter", "segment_work"]


def segment_work(state: dict[str, Any], chunk: tuple[str, list, list, int]) -> list[np.ndarray]:
    """In a worker: ``state[name].segment_many(images, boxes, seed=seed)`` as bool masks."""
    name, images, boxes, seed = chunk
    return [np.asarray(m, bool) for m in state[name].segment_many(images, boxes, seed=seed)]


class RemoteSegmenter(Segmenter):
    """Method ``name`` of the workers of ``engine`` (whose state maps names to segmenters).

    A piece that fails raises its error here (a FlipsegError as itself), as the method
    would in this process; the caller may then retry case by case (:meth:`segment`).
    """

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine, self.name = engine, name

    def segment(self, image: np.ndarray, box: Box, *, seed: int = 0) -> np.ndarray:
        return self.segment_many([image], [box], seed=seed)[0]

    def segment_many(self, images: Sequence[np.ndarray], boxes: Sequence[Box], *,
                     seed: int = 0) -> list[np.ndarray]:
        pieces = spread(list(range(len(images))), self.engine.workers)
        chunks = [(self.name, [images[i] for i in p], [boxes[i] for i in p], seed) for p in pieces]
        out: list[np.ndarray] = []
        for res in self.engine.run(segment_work, chunks):
            if res.error is not None:
                raise res.error
            out += res.value
        return out

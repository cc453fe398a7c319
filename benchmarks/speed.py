"""Seconds per box of grabcut, flip and flip-vote on the same 64 BUS-BRA fold-5 boxes.

    python benchmarks/speed.py                       # this checkout
    PYTHONPATH=OLD/src python benchmarks/speed.py    # another checkout, to compare

Each method is warmed up on one box, then segments the 64 boxes in one call; the table
gives the amortised seconds per box and the Dice (to check the masks did not move).
Run it on a quiet machine.
"""

from __future__ import annotations

import time

import numpy as np

from flipseg.data import load_dataset
from flipseg.metrics import compute_dice

try:
    from flipseg.methods import get_segmenter
except ImportError:  # a checkout from before the method registry
    from flipseg.methods import register_all
    from flipseg.segmenters import get_segmenter

    register_all()


def main() -> None:
    cases = load_dataset("bus-bra", None, part="test", fold=5)[:64]
    ims, bxs = [c["image"] for c in cases], [c["box"] for c in cases]
    print("| method | s/box | Dice % |")
    print("|---|---|---|")
    for name in ("grabcut", "flip", "flip-vote"):
        seg = get_segmenter(name)
        seg.segment_many(ims[:1], bxs[:1])
        t0 = time.perf_counter()
        masks = seg.segment_many(ims, bxs)
        dt = (time.perf_counter() - t0) / len(cases)
        dice = 100 * np.mean([compute_dice(m, c["mask"]) for m, c in zip(masks, cases)])
        print(f"| {name} | {dt:.3f} | {dice:.2f} |", flush=True)


if __name__ == "__main__":
    main()

"""Do two versions of flipseg draw the same masks? (for refactors that must not change them)

    python benchmarks/same_masks.py --save before.npz              # with the old checkout
    python benchmarks/same_masks.py --save after.npz --compare before.npz

Segments BUS-BRA fold 5's test boxes (tight) with each method, prints its Dice and time,
saves the masks (bit-packed) and, with ``--compare``, counts the cases whose mask differs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from flipseg.data import load_dataset
from flipseg.methods import get_segmenter
from flipseg.metrics import compute_dice


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="boxinst,flip,flip-vote")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--save", required=True)
    ap.add_argument("--compare", default=None)
    a = ap.parse_args()
    cases = [c for c in load_dataset("bus-bra", None, part="test", fold=5) if c.get("box") is not None]
    cases = cases[: a.limit]
    saved: dict[str, np.ndarray] = {}
    print("| method | cases | Dice % | s | masks differing |")
    print("|---|---|---|---|---|")
    old = np.load(a.compare) if a.compare else None
    for name in a.methods.split(","):
        t0 = time.time()
        masks = get_segmenter(name).segment_many([c["image"] for c in cases], [c["box"] for c in cases])
        dice = np.mean([compute_dice(m, c["mask"]) for m, c in zip(masks, cases)])
        keys = [f"{name}/{c['case_id']}" for c in cases]
        for k, m in zip(keys, masks):
            saved[k] = np.packbits(np.asarray(m, bool))
        differ = "" if old is None else str(sum(k not in old or not np.array_equal(old[k], saved[k])
                                                for k in keys))
        print(f"| {name} | {len(cases)} | {100 * dice:.2f} | {time.time() - t0:.0f} | {differ} |")
    np.savez_compressed(a.save, **saved)


if __name__ == "__main__":
    main()

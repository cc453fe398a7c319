"""Seconds per box of grabcut, flip and flip-vote on the same 64 BUS-BRA fold-5 boxes.

    python benchmarks/speed.py                       # this checkout
    PYTHONPATH=OLD/src python benchmarks/speed.py    # another checkout, to compare
    python benchmarks/speed.py --workers 2           # also in 2 worker processes
    python benchmarks/speed.py --profile             # where flip-vote's time goes

Each method is warmed up on one box, then segments the 64 boxes in one call; the table
gives the amortised seconds per box and the Dice (to check the masks did not move). With
``--workers N`` each method is also run by an engine of N worker processes (each with
``cores // N`` torch threads, models loaded before the clock starts), as ``flipseg label
--workers N`` runs it; the masks must equal the single process's. Run it on a quiet
machine.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np

from flipseg.data import load_dataset
from flipseg.metrics import compute_dice

try:
    from flipseg.methods import get_segmenter
except ImportError:  # a checkout from before the method registry
    from flipseg.methods import register_all
    from flipseg.segmenters import get_segmenter

    register_all()


def _setup(name: str) -> dict:
    """A worker's state: the method's segmenter, built once."""
    return {name: get_segmenter(name)}


#: Parts of flip-vote's time: (label, file suffix, function names). The environment's
#: entries are the outermost ones (``observe`` holds the state channels).
PARTS = [
    ("Flip's networks (Q-network, classifier)", "flip/infer.py", ("scorer", "q_values")),
    ("Flip's networks (Q-network, classifier)", "flip/agent.py", ("q_values",)),
    ("Flip's environment: crops, states, classifier views", "flip/env.py",
     ("_crops", "_views", "observe")),
    ("GrabCut voter", "baselines/grabcut.py", ("grabcut",)),
    ("superpixels (SLIC)", "flipseg/superpixels.py", ("superpixels",)),
    ("mask post-processing", "flip/env.py", ("masks",)),
    ("BoxInst voter", "boxinst/model.py", ("predict_masks", "_predict", "segment_many")),
]


def profile(ims: list, bxs: list) -> None:
    """Cumulative seconds of flip-vote's parts under cProfile (shares; the profiler adds
    overhead)."""
    import cProfile
    import pstats

    seg = get_segmenter("flip-vote")
    seg.segment_many(ims[:1], bxs[:1])
    pr = cProfile.Profile()
    pr.enable()
    seg.segment_many(ims, bxs)
    pr.disable()
    stats = pstats.Stats(pr).stats  # type: ignore[attr-defined]
    total = max(v[3] for v in stats.values())
    seconds: dict[str, float] = {}
    for label, suffix, names in PARTS:
        found = [v for (f, _line, fn), v in stats.items() if f.endswith(suffix) and fn in names]
        if label.startswith("BoxInst"):  # the outermost call only (segment_many wraps itself)
            found = sorted(found, key=lambda v: -v[3])[:1]
        seconds[label] = seconds.get(label, 0.0) + sum(v[3] for v in found)
    seconds["the rest"] = total - sum(seconds.values())
    print("| part of flip-vote | s (cProfile) | share |")
    print("|---|---|---|")
    for label, sec in seconds.items():
        print(f"| {label} | {sec:.2f} | {100 * sec / total:.0f} % |")
    print(f"| total | {total:.2f} | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="grabcut,flip,flip-vote")
    ap.add_argument("--boxes", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1, help="also run in N worker processes")
    ap.add_argument("--profile", action="store_true", help="where flip-vote's time goes")
    a = ap.parse_args()
    cases = load_dataset("bus-bra", None, part="test", fold=5)[: a.boxes]
    ims, bxs = [c["image"] for c in cases], [c["box"] for c in cases]
    if a.profile:
        profile(ims, bxs)
        return
    print("| method | processes | s/box | Dice % | masks as 1 process |")
    print("|---|---|---|---|---|")
    for name in a.methods.split(","):
        seg = get_segmenter(name)
        seg.segment_many(ims[:1], bxs[:1])
        t0 = time.perf_counter()
        masks = seg.segment_many(ims, bxs)
        dt = (time.perf_counter() - t0) / len(cases)
        dice = 100 * np.mean([compute_dice(m, c["mask"]) for m, c in zip(masks, cases)])
        print(f"| {name} | 1 | {dt:.3f} | {dice:.2f} | |", flush=True)
        if a.workers > 1:
            from flipseg.engines import PoolEngine, RemoteSegmenter

            engine = PoolEngine(partial(_setup, name), a.workers)
            try:
                remote = RemoteSegmenter(engine, name)
                remote.segment_many(ims[: a.workers], bxs[: a.workers])  # start, load models
                t0 = time.perf_counter()
                pool_masks = remote.segment_many(ims, bxs)
                dt = (time.perf_counter() - t0) / len(cases)
            finally:
                engine.close()
            same = sum(np.array_equal(m, p) for m, p in zip(masks, pool_masks))
            dice = 100 * np.mean([compute_dice(m, c["mask"]) for m, c in zip(pool_masks, cases)])
            print(f"| {name} | {a.workers} ({engine.threads} thread each) | {dt:.3f} | {dice:.2f} "
                  f"| {same}/{len(cases)} |", flush=True)


if __name__ == "__main__":
    main()

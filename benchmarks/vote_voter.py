"""flip-vote with another BoxInst U-Net as its third voter, against the shipped one.

    python benchmarks/vote_voter.py --new runs/boxinst_bb5_backbone
    python benchmarks/vote_voter.py --new runs/boxinst_bb5_backbone --parts bb-test,busi

flip-vote is the pixel-wise majority of three voters: flip, flip-grabcut and a BoxInst
U-Net. Only the third changes here, so flip's and flip-grabcut's masks are drawn once per
part and cached (``benchmarks/malignant.py``'s cache, ``--cache``), and both BoxInst U-Nets
run on every box. Tight boxes; parts as in ``benchmarks/malignant.py`` (``bb-test``: BUS-BRA
fold 5, ``busi``: BUSI's lesions; ``bb-train``: the training folds).

Printed per part and label: Dice % of the inscribed ellipse, of each U-Net alone and of
flip-vote with each, and paired t-tests over boxes (new against old, new against the
ellipse). For 0-10 px shifted boxes run ``flipseg evaluate --method flip-vote --vote-model
RUN --box-shift 0-10`` (the whole flip-vote) and compare with ``benchmarks/backbone.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))

from malignant import load_part, voter_masks  # noqa: E402

from flipseg.baselines.shapes import inscribed_ellipse  # noqa: E402
from flipseg.methods import get_segmenter  # noqa: E402
from flipseg.methods.vote.segmenter import majority_vote  # noqa: E402
from flipseg.metrics import compute_dice  # noqa: E402


def _p(a: np.ndarray, b: np.ndarray) -> str:
    return f"{stats.ttest_rel(a, b).pvalue:.1g}" if len(a) > 1 else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new", required=True, help="the other BoxInst run folder or model file")
    ap.add_argument("--old", default=None, help="the BoxInst voter to compare with (default: shipped)")
    ap.add_argument("--cache", default="runs/malignant", help="folder of the cached flip voters")
    ap.add_argument("--parts", default="bb-test,busi")
    ap.add_argument("--limit", type=int, default=None, help="first N cases of each part")
    a = ap.parse_args(argv)
    old = get_segmenter("boxinst", model=a.old)
    new = get_segmenter("boxinst", model=a.new)
    for part in a.parts.split(","):
        cases = load_part(part)[: a.limit]
        voters = voter_masks(part, cases, Path(a.cache), a.limit)
        images, boxes = [c["image"] for c in cases], [c["box"] for c in cases]
        t0 = time.time()
        u_old = old.segment_many(images, boxes)
        u_new = new.segment_many(images, boxes)
        print(f"\n### {part}: {len(cases)} boxes (both U-Nets: {time.time() - t0:.0f} s)\n")
        masks = {
            "ellipse": [inscribed_ellipse(im, b) for im, b in zip(images, boxes)],
            "boxinst old": u_old,
            "boxinst new": u_new,
            "flip-vote old": majority_vote(voters["flip"], voters["flip-grabcut"], u_old),
            "flip-vote new": majority_vote(voters["flip"], voters["flip-grabcut"], u_new),
        }
        dice = {k: np.array([compute_dice(m, c["mask"]) for m, c in zip(v, cases)])
                for k, v in masks.items()}
        labels = np.array([c["label"] for c in cases])
        print("| label | n | ellipse | boxinst old | boxinst new | p new-old | flip-vote old | "
              "flip-vote new | p new-old | p new-ellipse |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label in ("benign", "malignant", "all"):
            sel = np.ones(len(cases), bool) if label == "all" else labels == label
            d = {k: v[sel] for k, v in dice.items()}
            print(f"| {label} | {int(sel.sum())} | {100 * d['ellipse'].mean():.2f} | "
                  f"{100 * d['boxinst old'].mean():.2f} | {100 * d['boxinst new'].mean():.2f} | "
                  f"{_p(d['boxinst new'], d['boxinst old'])} | {100 * d['flip-vote old'].mean():.2f} | "
                  f"{100 * d['flip-vote new'].mean():.2f} | {_p(d['flip-vote new'], d['flip-vote old'])} | "
                  f"{_p(d['flip-vote new'], d['ellipse'])} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

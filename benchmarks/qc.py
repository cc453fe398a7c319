"""The per-mask quality score: does it find the masks a person should review?

    python benchmarks/qc.py --fit          # fit on BUS-BRA folds 1-4, write models/qc.json
    python benchmarks/qc.py                # the table with the shipped model

flip-vote's voters are read from the cache of ``benchmarks/malignant.py`` (``--cache``,
drawn there when missing). For BUS-BRA fold 5 and BUSI's lesions: the Spearman
correlation of the score with the true Dice, and the share of the bad masks (Dice < 0.80)
found by reviewing the 10 % and 20 % lowest-scored masks (random review finds 10 % and 20 %).
The score is fitted on BUS-BRA's training folds only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from malignant import VOTERS, load_part, vote, voter_masks  # noqa: E402

from flipseg.io_utils import atomic_write_text  # noqa: E402
from flipseg.metrics import compute_dice  # noqa: E402
from flipseg.qc import fit_quality_model, load_quality_model, quality_features, quality_score  # noqa: E402

MODEL = Path(__file__).resolve().parents[1] / "src" / "flipseg" / "models" / "qc.json"


def features_and_dice(part: str, cache: Path, limit: int | None):
    cases = load_part(part)[:limit]
    voters = voter_masks(part, cases, cache, limit)
    rows, dice = [], []
    for i, c in enumerate(cases):
        vs = [voters[k][i] for k in VOTERS]
        m = vote(vs, 2)
        rows.append(quality_features(c["image"], c["box"], m, vs))
        dice.append(compute_dice(m, c["mask"]))
    return rows, np.array(dice)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="runs/malignant")
    ap.add_argument("--fit", action="store_true", help="fit on bb-train and write models/qc.json")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--bad", type=float, default=0.80, help="a mask below this Dice is bad")
    a = ap.parse_args()
    cache = Path(a.cache)
    if a.fit:
        rows, dice = features_and_dice("bb-train", cache, a.limit)
        model = fit_quality_model(rows, dice)
        model["fitted_on"] = f"BUS-BRA folds 1-4 ({len(rows)} flip-vote masks)"
        atomic_write_text(MODEL, json.dumps(model, indent=2))
        print(f"fitted on {len(rows)} masks -> {MODEL}")
    model = load_quality_model(MODEL)
    print("| part | masks | bad (Dice < %.2f) | Spearman | bad found in lowest 10 %% | lowest 20 %% |"
          % a.bad)
    print("|---|---|---|---|---|---|")
    for part in ("bb-train", "bb-test", "busi"):
        rows, dice = features_and_dice(part, cache, a.limit)
        score = quality_score(rows, model)
        rho = stats.spearmanr(score, dice).statistic
        bad = dice < a.bad
        order = np.argsort(score)
        found = []
        for share in (0.1, 0.2):
            low = order[: int(round(share * len(order)))]
            found.append(bad[low].sum() / max(1, bad.sum()))
        tag = " (fitted here)" if part == "bb-train" else ""
        print(f"| {part}{tag} | {len(dice)} | {bad.sum()} | {rho:.2f} | {100 * found[0]:.0f} % | "
              f"{100 * found[1]:.0f} % |")


if __name__ == "__main__":
    main()

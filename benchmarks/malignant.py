"""Why flip-vote's masks of malignant lesions are too small, and what a fix buys.

    python benchmarks/malignant.py --cache runs/malignant            # every table
    python benchmarks/malignant.py --cache runs/malignant --parts bb-test

flip-vote's three voters (flip, flip-grabcut, boxinst) are drawn once per part and cached
in ``--cache`` (``<part>.npz``); everything below reads the cache, so re-runs are quick.

Parts: ``bb-train`` (BUS-BRA folds 1-4's boxes: where post-processing variants are chosen),
``bb-test`` (BUS-BRA fold 5) and ``busi`` (BUSI's 665 lesions, never used to choose).

Tables printed (markdown), per part and per label (benign / malignant):
1. Dice, recall, precision, median predicted/true area, share of masks smaller than the truth,
   against the inscribed ellipse (paired t-test on Dice).
2. Where the missed pixels lie: in the truth's outer rim (the band within 15 % of the
   lesion's equivalent radius of its outline) or deeper; below the mask (posterior, the shadow
   side), above it, or to its sides; outside the mask's convex hull (extensions) or inside it
   (concavities); and how bright they are against the mask's inside and the box's outside.
3. Class-independent variants of the vote (``--variants``): the share of votes needed, the
   inscribed ellipse as a fourth voter, and a dilation of the vote; Dice by label.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, stats

from flipseg.baselines.shapes import inscribed_ellipse
from flipseg.data import load_dataset
from flipseg.metrics import compute_dice

VOTERS = ("flip", "flip-grabcut", "boxinst")


def load_part(part: str) -> list[dict[str, Any]]:
    if part == "bb-train":
        cases = load_dataset("bus-bra", None, part="train", fold=5)
    elif part == "bb-test":
        cases = load_dataset("bus-bra", None, part="test", fold=5)
    elif part == "busi":
        cases = load_dataset("busi", None, per_lesion=True)
    else:
        raise SystemExit(f"unknown part {part!r}")
    return [c for c in cases if c.get("box") is not None and c.get("mask") is not None
            and c.get("label") in ("benign", "malignant")]


def voter_masks(part: str, cases: list[dict[str, Any]], cache: Path,
                limit: int | None = None) -> dict[str, list[np.ndarray]]:
    """flip-vote's voters for every case (drawn once, then read from ``cache/<part>.npz``, or
    ``<part>-first<N>.npz`` for the first N cases)."""
    from flipseg.methods import get_segmenter

    path = cache / (f"{part}.npz" if limit is None else f"{part}-first{limit}.npz")
    if not path.exists():
        seg = get_segmenter("flip-vote")
        saved: dict[str, np.ndarray] = {}
        t0 = time.time()
        for s in range(0, len(cases), 64):
            chunk = cases[s:s + 64]
            parts = seg.vote_parts([c["image"] for c in chunk], [c["box"] for c in chunk])
            for i, c in enumerate(chunk):
                for k in VOTERS:
                    saved[f"{c['case_id']}|{k}"] = np.packbits(np.asarray(parts[k][i], bool))
            print(f"{part}: {s + len(chunk)}/{len(cases)} boxes, {time.time() - t0:.0f} s", flush=True)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **saved)
    data = np.load(path)
    out: dict[str, list[np.ndarray]] = {k: [] for k in VOTERS}
    for c in cases:
        n = int(np.prod(c["image"].shape))
        for k in VOTERS:
            out[k].append(np.unpackbits(data[f"{c['case_id']}|{k}"])[:n].reshape(c["image"].shape).astype(bool))
    return out


def vote(masks: list[np.ndarray], need: int) -> np.ndarray:
    return np.sum(masks, axis=0) >= need


# ------------------------------------------------------------------ tables
def quality_rows(cases, preds, ells) -> list[dict[str, float]]:
    rows = []
    for c, p, e in zip(cases, preds, ells):
        g = c["mask"]
        tp = float((p & g).sum())
        rows.append({"label": c["label"], "dice": compute_dice(p, g), "ell": compute_dice(e, g),
                     "recall": tp / max(1, g.sum()), "precision": tp / max(1, p.sum()),
                     "ratio": p.sum() / max(1, g.sum())})
    return rows


def print_quality(part: str, rows: list[dict[str, float]]) -> None:
    print(f"\n### {part}: flip-vote against the truth and the ellipse\n")
    print("| label | n | Dice % | ellipse % | p (t-test) | recall % | precision % | "
          "median area ratio | smaller than truth % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label in ("benign", "malignant"):
        r = [x for x in rows if x["label"] == label]
        d = np.array([x["dice"] for x in r])
        e = np.array([x["ell"] for x in r])
        ratio = np.array([x["ratio"] for x in r])
        p = stats.ttest_rel(d, e).pvalue
        print(f"| {label} | {len(r)} | {100 * d.mean():.2f} | {100 * e.mean():.2f} | {p:.1g} | "
              f"{100 * np.mean([x['recall'] for x in r]):.1f} | "
              f"{100 * np.mean([x['precision'] for x in r]):.1f} | {np.median(ratio):.3f} | "
              f"{100 * np.mean(ratio < 1):.0f} |")


def missed_rows(cases, preds) -> list[dict[str, float]]:
    """Where each case's missed pixels (truth, not mask) lie, as shares of them."""
    rows = []
    for c, p in zip(cases, preds):
        g, im = c["mask"], np.asarray(c["image"], np.float32)
        miss = g & ~p
        n = miss.sum()
        if n == 0 or not p.any():
            continue
        radius = np.sqrt(g.sum() / np.pi)
        depth = ndimage.distance_transform_edt(g)  # distance to the truth's outline, inside it
        rim = miss & (depth <= 0.15 * radius)
        ys, xs = np.nonzero(p)
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        my, mx = np.nonzero(miss)
        below = (my > y1).sum()
        above = (my < y0).sum()
        sides = ((mx < x0) | (mx > x1)).sum()
        hull = _convex_hull(p)
        outside_hull = (miss & ~hull).sum()
        box_out = ~c["box"].to_mask(im.shape)
        ring = ndimage.binary_dilation(box_out, iterations=3) & ~box_out  # just outside the box
        rows.append({"label": c["label"], "rim": rim.sum() / n, "below": below / n,
                     "above": above / n, "sides": sides / n, "ext": outside_hull / n,
                     "miss_int": float(im[miss].mean()), "in_int": float(im[p].mean()),
                     "out_int": float(im[ring].mean()) if ring.any() else np.nan,
                     "miss_share": n / g.sum()})
    return rows


def _convex_hull(mask: np.ndarray) -> np.ndarray:
    from skimage.morphology import convex_hull_image

    return convex_hull_image(mask)


def print_missed(part: str, rows: list[dict[str, float]]) -> None:
    print(f"\n### {part}: where the missed pixels lie (mean share of each case's missed pixels)\n")
    print("| label | n | missed / truth % | in the outer rim % | below the mask % | above % | "
          "beside % | outside the mask's hull % | grey: missed / mask inside / outside box |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label in ("benign", "malignant"):
        r = [x for x in rows if x["label"] == label]
        m = {k: np.nanmean([x[k] for x in r]) for k in r[0] if k != "label"}
        print(f"| {label} | {len(r)} | {100 * m['miss_share']:.1f} | {100 * m['rim']:.0f} | "
              f"{100 * m['below']:.0f} | {100 * m['above']:.0f} | {100 * m['sides']:.0f} | "
              f"{100 * m['ext']:.0f} | {m['miss_int']:.0f} / {m['in_int']:.0f} / {m['out_int']:.0f} |")


# ------------------------------------------------------------- classifier
def classifier_rows(cases, preds) -> list[dict[str, float]]:
    """The shipped Flip classifier's normal score of each box with a region erased (filled
    from the box's chosen eraser source, as the agents erase): nothing, flip-vote's mask, the
    mask grown by its missed rim (mask | truth), the truth, the whole box."""
    from flipseg.methods.flip.eraser import choose_eraser_sources, paste_views
    from flipseg.methods.flip.infer import FlipModel, default_model_path
    from flipseg.methods.flip.views import to_input

    model = FlipModel.load(default_model_path(2))
    cfg = model.cfg
    rows = []
    for s in range(0, len(cases), 64):
        chunk, pchunk = cases[s:s + 64], preds[s:s + 64]
        sources = choose_eraser_sources([c["image"] for c in chunk], [c["box"] for c in chunk],
                                        model.scorer, mode=cfg.eraser, margin=cfg.margin,
                                        size=cfg.classifier_size)
        crops, labels = [], []
        for c, p, src in zip(chunk, pchunk, sources):
            im = np.asarray(c["image"], np.float32)
            box = c["box"].validate(im.shape)
            inner = im[box.slices()]
            patch = src[0]
            regions = {"none": np.zeros(box.shape, bool), "mask": p[box.slices()],
                       "mask+missed": (p | c["mask"])[box.slices()], "truth": c["mask"][box.slices()],
                       "box": np.ones(box.shape, bool)}
            filled = [np.where(r, patch, inner) for r in regions.values()]
            crops += paste_views(im, box, filled, margin=cfg.margin)
            labels.append((c["label"], list(regions)))
        with torch_no_grad():
            scores = model.scorer(to_input(crops, cfg.classifier_size)).numpy()
        k = 0
        for label, names in labels:
            rows.append({"label": label, **{n: float(scores[k + i]) for i, n in enumerate(names)}})
            k += len(names)
    return rows


def torch_no_grad():
    import torch

    return torch.no_grad()


def print_classifier(part: str, rows: list[dict[str, float]]) -> None:
    print(f"\n### {part}: the Flip classifier's normal score after erasing (median, and share "
          "of boxes above the agents' stop threshold 0.99)\n")
    names = [k for k in rows[0] if k != "label"]
    print("| label | n | " + " | ".join(f"erased: {n}" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for label in ("benign", "malignant"):
        r = [x for x in rows if x["label"] == label]
        cells = [f"{np.median([x[n] for x in r]):.3f} ({100 * np.mean([x[n] > 0.99 for x in r]):.0f} %)"
                 for n in names]
        print(f"| {label} | {len(r)} | " + " | ".join(cells) + " |")


# ---------------------------------------------------------------- variants
def variants(cases, voters, ells) -> dict[str, list[np.ndarray]]:
    """Class-independent ways of combining the voters (and the ellipse) into one mask."""
    base = [vote([voters[k][i] for k in VOTERS], 2) for i in range(len(cases))]
    out = {"vote 2 of 3 (shipped)": base,
           "vote 1 of 3 (union)": [vote([voters[k][i] for k in VOTERS], 1) for i in range(len(cases))],
           "vote 2 of 4 (+ellipse)": [vote([*(voters[k][i] for k in VOTERS), ells[i]], 2)
                                      for i in range(len(cases))]}
    for frac in (0.02, 0.04):
        grown = []
        for c, m in zip(cases, base):
            r = max(1, int(round(frac * np.sqrt(c["box"].size))))
            grown.append(ndimage.binary_dilation(m, iterations=r) & c["box"].to_mask(m.shape))
        out[f"vote 2 of 3, dilated {frac:.0%} of the box's side"] = grown
    return out


def print_variants(part: str, cases, table: dict[str, list[np.ndarray]]) -> None:
    print(f"\n### {part}: class-independent variants (Dice %, median area ratio)\n")
    print("| variant | benign | malignant | all | malignant area ratio | p vs shipped (malignant) "
          "| p vs shipped (benign) |")
    print("|---|---|---|---|---|---|---|")
    labels = np.array([c["label"] for c in cases])
    shipped = np.array([compute_dice(m, c["mask"]) for m, c in zip(next(iter(table.values())), cases)])
    for name, masks in table.items():
        d = np.array([compute_dice(m, c["mask"]) for m, c in zip(masks, cases)])
        ratio = np.array([m.sum() / max(1, c["mask"].sum()) for m, c in zip(masks, cases)])
        mal, ben = labels == "malignant", labels == "benign"
        pm = stats.ttest_rel(d[mal], shipped[mal]).pvalue if name != next(iter(table)) else np.nan
        pb = stats.ttest_rel(d[ben], shipped[ben]).pvalue if name != next(iter(table)) else np.nan
        print(f"| {name} | {100 * d[ben].mean():.2f} | {100 * d[mal].mean():.2f} | "
              f"{100 * d.mean():.2f} | {np.median(ratio[mal]):.3f} | {pm:.2g} | {pb:.2g} |")


def print_shifted(part: str, run: Path) -> None:
    """By label, from a ``flipseg evaluate --box-shift 0-10`` run of flip-vote and the ellipse
    (``cases.csv`` per method): Dice and HD over the shifted copies, paired t-tests per label."""
    import csv

    labels = {c["case_id"]: c["label"] for c in load_part(part)}
    per: dict[str, dict[str, dict[str, list[float]]]] = {}
    for method_dir in sorted(p for p in run.iterdir() if (p / "cases.csv").exists()):
        for r in csv.DictReader(open(method_dir / "cases.csv")):
            d = per.setdefault(method_dir.name, {}).setdefault(r["case_id"], {"dice": [], "hd": []})
            d["dice"].append(float(r["dice"]))
            d["hd"].append(float(r["hd"]))
    if "flip-vote" not in per or "ellipse" not in per:
        print(f"\n({run}: no flip-vote and ellipse results)")
        return
    print(f"\n### {part}: 0-10 px shifted boxes (mean over the shifted copies of each box)\n")
    print("| label | n | flip-vote Dice % | ellipse Dice % | p | flip-vote HD px | ellipse HD px | p |")
    print("|---|---|---|---|---|---|---|---|")
    for label in ("benign", "malignant"):
        ids = [i for i in per["flip-vote"] if labels.get(i) == label and i in per["ellipse"]]
        fv = {k: np.array([np.mean(per["flip-vote"][i][k]) for i in ids]) for k in ("dice", "hd")}
        el = {k: np.array([np.mean(per["ellipse"][i][k]) for i in ids]) for k in ("dice", "hd")}
        print(f"| {label} | {len(ids)} | {100 * fv['dice'].mean():.2f} | {100 * el['dice'].mean():.2f} | "
              f"{stats.ttest_rel(fv['dice'], el['dice']).pvalue:.1g} | {fv['hd'].mean():.1f} | "
              f"{el['hd'].mean():.1f} | {stats.ttest_rel(fv['hd'], el['hd']).pvalue:.1g} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="runs/malignant", help="folder of the cached voters")
    ap.add_argument("--parts", default="bb-train,bb-test,busi")
    ap.add_argument("--limit", type=int, default=None, help="first N cases of each part")
    ap.add_argument("--no-variants", dest="variants", action="store_false")
    ap.add_argument("--shifted", action="append", default=[], metavar="PART=RUN",
                    help="by-label tables of a `flipseg evaluate --box-shift 0-10 --method flip-vote "
                         "--method ellipse` run, e.g. busi=runs/mal/busi_shift")
    a = ap.parse_args()
    if a.shifted:
        for item in a.shifted:
            part, run = item.split("=", 1)
            print_shifted(part, Path(run))
        return
    for part in a.parts.split(","):
        cases = load_part(part)[: a.limit]
        voters = voter_masks(part, cases, Path(a.cache), a.limit)
        preds = [vote([voters[k][i] for k in VOTERS], 2) for i in range(len(cases))]
        ells = [inscribed_ellipse(c["image"], c["box"]) for c in cases]
        print_quality(part, quality_rows(cases, preds, ells))
        print_missed(part, missed_rows(cases, preds))
        print_classifier(part, classifier_rows(cases, preds))
        if a.variants:
            print_variants(part, cases, variants(cases, voters, ells))


if __name__ == "__main__":
    main()

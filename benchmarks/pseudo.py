"""Pseudo masks from boxes feeding a U-Net (paper 000, section 4.4, Table 4), BUS-BRA and BUSI.

    python benchmarks/pseudo.py --out runs/bench_pseudo                         # full tables
    python benchmarks/pseudo.py --limit 20 --epochs 1 --out /tmp/pseudo_smoke   # quick look

Every U-Net trains on BUS-BRA folds 1-4 (official split, fold 5 held out) with the
`flipseg train pseudo` recipe (:mod:`flipseg.methods.pseudo`): a budget of real
masks (1% and 5% of the training images, chosen by patient, and all of them), and
for every other training image either nothing (U-Net alone on the real masks), a
Flip pseudo mask from its box (the shipped Flip model unless ``--flip-model``) or
an ellipse pseudo mask, refreshed from the model every ``refresh_every`` epochs.
With all masks there is nothing left to pseudo-label, so the three variants are
one model (the fully supervised upper bound), trained and shown once.

The U-Nets segment whole test images without a box. Printed and saved under
``--out`` (``report.md``): per test set (BUS-BRA fold 5; BUSI benign + malignant
lesions, external) Dice, JAC, HD and ASD (mean±std, ``flipseg.evaluation``), paired
t-tests of U-Net + Flip against U-Net alone and against U-Net + ellipse at each
budget, and the Dice of the pseudo labels against the true training masks
(before training and after the last refresh). Finished runs (checkpoints),
pseudo masks (``pseudo_cache/``) and evaluations are kept: re-running resumes.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from flipseg.data import load_dataset
from flipseg.evaluation import evaluate_methods, format_table
from flipseg.io_utils import atomic_write_text
from flipseg.methods.flip.infer import default_model_path
from flipseg.methods.pseudo.config import PseudoConfig, budget_count
from flipseg.methods.pseudo.model import PseudoUNetModel, PseudoUNetSegmenter
from flipseg.methods.pseudo.train import CHECKPOINT, lesion_samples, train_pseudo
from flipseg.metrics import paired_ttest
from flipseg.runs import parse_overrides

METRICS = ("dice", "jaccard", "hd", "asd")
VARIANT_NAMES = {"none": "U-Net", "flip": "U-Net + Flip", "ellipse": "U-Net + ellipse"}


# ------------------------------------------------------------------------ data
def load_train(args: argparse.Namespace) -> list[dict]:
    train = lesion_samples(load_dataset("bus-bra", args.busbra_root, fold=args.fold, part="train"))
    return train[: args.limit] if args.limit else train


def load_tests(args: argparse.Namespace) -> dict[str, list[dict]]:
    tests = {}
    for ds in args.datasets.split(","):
        if ds == "bus-bra":
            s = load_dataset("bus-bra", args.busbra_root, fold=args.fold, part="test")
        elif ds == "busi":
            s = [x for x in load_dataset("busi", args.busi_root) if x.get("label") in ("benign", "malignant")]
        else:
            raise SystemExit(f"unknown test set {ds!r}: use bus-bra and/or busi")
        s = [x for x in s if x.get("mask") is not None and x.get("box") is not None]
        tests[ds] = s[: args.limit] if args.limit else s
    return tests


# ---------------------------------------------------------------------- runs
def plan(budgets: list[str], variants: list[str]) -> list[tuple[str, str]]:
    """(budget, variant) pairs to train; ``all`` once, without pseudo masks."""
    out = []
    for b in budgets:
        for v in (["none"] if b == "all" else variants):
            out.append((b, v))
    return out


def slug(budget: str, variant: str) -> str:
    return f"{variant}_{budget.replace('%', 'pct')}"


def label(budget: str, variant: str, n_real: int, n_pseudo: int) -> str:
    if budget == "all":
        return f"U-Net all ({n_real})"
    extra = f"+{n_pseudo}" if variant != "none" else ""
    return f"{VARIANT_NAMES[variant]} {budget} ({n_real}{extra})"


def train_one(train: list[dict], base: dict[str, Any], budget: str, variant: str, args: argparse.Namespace,
              out: Path) -> tuple[Path, dict[str, Any]]:
    model = (args.flip_model or "") if variant == "flip" else ""
    cfg = PseudoConfig(**{**base, "masks_budget": budget, "pseudo": variant, "pseudo_model": model})
    run = out / "runs" / slug(budget, variant)
    cache = out / "pseudo_cache" / f"{variant}_seed{cfg.seed}.npz" if variant != "none" else None
    print(f"== {slug(budget, variant)}: {budget_count(budget, len(train))} real masks, pseudo={variant} "
          f"-> {run}", flush=True)
    train_pseudo(train, cfg, run, pseudo_cache=cache, progress=not args.no_progress)
    labels = json.loads((run / "labels.json").read_text())
    return run, labels


def evaluate_one(run: Path, name: str, ds: str, cases: list[dict], out: Path) -> tuple[dict, dict]:
    """(summary, case id -> metric means), reused when this model epoch was already scored."""
    d = out / "eval" / ds / run.name
    stamp = {"epoch": PseudoUNetModel.load(run).meta.get("epoch"), "n": len(cases)}
    done = d / "done.json"
    if not (done.exists() and json.loads(done.read_text()) == stamp):
        res = evaluate_methods(cases, {name: PseudoUNetSegmenter(run)}, dataset=ds, out_dir=d,
                               progress=True, batch_size=32)
        atomic_write_text(done, json.dumps(stamp))
        summary = res["methods"][name]
    else:
        summary = json.loads((d / "summary.json").read_text())
    summary["method"] = name
    return summary, per_case(d / "cases.csv")


def per_case(path: Path) -> dict[str, dict[str, float]]:
    with open(path) as f:
        return {r["case_id"]: {m: float(r[m]) for m in METRICS} for r in csv.DictReader(f)}


def last_pseudo_dice(run: Path) -> float:
    from flipseg.methods.training import load_torch_checkpoint

    log = load_torch_checkpoint(run / CHECKPOINT)["log"]
    return float(log[-1].get("pseudo_dice", float("nan"))) if log else float("nan")


# -------------------------------------------------------------------- report
def ttests(lines: list[str], pc: dict[str, dict], a: str, b: str) -> None:
    common = sorted(set(pc[a]) & set(pc[b]))
    lines.append(f"| {a} vs {b} | mean diff | t | p |\n|---|---|---|---|")
    for m in METRICS:
        t = paired_ttest([pc[a][c][m] for c in common], [pc[b][c][m] for c in common])
        f = 100.0 if m in ("dice", "jaccard") else 1.0
        lines.append(f"| {m} | {t['mean_diff'] * f:+.2f} | {t['t']:.2f} | {t['p']:.2g} |")
    lines.append("")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_pseudo")
    ap.add_argument("--budgets", default="1%,5%,all")
    ap.add_argument("--variants", default="none,flip,ellipse",
                    help="pseudo-mask methods beside the real masks (none = U-Net alone)")
    ap.add_argument("--datasets", default="bus-bra,busi", help="test sets")
    ap.add_argument("--fold", type=int, default=5, help="BUS-BRA fold held out as test")
    ap.add_argument("--flip-model", default=None,
                    help=f"Flip model for the pseudo masks (default: shipped, {default_model_path(2)})")
    ap.add_argument("--epochs", type=int, default=None, help="override PseudoConfig.epochs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one PseudoConfig field for every run")
    ap.add_argument("--limit", type=int, default=None,
                    help="use only the first N training images and N images per test set")
    ap.add_argument("--busbra-root", default=None)
    ap.add_argument("--busi-root", default=None)
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    out = Path(a.out)
    base = parse_overrides(a.set, PseudoConfig, "pseudo")
    if a.epochs is not None:
        base["epochs"] = a.epochs
    train = load_train(a)
    tests = load_tests(a)
    print(f"training images: {len(train)}; test images: "
          + ", ".join(f"{ds} {len(c)}" for ds, c in tests.items()), flush=True)

    runs = []
    for budget, variant in plan(a.budgets.split(","), a.variants.split(",")):
        run, labels = train_one(train, base, budget, variant, a, out)
        name = label(budget, variant, labels["n_real"], labels["n_pseudo"])
        runs.append((budget, variant, run, labels, name))

    lines = [f"## Pseudo masks -> U-Net (train: BUS-BRA folds != {a.fold}, {len(train)} images)", ""]
    lines += ["### pseudo labels vs true training masks (Dice %)",
              "| run | pseudo images | before training | after last refresh |", "|---|---|---|---|"]
    for _, _, run, labels, name in runs:
        if labels["n_pseudo"]:
            lines.append(f"| {name} | {labels['n_pseudo']} | {100 * labels['initial_pseudo_dice']:.2f} | "
                         f"{100 * last_pseudo_dice(run):.2f} |")
    lines.append("")
    for ds, cases in tests.items():
        summaries, pc = [], {}
        for budget, variant, run, _, name in runs:
            s, c = evaluate_one(run, name, ds, cases, out)
            summaries.append(s)
            pc[(budget, variant)] = c
        title = "BUS-BRA fold %d (test)" % a.fold if ds == "bus-bra" else "BUSI benign + malignant (external)"
        lines += [f"### {title}", format_table(summaries, METRICS)]
        by_name = {(b, v): n for b, v, _, _, n in runs}
        named = {by_name[k]: v for k, v in pc.items()}
        for budget in a.budgets.split(","):
            if (budget, "flip") not in pc:
                continue
            for ref in ("none", "ellipse"):
                if (budget, ref) in pc:
                    ttests(lines, named, by_name[(budget, "flip")], by_name[(budget, ref)])
    report = "\n".join(lines) + "\n"
    print(report)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", report)
    atomic_write_text(out / "results.json", json.dumps(
        {"n_train": len(train), "n_test": {ds: len(c) for ds, c in tests.items()},
         "runs": [{"budget": b, "variant": v, "run": str(r), "n_real": lab["n_real"],
                   "n_pseudo": lab["n_pseudo"], "initial_pseudo_dice": lab["initial_pseudo_dice"]}
                  for b, v, r, lab, _ in runs]}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

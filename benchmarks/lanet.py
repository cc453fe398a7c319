"""LA-Net (paper 003) against a plain ResNet classifier and a U-Net, over location-label fractions.

    python benchmarks/lanet.py --out runs/bench_lanet                              # full run
    python benchmarks/lanet.py --datasets busi --limit-train 40 --limit-test 20 \\
        --stage1-epochs 1 --stage2-epochs 1 --fractions 0.5,1.0 --out /tmp/lanet_smoke   # smoke

Per dataset (BUSI: a seeded 80/20 patient-level train/test split of the benign and
malignant images; BUS-BRA: official 5-fold split, fold 5 as test), all trained
from scratch on the same training images (15% of them, by patient, held out for
model selection):

* LA-Net, once per location-label fraction (the two-stage semi-supervised recipe);
* a plain ResNet classifier: the same feature extractor with average pooling and
  a linear layer, trained with cross-entropy on every training image. It is the
  LA-Net recipe with every attention module off, ``lam=1`` (no localization loss,
  so the unused localization head gets no gradient) and no stage 1;
* a U-Net (MONAI, BCE + Dice), trained on exactly the images LA-Net keeps the
  location labels of at that fraction.

Printed and saved under ``--out`` (``report.md``, ``results.json``, per-dataset
``curve.png`` and ``gradcam.png``): benign-vs-malignant accuracy, precision, recall,
F1 and AUC (malignant = positive) with a Grad-CAM pointing score (the Grad-CAM
peak falls inside the lesion), localization IoU and Dice (mean ± sd over test
images, at the image's own resolution), and the curve over fractions. Finished
parts are kept (``*/metrics.json``, LA-Net checkpoints): re-running resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from flipseg.boxes import Box
from flipseg.data import load_dataset
from flipseg.data.splits import split_by_patient
from flipseg.io_utils import atomic_save, atomic_write_text
from flipseg.methods.lanet import LANetConfig, LANetModel, split_train_val, train_lanet
from flipseg.methods.lanet.predict import to_input
from flipseg.methods.lanet.train import augment_batch, class_samples, location_label, prepare_data
from flipseg.metrics import compute_classification_metrics, compute_dice, compute_iou, summarize
from flipseg.networks.unet import build_unet
from flipseg.resize import resize
from flipseg.runs import parse_overrides

CLS_METRICS = ("accuracy", "precision", "recall", "f1", "auc", "cam_pointing")
LOC_METRICS = ("iou", "dice")


# ------------------------------------------------------------------------ data
def load_split(dataset: str, args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """(train, test) benign/malignant samples, each optionally limited to a seeded random subset."""
    if dataset == "busi":
        samples = class_samples(load_dataset("busi", args.busi_root))
        train, test = split_by_patient(samples, (1 - args.test_fraction, args.test_fraction), seed=args.seed)
    elif dataset == "bus-bra":
        train = class_samples(load_dataset("bus-bra", args.busbra_root, fold=args.fold, part="train"))
        test = class_samples(load_dataset("bus-bra", args.busbra_root, fold=args.fold, part="test"))
    else:
        raise SystemExit(f"unknown dataset {dataset!r}: use busi and/or bus-bra")

    def limit(samples: list[dict], n: int | None, salt: int) -> list[dict]:
        if not n or n >= len(samples):
            return samples
        keep = np.sort(np.random.default_rng([args.seed, salt]).permutation(len(samples))[:n])
        return [samples[i] for i in keep]

    return limit(train, args.limit_train, 1), limit(test, args.limit_test, 2)


def loc_scores(pred: np.ndarray, sample: dict[str, Any], kind: str) -> dict[str, float]:
    """IoU and Dice of a predicted mask against the sample's location label; with
    box labels both are turned into boxes first (as the paper does for box data)."""
    gt = location_label(sample, kind)
    if kind == "box":
        pred = Box.from_mask(pred).to_mask(pred.shape) if pred.any() else pred
    return {"iou": compute_iou(pred, gt), "dice": compute_dice(pred, gt)}


def summary(rows: Sequence[dict[str, float]], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    return {k: summarize([r[k] for r in rows]) for k in keys if rows and k in rows[0]}


# ---------------------------------------------------------------- evaluation
def cam_pointing(cam: np.ndarray, sample: dict[str, Any]) -> float:
    """1.0 when the Grad-CAM maximum lies inside the lesion mask (or box), else 0.0."""
    gt = location_label(sample, "mask")
    if gt is None:
        return float("nan")
    return float(gt.flat[int(np.argmax(cam))])


def evaluate_lanet(model: LANetModel, test: list[dict], *, localization: bool) -> dict[str, Any]:
    """Classification metrics, Grad-CAM pointing and (optionally) localization on ``test``."""
    images = [s["image"] for s in test]
    preds = model.predict(images)
    y = np.array([s["label"] == "malignant" for s in test], int)
    score = np.array([p.malignant_probability for p in preds])
    cls = compute_classification_metrics(y, score)
    cams = model.gradcam(images)
    cls["cam_pointing"] = float(np.nanmean([cam_pointing(c, s) for c, s in zip(cams, test)]))
    out: dict[str, Any] = {"classification": cls, "n_test": len(test)}
    if localization:
        rows = [loc_scores(p.mask, s, model.cfg.location_label) for p, s in zip(preds, test)
                if location_label(s, model.cfg.location_label) is not None]
        out["localization"] = summary(rows, LOC_METRICS)
    return out


# ---------------------------------------------------------------------- U-Net
def _dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    return (1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)).mean()


@torch.no_grad()
def unet_masks(net: torch.nn.Module, images: Sequence[np.ndarray], size: int, threshold: float) -> list:
    net.eval()
    out = []
    for start in range(0, len(images), 32):
        chunk = images[start : start + 32]
        x = torch.from_numpy(np.stack([to_input(im, size) for im in chunk])[:, None])
        prob = torch.sigmoid(net(x))[:, 0].numpy()
        out += [resize(p, np.shape(im)) > threshold for p, im in zip(prob, chunk)]
    return out


def train_unet(train: list[dict], val: list[dict], labelled: set[str], cfg: LANetConfig, epochs: int,
               channels: Sequence[int], path: Path, progress: bool) -> torch.nn.Module:
    """MONAI U-Net on the location-labelled training images (BCE + soft Dice), best validation
    Dice kept; cached in ``path``."""
    torch.manual_seed(cfg.seed)
    net = build_unet(2, 1, 1, channels)
    if path.exists():
        net.load_state_dict(torch.load(path, map_location="cpu"))
        return net
    data = prepare_data(train, cfg, labelled)
    idx = torch.nonzero(data.has_loc).flatten()
    x_all, loc_all = data.images[idx], data.loc[idx]
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    val_s = [s for s in val if location_label(s, cfg.location_label) is not None]
    best, best_state = -1.0, None
    for epoch in range(epochs):
        net.train()
        g = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        order = torch.randperm(len(idx), generator=g)
        for i in tqdm(range(0, len(order), cfg.batch_size), desc=f"unet epoch {epoch + 1}/{epochs}",
                      disable=not progress, leave=False):
            b = order[i : i + cfg.batch_size]
            if len(b) < 2:
                continue
            x, loc = augment_batch(x_all[b], loc_all[b], cfg.augment, g)
            logits = net(x)
            loss = F.binary_cross_entropy_with_logits(logits, loc) + _dice_loss(logits, loc)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if val_s:
            masks = unet_masks(net, [s["image"] for s in val_s], cfg.input_size, cfg.threshold)
            score = float(np.mean([compute_dice(m, location_label(s, cfg.location_label))
                                   for m, s in zip(masks, val_s)]))
        else:
            score = float(epoch)
        if score > best:
            best, best_state = score, {k: v.detach().clone() for k, v in net.state_dict().items()}
    if best_state is not None:
        net.load_state_dict(best_state)
    atomic_save(path, lambda p: torch.save(net.state_dict(), p))
    return net


# --------------------------------------------------------------------- report
def fmt(s: dict[str, float] | float) -> str:
    if isinstance(s, dict):
        return "n/a" if not np.isfinite(s["mean"]) else (
            f"{s['mean']:.3f} ± {s['std']:.3f}" if np.isfinite(s["std"]) else f"{s['mean']:.3f}")
    return "n/a" if s is None or not np.isfinite(s) else f"{s:.3f}"


def tables(ds: str, res: dict[str, Any], fractions: Sequence[float], n_train: int, n_test: int) -> str:
    lines = [f"## {ds} ({n_train} training images, {n_test} test images)", "",
             "### benign vs malignant (malignant = positive)", "",
             "| method | " + " | ".join(CLS_METRICS) + " |", "|---" * (len(CLS_METRICS) + 1) + "|"]
    cls_rows = [("ResNet classifier", res["resnet"])] + [
        (f"LA-Net, loc fraction {f:g}", res[f"lanet_{f:g}"]) for f in fractions]
    for name, r in cls_rows:
        lines.append(f"| {name} | " + " | ".join(fmt(r["classification"][k]) for k in CLS_METRICS) + " |")
    lines += ["", "### localization (test images, mean ± sd)", "", "| method | IoU | Dice |", "|---|---|---|"]
    for f in fractions:
        for name, key in (("U-Net", f"unet_{f:g}"), ("LA-Net", f"lanet_{f:g}")):
            loc = res[key]["localization"]
            lines.append(f"| {name}, loc fraction {f:g} | {fmt(loc['iou'])} | {fmt(loc['dice'])} |")
    lines += ["", "### over location-label fractions", "",
              "| fraction | labelled images | LA-Net accuracy | LA-Net F1 | LA-Net AUC | LA-Net Dice | "
              "U-Net Dice | ResNet accuracy |", "|---" * 8 + "|"]
    for f in fractions:
        la, un = res[f"lanet_{f:g}"], res[f"unet_{f:g}"]
        c = la["classification"]
        lines.append(f"| {f:g} | {la['n_labelled']} | {fmt(c['accuracy'])} | {fmt(c['f1'])} | "
                     f"{fmt(c['auc'])} | {fmt(la['localization']['dice'])} | "
                     f"{fmt(un['localization']['dice'])} | "
                     f"{fmt(res['resnet']['classification']['accuracy'])} |")
    return "\n".join(lines) + "\n"


def plot_curve(path: Path, ds: str, res: dict[str, Any], fractions: Sequence[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label in (("accuracy", "LA-Net accuracy"), ("auc", "LA-Net AUC"), ("f1", "LA-Net F1")):
        a.plot(fractions, [res[f"lanet_{f:g}"]["classification"][key] for f in fractions], "o-", label=label)
    a.axhline(res["resnet"]["classification"]["accuracy"], color="grey", ls="--", label="ResNet accuracy")
    a.set_xlabel("location-label fraction")
    a.set_title(f"{ds}: classification")
    a.legend(fontsize=8)
    for name in ("lanet", "unet"):
        b.plot(fractions, [res[f"{name}_{f:g}"]["localization"]["dice"]["mean"] for f in fractions], "o-",
               label={"lanet": "LA-Net", "unet": "U-Net"}[name])
    b.set_xlabel("location-label fraction")
    b.set_title(f"{ds}: localization Dice")
    b.legend(fontsize=8)
    fig.tight_layout()
    atomic_save(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


def plot_gradcam(path: Path, lanet: LANetModel, resnet: LANetModel, test: list[dict], n: int) -> None:
    """Rows: image with the lesion outline, LA-Net lesion map, LA-Net Grad-CAM, ResNet Grad-CAM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = test[:n]
    images = [s["image"] for s in cases]
    maps = [p.lesion_map for p in lanet.predict(images)]
    cams, cams_r = lanet.gradcam(images), resnet.gradcam(images)
    fig, axes = plt.subplots(len(cases), 4, figsize=(10, 2.5 * len(cases)), squeeze=False)
    for row, s, m, c, cr in zip(axes, cases, maps, cams, cams_r):
        gt = location_label(s, "mask")
        for ax, over, title in zip(row, (None, m, c, cr), ("image + lesion", "LA-Net lesion map",
                                                             "LA-Net Grad-CAM", "ResNet Grad-CAM")):
            ax.imshow(s["image"], cmap="gray")
            if over is not None:
                ax.imshow(over, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            if gt is not None:
                ax.contour(gt, levels=[0.5], colors="lime", linewidths=0.8)
            ax.set_title(f"{title}\n{s['case_id']} ({s['label']})" if over is None else title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    atomic_save(path, lambda p: fig.savefig(p, dpi=90, format="png"))
    plt.close(fig)


# ----------------------------------------------------------------------- main
def cached(path: Path, compute) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    result = compute()
    atomic_write_text(path, json.dumps(result, indent=2, default=float))
    return result


def run_dataset(ds: str, args: argparse.Namespace, base: LANetConfig) -> tuple[str, dict[str, Any]]:
    t0 = time.time()
    train_all, test = load_split(ds, args)
    train, val = split_train_val(train_all, base)
    print(f"{ds}: {len(train)} train, {len(val)} validation, {len(test)} test images", flush=True)
    out = Path(args.out) / ds
    progress = not args.no_progress
    res: dict[str, Any] = {}

    resnet_cfg = replace(base, channel_attention=False, spatial_attention=False, mask_attention=False,
                         lam=1.0, stage1_epochs=0, loc_fraction=1.0,
                         stage2_epochs=args.resnet_epochs or base.stage1_epochs + base.stage2_epochs)

    def fit_resnet() -> dict[str, Any]:
        model = LANetModel.load(train_lanet(train, val, resnet_cfg, out / "resnet", progress=progress))
        return evaluate_lanet(model, test, localization=False)

    res["resnet"] = cached(out / "resnet" / "metrics.json", fit_resnet)
    for f in args.fractions:
        cfg = replace(base, loc_fraction=f)
        run = out / f"lanet_{f:g}"

        def fit_lanet(cfg=cfg, run=run) -> dict[str, Any]:
            model = LANetModel.load(train_lanet(train, val, cfg, run, progress=progress))
            return dict(evaluate_lanet(model, test, localization=True), n_labelled=model.meta["n_labelled"])

        res[f"lanet_{f:g}"] = cached(run / "metrics.json", fit_lanet)
        labelled = set(json.loads((run / "location_labels.json").read_text())["labelled"])
        unet_dir = out / f"unet_{f:g}"

        def fit_unet(cfg=cfg, labelled=labelled, unet_dir=unet_dir) -> dict[str, Any]:
            epochs = args.unet_epochs or cfg.stage1_epochs + cfg.stage2_epochs
            net = train_unet(train, val, labelled, cfg, epochs, args.unet_channels, unet_dir / "unet.pt",
                             progress)
            masks = unet_masks(net, [s["image"] for s in test], cfg.input_size, cfg.threshold)
            rows = [loc_scores(m, s, cfg.location_label) for m, s in zip(masks, test)
                    if location_label(s, cfg.location_label) is not None]
            return {"localization": summary(rows, LOC_METRICS), "n_labelled": len(labelled)}

        res[f"unet_{f:g}"] = cached(unet_dir / "metrics.json", fit_unet)
        print(f"{ds}: fraction {f:g} done ({time.time() - t0:.0f} s)", flush=True)
    plot_curve(out / "curve.png", ds, res, args.fractions)
    if args.gradcam:
        plot_gradcam(out / "gradcam.png", LANetModel.load(out / f"lanet_{max(args.fractions):g}"),
                     LANetModel.load(out / "resnet"), test, args.gradcam)
    return tables(ds, res, args.fractions, len(train), len(test)), res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="busi,bus-bra")
    ap.add_argument("--fractions", default="0.25,0.5,0.75,1.0", help="location-label fractions")
    ap.add_argument("--busi-root", default=None)
    ap.add_argument("--busbra-root", default=None)
    ap.add_argument("--fold", type=int, default=5, help="BUS-BRA test fold")
    ap.add_argument("--test-fraction", type=float, default=0.2, help="BUSI test share (by patient)")
    ap.add_argument("--limit-train", type=int, default=None, help="random subset of N training images")
    ap.add_argument("--limit-test", type=int, default=None, help="random subset of N test images")
    ap.add_argument("--backbone", default=None, help="compact (default), resnet18, resnet50")
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--stage1-epochs", type=int, default=None)
    ap.add_argument("--stage2-epochs", type=int, default=None)
    ap.add_argument("--resnet-epochs", type=int, default=None, help="default: stage 1 + stage 2 epochs")
    ap.add_argument("--unet-epochs", type=int, default=None, help="default: stage 1 + stage 2 epochs")
    ap.add_argument("--unet-channels", default="16,32,64,128")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="LANetConfig field")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--gradcam", type=int, default=4, help="test images in gradcam.png (0 = none)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", default="runs/bench_lanet")
    args = ap.parse_args(argv)
    args.fractions = sorted(float(f) for f in args.fractions.split(","))
    args.unet_channels = tuple(int(c) for c in args.unet_channels.split(","))
    overrides = parse_overrides(args.set, LANetConfig, "lanet")
    for key in ("backbone", "input_size", "stage1_epochs", "stage2_epochs"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    base = LANetConfig(**{"seed": args.seed, "num_threads": args.threads, **overrides})
    if args.threads:
        torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out) / "bench_config.json", json.dumps(
        {"args": {k: v for k, v in vars(args).items()}, "lanet": base.to_dict()}, indent=2, default=str))
    text = ["# LA-Net benchmark", "",
            f"backbone {base.backbone}, input {base.input_size} px, stage 1/2 epochs "
            f"{base.stage1_epochs}/{base.stage2_epochs}, lam {base.lam}, alpha {base.alpha}, tau {base.tau}, "
            f"seed {base.seed}", ""]
    results = {}
    for ds in args.datasets.split(","):
        table, results[ds] = run_dataset(ds.strip(), args, base)
        text.append(table)
    report = "\n".join(text)
    print(report)
    atomic_write_text(Path(args.out) / "report.md", report)
    atomic_write_text(Path(args.out) / "results.json", json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

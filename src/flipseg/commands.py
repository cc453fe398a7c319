"""Implementations of the CLI sub-commands (argument parsing lives in :mod:`flipseg.cli`)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_write_text

__all__ = ["run_demo", "run_evaluate", "run_segment", "run_train", "load_cases"]


def _load_methods() -> None:
    import flipseg.baselines  # noqa: F401
    import flipseg.methods  # noqa: F401


def load_cases(args: argparse.Namespace) -> tuple[list[dict], list[tuple[str, str]], str]:
    """Read the dataset named by the CLI arguments.

    Returns (samples, errors, dataset name). Cases that fail to load are returned
    as (case_id, message) errors instead of stopping the run.
    """
    from flipseg.data import load_dataset

    name = args.dataset
    if name is None:
        raise FlipsegError("give --dataset (busi, bus-bra, folder, stu, samples, phantom2d)")
    part = args.part or ("test" if args.fold is not None else "all")
    opts: dict[str, Any] = {}
    if args.fold is not None:
        opts["fold"] = args.fold
    errors: list[tuple[str, str]] = []
    samples = load_dataset(name, args.data_root, part=part, errors=errors, **opts)
    if args.limit is not None:
        samples = samples[: args.limit]
    if not samples:
        raise FlipsegError(f"dataset {name!r} (part {part!r}) has no cases")
    return samples, errors, name


def _method_opts(name: str, model: str | None) -> dict[str, Any]:
    return {"model": model} if (model and name == "flip") else {}


def run_evaluate(args: argparse.Namespace) -> int:
    from flipseg.evaluate import evaluate_methods, format_table
    from flipseg.segmenters import get_segmenter

    _load_methods()
    if args.compare and args.method:
        raise FlipsegError("give either --method or --compare A B, not both")
    names = list(args.compare) if args.compare else (args.method or ["ellipse"])
    segmenters = {n: get_segmenter(n, **_method_opts(n, args.model)) for n in names}
    samples, errors, dataset = load_cases(args)
    for err in errors:
        print(f"skipped case {err[0]}: {err[1]}")
    res = evaluate_methods(
        samples, segmenters, dataset=dataset, out_dir=args.out, box_shift=args.box_shift,
        repeats=args.repeats, seed=args.seed, progress=not args.no_progress, errors=errors,
    )
    print(format_table(list(res["methods"].values())))
    if "compare" in res:
        print((Path(args.out) / "compare.md").read_text())
    n_err = len(res["errors"])
    if n_err:
        print(f"{n_err} case(s) skipped; see {Path(args.out) / 'errors.csv'}")
        return 3
    return 0


def _best_default_method() -> str:
    from flipseg.methods.flip.infer import default_model_path

    return "flip" if default_model_path(2).exists() else "ellipse"


def run_demo(args: argparse.Namespace) -> int:
    """Segment the bundled BUS-BRA samples and write masks, overlays and a metrics table."""
    from flipseg.data import load_dataset
    from flipseg.evaluate import evaluate_methods, format_table
    from flipseg.segmenters import get_segmenter
    from flipseg.viz import overlay, save_png

    _load_methods()
    out = Path(args.out)
    method = args.method or _best_default_method()
    samples = load_dataset("samples")
    seg = get_segmenter(method)
    t0 = time.time()
    preds = seg.segment_many([s["image"] for s in samples], [s["box"] for s in samples])
    for s, m in zip(samples, preds):
        save_png(out / "masks" / f"{s['case_id']}.png", m)
        save_png(out / "overlays" / f"{s['case_id']}.png",
                 overlay(s["image"], m, gt=s.get("mask"), box=s["box"]))
    print(f"{method}: segmented {len(samples)} images in {time.time() - t0:.1f} s -> {out}")
    methods = {method: seg}
    if method != "ellipse":
        methods["ellipse"] = get_segmenter("ellipse")
    res = evaluate_methods(samples, methods, dataset="samples (BUS-BRA)", out_dir=out / "metrics",
                           progress=False)
    table = format_table(list(res["methods"].values()))
    atomic_write_text(out / "metrics.md", table)
    print(table)
    return 0


def run_segment(args: argparse.Namespace) -> int:
    """One image + box, or a whole dataset, written as mask/overlay/flipped/curve files."""
    from flipseg.boxes import Box
    from flipseg.viz import overlay, plot_erase_curve, save_png

    _load_methods()
    out = Path(args.out)
    if args.image:
        if not args.box:
            raise FlipsegError("--image needs --box x0,y0,x1,y1")
        from flipseg.data.io import read_image, read_mask

        image = read_image(args.image)
        box = Box.parse(args.box).validate(image.shape)
        gt = read_mask(args.mask, shape=image.shape) if args.mask else None
        cases = [{"case_id": Path(args.image).stem, "image": image, "box": box, "mask": gt}]
    elif args.dataset:
        cases, errors, _ = load_cases(args)
        for err in errors:
            print(f"skipped case {err[0]}: {err[1]}")
        cases = [c for c in cases if c.get("box") is not None]
    else:
        raise FlipsegError("give --image IMG --box x0,y0,x1,y1, or --dataset NAME")
    rows = []
    if args.method == "flip":
        from flipseg.methods.flip.infer import FlipSegmenter

        seg = FlipSegmenter(model=args.model)
        results = seg.model.segment_many(
            [c["image"] for c in cases], [c["box"] for c in cases],
            gt_masks=[c.get("mask") for c in cases], progress=True, seed=args.seed,
        )
        for c, r in zip(cases, results):
            cid = c["case_id"]
            save_png(out / f"{cid}_mask.png", r.mask)
            save_png(out / f"{cid}_overlay.png", overlay(c["image"], r.mask, gt=c.get("mask"),
                                                          box=c["box"]))
            save_png(out / f"{cid}_flipped.png", r.flipped)
            plot_erase_curve(out / f"{cid}_curve.png", r.curves, title=cid)
            curve_rows = np.column_stack([r.curves[k] for k in
                                          ("step", "erased_area", "normal_score", "dice")])
            atomic_write_text(
                out / f"{cid}_curve.csv",
                "step,erased_area,normal_score,dice\n"
                + "\n".join(",".join(f"{v:.6g}" for v in row) for row in curve_rows) + "\n",
            )
            rows.append({"case_id": cid, "box": str(c["box"]), "eraser": r.eraser,
                         "initial_score": r.initial_score, "final_score": r.final_score,
                         "steps": int(r.curves["step"][-1])})
    else:
        from flipseg.segmenters import get_segmenter

        seg = get_segmenter(args.method)
        preds = seg.segment_many([c["image"] for c in cases], [c["box"] for c in cases])
        for c, m in zip(cases, preds):
            save_png(out / f"{c['case_id']}_mask.png", m)
            save_png(out / f"{c['case_id']}_overlay.png",
                     overlay(c["image"], m, gt=c.get("mask"), box=c["box"]))
            rows.append({"case_id": c["case_id"], "box": str(c["box"])})
    atomic_write_text(out / "segment.json", json.dumps(rows, indent=2))
    print(f"wrote {len(rows)} segmentation(s) to {out}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    if args.recipe == "flip":
        from flipseg.methods.flip.pipeline import train_flip_cli

        return train_flip_cli(args)
    raise FlipsegError(f"unknown training recipe {args.recipe!r}")

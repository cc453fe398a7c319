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

__all__ = ["run_demo", "run_evaluate", "run_segment", "run_train", "load_cases", "parse_data_opts"]


def _load_methods() -> None:
    import flipseg.baselines  # noqa: F401
    from flipseg.methods import register_all

    register_all()


def load_cases(args: argparse.Namespace) -> tuple[list[dict], list[tuple[str, str]], str]:
    """Read the dataset named by the CLI arguments.

    Returns (samples, errors, dataset name). Cases that fail to load are returned
    as (case_id, message) errors instead of stopping the run.
    """
    from flipseg.data import load_dataset

    name = args.dataset
    if name is None:
        raise FlipsegError(
            "give --dataset (busi, bus-bra, folder, stu, samples, phantom2d, phantom3d)"
        )
    part = args.part or ("test" if args.fold is not None else "all")
    opts: dict[str, Any] = parse_data_opts(getattr(args, "data_opt", None) or [])
    if args.fold is not None:
        opts["fold"] = args.fold
    errors: list[tuple[str, str]] = []
    samples = load_dataset(name, args.data_root, part=part, errors=errors, **opts)
    if args.limit is not None:
        samples = samples[: args.limit]
    if not samples:
        raise FlipsegError(f"dataset {name!r} (part {part!r}) has no cases")
    return samples, errors, name


def _opt_value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"24,48,48"`` -> (24, 48, 48), ``"true"`` -> True."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if "," in text:
        return tuple(_opt_value(t) for t in text.split(","))
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_data_opts(items: list[str]) -> dict[str, Any]:
    """``["n=4", "shape=24,48,48"]`` -> ``{"n": 4, "shape": (24, 48, 48)}``."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise FlipsegError(f"--data-opt {item!r} must look like KEY=VALUE")
        key, val = item.split("=", 1)
        out[key.strip().replace("-", "_")] = _opt_value(val)
    return out


#: Methods that take ``--model`` (a trained run folder or checkpoint file).
MODEL_METHODS = ("flip", "flip-grabcut", "flip-vote", "flip2d-slices", "boxinst", "pseudo-unet",
                 "hybrid", "sam", "cam-mt")


#: Methods whose shipped default model depends on the images' dimensionality.
DIMS_METHODS = ("flip", "flip-grabcut", "flip-vote")


def _method_opts(name: str, model: str | None, dims: int | None = None,
                 vote_model: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``get_segmenter(name, ...)``: ``model`` for the methods that
    take one, for Flip without ``--model`` the dimensionality of the cases (the
    shipped 2D or 3D model), and ``--vote-model`` for ``flip-vote``."""
    opts: dict[str, Any] = {"model": model} if (model and name in MODEL_METHODS) else {}
    if dims is not None and not model and name in DIMS_METHODS:
        opts["dims"] = dims
    if vote_model and name == "flip-vote":
        opts["vote_model"] = vote_model
    return opts


def _check_vote_model(args: argparse.Namespace, names: list[str]) -> None:
    if getattr(args, "vote_model", None) and "flip-vote" not in names:
        raise FlipsegError("--vote-model is the third voter of --method flip-vote; "
                           "it does nothing for " + ", ".join(names))


def _case_dims(cases: list[dict[str, Any]]) -> int:
    dims = {np.ndim(c["image"]) for c in cases}
    if len(dims) != 1:
        raise FlipsegError(f"cases mix 2D and 3D images ({sorted(dims)}D); use them apart")
    return dims.pop()


def run_evaluate(args: argparse.Namespace) -> int:
    from flipseg.evaluate import evaluate_methods, format_table
    from flipseg.segmenters import get_segmenter

    _load_methods()
    if args.compare and args.method:
        raise FlipsegError("give either --method or --compare A B, not both")
    names = list(args.compare) if args.compare else (args.method or ["ellipse"])
    samples, errors, dataset = load_cases(args)
    dims = _case_dims(samples)
    _check_vote_model(args, names)
    segmenters = {n: get_segmenter(n, **_method_opts(n, args.model, dims, args.vote_model))
                  for n in names}
    if args.refine_box:
        segmenters = _with_refined_boxes(segmenters, args.refine_box)
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


def _with_refined_boxes(segmenters: dict[str, Any], model: str) -> dict[str, Any]:
    """``--refine-box``: every segmenter runs on the refined boxes, named ``<method>+refine``."""
    from flipseg.methods.boxrefine.model import RefinedBoxSegmenter, load_refiner

    refiner = load_refiner(model)
    wrapped = [RefinedBoxSegmenter(s, refiner) for s in segmenters.values()]
    return {w.name: w for w in wrapped}


def _best_default_method() -> str:
    from flipseg.methods.boxinst.model import default_model_path as boxinst_model
    from flipseg.methods.flip.infer import default_model_path

    # flip-vote, then flip-grabcut: the best measured on BUS-BRA fold 5 (benchmarks/flip2d.py)
    if not default_model_path(2).exists():
        return "ellipse"
    return "flip-vote" if boxinst_model().exists() else "flip-grabcut"


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
    refs = ["ellipse", "grabcut"]  # the floor and the strongest classic baseline
    if method in ("flip-grabcut", "flip-vote"):
        refs.insert(0, "flip")  # Flip Learning's own masks, before the GrabCut refinement
    if method == "flip-vote":
        refs.insert(1, "flip-grabcut")  # the vote's second voter
    from flipseg.methods.boxinst.model import default_model_path as boxinst_model

    if boxinst_model().exists():
        refs.insert(0, "boxinst")  # the shipped box-supervised U-Net
    for ref in refs:
        if ref != method:
            methods[ref] = get_segmenter(ref)
    res = evaluate_methods(samples, methods, dataset="samples (BUS-BRA)", out_dir=out / "metrics",
                           progress=False)
    table = format_table(list(res["methods"].values()))
    atomic_write_text(out / "metrics.md", table)
    print(table)
    return 0


def _volume_meta(case: dict[str, Any]) -> dict[str, Any]:
    """Geometry for writing a 3D result: the file's own, else an affine from the spacing."""
    if case.get("volume_meta") is not None:
        return case["volume_meta"]
    sz, sy, sx = (float(v) for v in case.get("spacing") or (1.0, 1.0, 1.0))
    return {"format": None, "affine": np.diag([sx, sy, sz, 1.0]),
            "shape": tuple(case["image"].shape)}


def _write_curve(out: Path, cid: str, curves: dict[str, np.ndarray]) -> None:
    from flipseg.viz import plot_erase_curve

    plot_erase_curve(out / f"{cid}_curve.png", curves, title=cid)
    keys = ("step", "erased_area", "normal_score", "dice")
    rows = np.column_stack([curves[k] for k in keys])
    atomic_write_text(
        out / f"{cid}_curve.csv",
        ",".join(keys) + "\n" + "\n".join(",".join(f"{v:.6g}" for v in row) for row in rows)
        + "\n",
    )


def _write_result(out: Path, case: dict[str, Any], mask: np.ndarray,
                  flipped: np.ndarray | None = None) -> None:
    """Mask (+ flipped image) and overlays of one case: PNGs in 2D, NIfTI + 3 planes in 3D."""
    from flipseg.viz import overlay, plane_overlays, save_png

    cid = case["case_id"]
    if mask.ndim == 2:
        save_png(out / f"{cid}_mask.png", mask)
        save_png(out / f"{cid}_overlay.png",
                 overlay(case["image"], mask, gt=case.get("mask"), box=case["box"],
                         given_box=case.get("given_box")))
        if flipped is not None:
            save_png(out / f"{cid}_flipped.png", flipped)
        return
    from flipseg.data.volumes import write_volume

    meta = _volume_meta(case)
    write_volume(out / f"{cid}_mask.nii.gz", mask, meta)
    if flipped is not None:
        write_volume(out / f"{cid}_flipped.nii.gz", flipped.astype(np.float32), meta)
    pics = plane_overlays(case["image"], mask, gt=case.get("mask"), box=case["box"],
                          spacing=case.get("spacing"))
    for plane, rgb in pics.items():
        save_png(out / f"{cid}_overlay_{plane}.png", rgb)


def _whole_image_box(shape: tuple[int, ...]) -> Any:
    from flipseg.boxes import Box

    if len(shape) == 2:
        return Box(0, 0, shape[1], shape[0])
    return Box(0, 0, shape[2], shape[1], 0, shape[0])  # arrays are [z, y, x]


def _read_one_case(args: argparse.Namespace, needs_box: bool = True) -> dict[str, Any]:
    """``--image`` (+ ``--mask``) and ``--box`` as one case (2D image or volume).

    Without ``needs_box`` (whole-image models) ``--box`` may be left out: the case
    then gets the whole image as its box.
    """
    from flipseg.boxes import Box
    from flipseg.data.folder import read_any_image, read_any_mask
    from flipseg.data.volumes import is_volume_path, volume_stem

    if not args.box and needs_box:
        raise FlipsegError("--image needs --box x0,y0,x1,y1 (2D) or x0,y0,x1,y1,z0,z1 (3D)")
    image, spacing, meta = read_any_image(args.image)
    box = Box.parse(args.box).validate(image.shape) if args.box else _whole_image_box(image.shape)
    gt = read_any_mask([args.mask], image.shape) if args.mask else None
    stem = volume_stem(args.image) if is_volume_path(args.image) else Path(args.image).stem
    case = {"case_id": stem, "image": image, "box": box, "mask": gt,
            "spacing": spacing or (1.0,) * image.ndim}
    if meta is not None:
        case["volume_meta"] = meta
    return case


def _refine_case_boxes(cases: list[dict[str, Any]], model: str, needs_box: bool,
                       method: str) -> list[dict[str, Any]]:
    """``segment --refine-box``: each case's box replaced by the refined one (the given box
    kept as ``given_box``); a volume is refused by the refiner itself (2D only)."""
    from flipseg.methods.boxrefine.model import load_refiner, require_box_prompted

    require_box_prompted(method, needs_box)
    refined = load_refiner(model).refine_many([c["image"] for c in cases], [c["box"] for c in cases])
    return [{**c, "given_box": c["box"], "box": b} for c, b in zip(cases, refined)]


def run_segment(args: argparse.Namespace) -> int:
    """One image + box, or a whole dataset, written as mask/overlay/flipped/curve files.

    2D: ``<case>_mask.png``, ``_overlay.png`` (+ flip: ``_flipped.png``). 3D:
    ``<case>_mask.nii.gz`` with the geometry of the input volume, overlays of
    the three planes through the box centre ``_overlay_{axial,coronal,sagittal}.png``
    (+ flip: ``_flipped.nii.gz``). Flip also writes the erase curve
    ``_curve.png`` and ``_curve.csv``; flip-vote a picture of its three voters and
    their vote, ``_voters.png``.
    """
    from flipseg.bundles import method_of_model
    from flipseg.segmenters import get_segmenter

    _load_methods()
    out = Path(args.out)
    if args.method is None:
        args.method = method_of_model(args.model) if args.model else "flip"
    _check_vote_model(args, [args.method])
    seg = (None if args.method == "flip"
           else get_segmenter(args.method, **_method_opts(args.method, args.model,
                                                          vote_model=args.vote_model)))
    needs_box = seg is None or seg.needs_box
    if args.image:
        cases = [_read_one_case(args, needs_box)]
    elif args.dataset:
        cases, errors, _ = load_cases(args)
        for err in errors:
            print(f"skipped case {err[0]}: {err[1]}")
        if not needs_box:
            cases = [c if c.get("box") is not None else {**c, "box": _whole_image_box(np.shape(c["image"]))}
                     for c in cases]
        cases = [c for c in cases if c.get("box") is not None]
        if not cases:
            raise FlipsegError(f"dataset {args.dataset!r} has no case with a box")
    else:
        raise FlipsegError("give --image IMG --box x0,y0,x1,y1, or --dataset NAME")
    dims = _case_dims(cases)
    if args.refine_box:
        cases = _refine_case_boxes(cases, args.refine_box, needs_box, args.method)
    rows = []
    if args.method == "flip":
        from flipseg.methods.flip.infer import FlipSegmenter

        seg = FlipSegmenter(model=args.model, dims=dims)
        results = seg.model.segment_many(
            [c["image"] for c in cases], [c["box"] for c in cases],
            gt_masks=[c.get("mask") for c in cases], progress=True, seed=args.seed,
        )
        for c, r in zip(cases, results):
            _write_result(out, c, r.mask, r.flipped)
            _write_curve(out, c["case_id"], r.curves)
            rows.append({"case_id": c["case_id"], "method": "flip", "box": str(c["box"]),
                         "eraser": r.eraser,
                         "initial_score": r.initial_score, "final_score": r.final_score,
                         "steps": int(r.curves["step"][-1])})
    else:
        from flipseg.viz import mask_panels, save_png

        ims, bxs = [c["image"] for c in cases], [c["box"] for c in cases]
        # flip-vote: also a picture of its three voters and their vote
        parts = seg.vote_parts(ims, bxs, seed=args.seed) if args.method == "flip-vote" else None
        preds = parts["flip-vote"] if parts else seg.segment_many(ims, bxs, seed=args.seed)
        for i, (c, m) in enumerate(zip(cases, preds)):
            _write_result(out, c, np.asarray(m, bool))
            if parts:
                save_png(out / f"{c['case_id']}_voters.png",
                         mask_panels(c["image"], c["box"], {k: v[i] for k, v in parts.items()},
                                     gt=c.get("mask")))
            rows.append({"case_id": c["case_id"], "method": args.method, "box": str(c["box"])})
    for c, row in zip(cases, rows):
        if "given_box" in c:  # --refine-box: the box segmented above is the refined one
            row["given_box"] = str(c["given_box"])
    atomic_write_text(out / "segment.json", json.dumps(rows, indent=2))
    print(f"wrote {len(rows)} segmentation(s) to {out}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    if args.recipe == "flip":
        from flipseg.methods.flip.pipeline import train_flip_cli

        return train_flip_cli(args)
    if args.recipe == "boxinst":
        from flipseg.methods.boxinst.model import train_boxinst_cli

        return train_boxinst_cli(args)
    if args.recipe == "box-refiner":
        from flipseg.methods.boxrefine.model import train_box_refiner_cli

        return train_box_refiner_cli(args)
    if args.recipe == "hybrid":
        from flipseg.methods.hybrid.cli import train_hybrid_cli

        return train_hybrid_cli(args)
    if args.recipe == "pseudo":
        from flipseg.methods.pseudo.cli import train_pseudo_cli

        return train_pseudo_cli(args)
    if args.recipe == "lanet":
        from flipseg.methods.lanet.cli import train_lanet_cli

        return train_lanet_cli(args)
    if args.recipe == "cam-mt":
        from flipseg.methods.cam_mt.cli import train_cam_mt_cli

        return train_cam_mt_cli(args)
    raise FlipsegError(f"unknown training recipe {args.recipe!r}")

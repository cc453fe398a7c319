"""The CLI sub-commands (argument parsing lives in :mod:`flipseg.cli`).

A thin layer over :mod:`flipseg.api` and the method registry: what a method is, which
model it takes and which options it has all come from its :class:`~flipseg.registry.MethodSpec`.
Inputs named on the command line are checked before anything heavy is imported.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.io_utils import ProgressLog, atomic_write_text

__all__ = ["build_segmenters", "run", "run_demo", "run_evaluate", "run_segment", "run_train",
           "segment_work"]


def run(args: argparse.Namespace) -> int:
    """Dispatch a parsed command line."""
    commands = {"demo": run_demo, "evaluate": run_evaluate, "segment": run_segment,
                "classify": run_classify, "train": run_train, "methods": run_methods,
                "convert-model": run_convert_model, "label": run_label, "serve": run_serve}
    return commands[args.command](args)


def _case_dims(cases: list[dict[str, Any]]) -> int:
    from flipseg.data.sample import case_ndim

    dims = {case_ndim(c) for c in cases}
    if len(dims) != 1:
        raise FlipsegError(f"cases mix 2D and 3D images ({sorted(dims)}D); use them apart")
    return dims.pop()


def _spec_extras(args: argparse.Namespace) -> dict[str, Any]:
    """Values given to the registered methods' own options (e.g. ``--vote-model``)."""
    from flipseg.methods import method_option_keywords

    return {kw: getattr(args, kw) for kw in sorted(method_option_keywords())
            if getattr(args, kw, None) is not None}


def _segmenters(names: list[str], args: argparse.Namespace, dims: int) -> dict[str, Any]:
    """The named methods, each with ``--model``, its ``--set`` options and its own flags
    (:func:`_segmenter_recipes`), built here on ``--device``."""
    return build_segmenters(_segmenter_recipes(names, args, dims), device=_device(args))


def _absolute(path: Any) -> Any:
    """An existing path made absolute (workers of another process or machine may start
    elsewhere); anything else as it is."""
    if isinstance(path, (str, Path)) and str(path) not in ("", "default") and Path(path).exists():
        return str(Path(path).resolve())
    return path


def _segmenter_recipes(names: list[str], args: argparse.Namespace, dims: int) -> dict[str, dict[str, Any]]:
    """What builds each named method (:func:`build_segmenters`), checked here before any work.

    With several methods, a ``--set`` key goes to every method that has it (an error when
    none has); ``--model`` goes to the methods that take a model; a method flag such as
    ``--vote-model`` to the method that declares it (an error when none of them does).
    """
    from flipseg.methods import method_spec
    from flipseg.registry import resolve
    from flipseg.runs import config_field_types, parse_overrides

    specs = {n: method_spec(n) for n in names}
    extras = _spec_extras(args)
    for kw in extras:
        if not any(kw in {k for _f, k, _h in s.options} for s in specs.values()):
            raise FlipsegError(f"--{kw.replace('_', '-')} does nothing for " + ", ".join(names))
    sets: dict[str, dict[str, Any]] = {n: {} for n in names}
    for item in args.set:
        if "=" not in item:
            raise FlipsegError(f"--set {item!r} must look like KEY=VALUE")
        key = item.split("=", 1)[0].strip().replace("-", "_")
        takers = [n for n, s in specs.items()
                  if s.config is not None and key in config_field_types(resolve(s.config))]
        if not takers:
            raise FlipsegError(f"--set {item!r}: no option {key!r} in " + ", ".join(names)
                               + " (`flipseg methods --options` lists them)")
        for n in takers:
            sets[n].update(parse_overrides([item], resolve(specs[n].config), n))
    if args.model is not None and not any(s.model != "none" for s in specs.values()):
        raise FlipsegError("--model: " + ", ".join(names) + " take(s) no trained model")
    out = {}
    for n, s in specs.items():
        model = _absolute(args.model) if s.model != "none" else None
        mine = {k: _absolute(v) for k, v in extras.items() if k in {kw for _f, kw, _h in s.options}}
        out[n] = {"method": n, "model": model, "dims": dims, "options": sets[n], "extra": mine}
    return out


def build_segmenters(recipes: dict[str, dict[str, Any]], *, device: str = "cpu",
                     refine_box: str | None = None) -> dict[str, Any]:
    """Method name -> segmenter, from :func:`_segmenter_recipes`; with ``refine_box`` each
    runs on the refined boxes (:func:`_with_refined_boxes`); the networks on ``device``.

    A module-level function: the engines' workers call it (a :func:`functools.partial` of
    it) to load their models once.
    """
    from flipseg.api import make_segmenter, place_on

    out = {n: make_segmenter(r["method"], model=r["model"], dims=r["dims"], options=r["options"],
                             **r["extra"]) for n, r in recipes.items()}
    if refine_box:
        out = {n: w for n, w in zip(out, _with_refined_boxes(out, _absolute(refine_box)).values())}
    for seg in out.values():
        place_on(seg, device)
    return out


def _check_device(args: argparse.Namespace) -> None:
    """``--device`` checked before any work, without importing PyTorch for auto/cpu."""
    from flipseg.devices import check_device

    check_device(getattr(args, "device", None))


def _device(args: argparse.Namespace) -> str:
    """``--device``, resolved (``auto``: the GPU when there is one)."""
    from flipseg.devices import resolve_device

    return resolve_device(getattr(args, "device", None))


def run_evaluate(args: argparse.Namespace) -> int:
    if args.compare and args.method:
        raise FlipsegError("give either --method or --compare A B, not both")
    engine_name, workers = _engine_settings(args)
    part = _part(args)
    _check_device(args)
    _resize_masks_option(args)
    samples, errors, dataset = _load_cases(args)
    from flipseg.evaluation import evaluate_methods, format_table

    device = _device(args)
    out = Path(args.out)
    if part is not None:  # job arrays: this part's cases, in a folder of its own
        samples, errors, out = _shard_cases(samples, part), (errors if part[1] == 0 else []), \
            out / _part_name(part)
    _warn_resized_masks(samples)
    dims = _case_dims(samples)
    names = list(args.compare) if args.compare else (args.method or [_default_method(args, dims)])
    recipes = _segmenter_recipes(names, args, dims)
    engine = None
    if engine_name == "local" and workers == 1:
        segmenters = build_segmenters(recipes, device=device, refine_box=args.refine_box)
        if args.refine_box:
            segmenters = {s.name: s for s in segmenters.values()}
    else:  # the workers hold the models; evaluate hands them its batches
        from flipseg.engines.options import make_engine
        from flipseg.engines.segmenters import RemoteSegmenter

        engine = make_engine(partial(build_segmenters, recipes, device=device,
                                     refine_box=args.refine_box), args, device=device)
        print(f"evaluate: the cases run in {engine.describe}")
        segmenters = {(f"{n}+refine" if args.refine_box else n): RemoteSegmenter(engine, n)
                      for n in recipes}
    for err in errors:
        print(f"skipped case {err[0]}: {err[1]}")
    try:
        res = evaluate_methods(
            samples, segmenters, dataset=dataset, out_dir=out, box_shift=args.box_shift,
            repeats=args.repeats, seed=args.seed, progress=not args.no_progress, errors=errors,
            resume_key=json.dumps({"recipes": repr(recipes), "refine_box": args.refine_box,
                                   "cases": len(samples)}, sort_keys=True),
        )
    finally:
        if engine is not None:
            engine.close()
    print(format_table(list(res["methods"].values())))
    if "compare" in res:
        print((out / "compare.md").read_text())
    _print_not_scored(res["not_scored"])
    if part is not None:
        print(f"part {part[1]} of {part[0]} ({len(samples)} cases) -> {out}")
    n_err = len(res["errors"])
    if n_err:
        print(f"{n_err} case(s) skipped; see {out / 'errors.csv'}")
        return 3
    return 0


def _engine_settings(args: argparse.Namespace) -> tuple[str, int]:
    from flipseg.engines.options import engine_settings

    return engine_settings(args)


def _part(args: argparse.Namespace) -> tuple[int, int] | None:
    """``(K, I)`` of ``--num-parts K --part-id I`` (None: the whole run)."""
    from flipseg.engines.shard import check_part

    return check_part(getattr(args, "num_parts", None), getattr(args, "part_id", None))


def _part_name(part: tuple[int, int]) -> str:
    return f"part-{part[1]}-of-{part[0]}"


def _shard_cases(cases: list[dict[str, Any]], part: tuple[int, int], key: Any = None) -> list[dict[str, Any]]:
    from flipseg.engines.shard import shard

    return shard(cases, part[0], part[1], key=key)


#: Datasets whose reader takes the option ``resize_masks`` (``--resize-masks``).
_RESIZING_DATASETS = ("folder", "datalist")


def _resize_masks_option(args: argparse.Namespace) -> None:
    """``--resize-masks`` -> the dataset option ``resize_masks=true`` (folder, datalist)."""
    if not getattr(args, "resize_masks", False) or getattr(args, "image", None):
        return
    name = str(args.dataset or "").lower()
    if name not in _RESIZING_DATASETS:
        raise FlipsegError(f"--resize-masks: dataset {args.dataset!r} reads its masks itself; "
                           "the option is for --dataset folder, datalist and segment --mask")
    args.data_opt = [*(args.data_opt or []), "resize_masks=true"]


def _warn_resized_masks(cases: list[dict[str, Any]]) -> None:
    """One warning line (stderr) naming the masks ``--resize-masks`` resized."""
    import sys

    items = [f"{c['case_id']} ({'; '.join(c['mask_resized'])})" for c in cases
             if c.get("mask_resized")]
    if items:
        shown = ", ".join(items[:5]) + (f", ... ({len(items) - 5} more)" if len(items) > 5 else "")
        print(f"flipseg: warning: {len(items)} mask(s) of another size than their image were "
              f"resized by nearest neighbour: {shown}", file=sys.stderr)


def _print_not_scored(not_scored: dict[str, list[str]]) -> None:
    """The cases ``evaluate`` could not score (no mask, no box), one line each kind."""
    for key, what in (("without_mask", "image(s) without a mask"),
                      ("without_box", "case(s) with a mask but no box")):
        ids = not_scored.get(key) or []
        if ids:
            shown = ", ".join(ids[:10]) + (f", ... ({len(ids) - 10} more)" if len(ids) > 10 else "")
            print(f"{len(ids)} {what} not scored (listed in summary.md): {shown}")


def _load_cases(args: argparse.Namespace) -> tuple[list[dict], list[tuple[str, str]], str]:
    """The cases of ``--dataset``: an index whose images are read as the cases run, where
    the reader can (``bus-bra``, ``folder``, ``coco``), so memory stays flat."""
    from flipseg.runs import load_cases

    return load_cases(args, lazy=True)


def _default_method(args: argparse.Namespace, dims: int) -> str:
    """The method of ``--model`` when one is given, else the default for ``dims``."""
    from flipseg.methods import default_method, method_of_model

    return method_of_model(args.model) if args.model else default_method(dims)


def _with_refined_boxes(segmenters: dict[str, Any], model: str) -> dict[str, Any]:
    """``--refine-box``: every segmenter runs on the refined boxes, named ``<method>+refine``."""
    from flipseg.methods.boxrefine.model import RefinedBoxSegmenter, load_refiner

    refiner = load_refiner(model)
    wrapped = [RefinedBoxSegmenter(s, refiner) for s in segmenters.values()]
    return {w.name: w for w in wrapped}


def run_demo(args: argparse.Namespace) -> int:
    """Segment the bundled BUS-BRA samples and write masks, overlays and a metrics table,
    with the default method (or ``--method``) beside the references it is measured against."""
    from flipseg.api import make_segmenter
    from flipseg.data import load_dataset
    from flipseg.evaluation import evaluate_methods, format_table
    from flipseg.methods import default_method
    from flipseg.viz import overlay, save_png

    out = Path(args.out)
    method = args.method or default_method(2)
    samples = load_dataset("samples")
    seg = make_segmenter(method)
    t0 = time.time()
    preds = seg.segment_many([s["image"] for s in samples], [s["box"] for s in samples])
    for s, m in zip(samples, preds):
        save_png(out / "masks" / f"{s['case_id']}.png", m)
        save_png(out / "overlays" / f"{s['case_id']}.png",
                 overlay(s["image"], m, gt=s.get("mask"), box=s["box"]))
    print(f"{method}: segmented {len(samples)} images in {time.time() - t0:.1f} s -> {out}")
    methods = {method: seg}
    # flip-vote's three voters, then the floor and the strongest classic baseline
    for ref in ("boxinst", "flip", "flip-grabcut", "ellipse", "grabcut"):
        if ref != method:
            methods[ref] = make_segmenter(ref)
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



def _check_image_args(args: argparse.Namespace) -> list[Any]:
    """``--image``, ``--mask`` and ``--box`` checked before anything heavy is imported: the
    files exist and every box parses. Returns the parsed boxes."""
    for flag, path in (("--image", args.image), ("--mask", args.mask)):
        if path is not None and not Path(path).exists():
            raise FlipsegError(f"{flag} file not found: {path}")
    return [Box.parse(b) for b in (args.box or [])]


def _read_image_cases(args: argparse.Namespace, boxes: list[Any], needs_box: bool) -> list[dict[str, Any]]:
    """``--image`` (+ ``--mask``) with its ``--box`` options: one case per box (2D image or
    volume), ``<image stem>`` for one box, ``<image stem>-box<K>`` (K from 1) for several.

    Without ``needs_box`` (whole-image models) ``--box`` may be left out: the case then gets
    the whole image as its box.
    """
    from flipseg.data.folder import image_stem, read_any_image, read_any_mask
    from flipseg.runs import parse_data_opts

    if not boxes and needs_box:
        raise FlipsegError("--image needs --box x0,y0,x1,y1 (2D) or x0,y0,x1,y1,z0,z1 (3D)")
    opts = parse_data_opts(getattr(args, "data_opt", None) or [])
    extra = sorted(set(opts) - {"frame"})
    if extra:
        raise FlipsegError(f"--data-opt {extra[0]}: with --image only frame=K|all applies")
    image, spacing, meta = read_any_image(args.image, **opts)
    boxes = [b.validate(image.shape) for b in boxes] or [Box.from_lo_hi((0,) * image.ndim, image.shape)]
    stem = image_stem(args.image)
    notes: list[str] = []
    gt = read_any_mask([args.mask], image.shape, resize=getattr(args, "resize_masks", False),
                       case_id=stem, notes=notes) if args.mask else None
    cases = []
    for k, box in enumerate(boxes, start=1):
        case = {"case_id": stem if len(boxes) == 1 else f"{stem}-box{k}", "image": image,
                "box": box, "mask": gt, "spacing": spacing or (1.0,) * image.ndim}
        if meta is not None:
            case["volume_meta"] = meta
        if notes:
            case["mask_resized"] = notes
        cases.append(case)
    _warn_resized_masks(cases[:1])
    return cases


_OUTPUT_SUFFIXES = ("_mask.png", "_overlay.png", "_flipped.png", "_voters.png", "_curve.png",
                    "_curve.csv", "_mask.nii.gz", "_flipped.nii.gz", "_overlay_axial.png",
                    "_overlay_coronal.png", "_overlay_sagittal.png")


def _refuse_replacing_inputs(args: argparse.Namespace, out: Path, cases: list[dict[str, Any]]) -> None:
    """Before any work: no output file of ``segment`` may be an input (``--image``, ``--mask``,
    a case's image, or a file already in the dataset folder), e.g. BUSI's ``<stem>_mask.png``
    beside its image with ``--out .``."""
    from flipseg.data import DEFAULT_FOLDERS, default_data_root
    from flipseg.io_utils import refuse_replacing

    planned = [out / f"{c['case_id']}{sfx}" for c in cases for sfx in _OUTPUT_SUFFIXES]
    planned.append(out / "segment.json")
    inputs = [args.image, args.mask]
    for c in cases:
        inputs += [c.get("file")] + list((c.get("volume_meta") or {}).get("files") or [])
    root = args.data_root or (default_data_root(args.dataset) if args.dataset in DEFAULT_FOLDERS
                              and not args.image else None)
    if root is not None:
        root = Path(root).resolve()
        inputs += [p for p in planned if p.exists() and root in p.resolve().parents]
    refuse_replacing(planned, [i for i in inputs if i])


def _refine_case_boxes(cases: list[dict[str, Any]], model: str, needs_box: bool,
                       method: str) -> list[dict[str, Any]]:
    """``segment --refine-box``: each case's box replaced by the refined one (the given box
    kept as ``given_box``); a volume is refused by the refiner itself (2D only)."""
    from flipseg.methods.boxrefine.model import load_refiner, require_box_prompted

    require_box_prompted(method, needs_box)
    refined = load_refiner(model).refine_many([c["image"] for c in cases], [c["box"] for c in cases])
    return [{**c, "given_box": c["box"], "box": b} for c, b in zip(cases, refined)]


def run_segment(args: argparse.Namespace) -> int:
    """One image + box(es), or a whole dataset, written as mask/overlay/flipped/curve files.

    2D: ``<case>_mask.png``, ``_overlay.png`` (+ flip: ``_flipped.png``). 3D:
    ``<case>_mask.nii.gz`` with the geometry of the input volume, overlays of
    the three planes through the box centre ``_overlay_{axial,coronal,sagittal}.png``
    (+ flip: ``_flipped.nii.gz``). Flip also writes the erase curve
    ``_curve.png`` and ``_curve.csv``; flip-vote a picture of its three voters and
    their vote, ``_voters.png``.
    """
    from flipseg.io_utils import check_out_dir
    from flipseg.methods import method_spec

    if args.image:
        boxes = _check_image_args(args)
        if any(getattr(args, k, None) is not None for k in ("workers", "num_parts", "part_id")) \
                or getattr(args, "engine", "local") != "local":
            raise FlipsegError("--workers, --engine, --num-parts and --part-id are for --dataset")
    elif not args.dataset:
        raise FlipsegError("give --image IMG --box x0,y0,x1,y1, or --dataset NAME")
    _engine_settings(args)
    part = _part(args)
    _check_device(args)
    out = check_out_dir(args.out)
    method = args.method
    if method is None and args.model:
        from flipseg.methods import method_of_model

        method = method_of_model(args.model)
    needs_box = method is None or method_spec(method).kind == "box"
    errors: list[tuple[str, str]] = []
    if args.image:
        cases = _read_image_cases(args, boxes, needs_box)
    else:
        _resize_masks_option(args)
        cases, errors, _ = _load_cases(args)
        _warn_resized_masks(cases)
        if part is not None and part[1] != 0:
            errors = []  # part 0 reports the cases that failed to load
        for err in errors:
            print(f"skipped case {err[0]}: {err[1]}")
        if not needs_box:
            cases = [c if c.get("box") is not None
                     else {**c, "box": Box.from_lo_hi((0,) * np.ndim(c["image"]), np.shape(c["image"]))}
                     for c in cases]
        cases = [c for c in cases if c.get("box") is not None]
        if not cases:
            raise FlipsegError(f"dataset {args.dataset!r} has no case with a box")
    if part is not None:
        cases = _shard_cases(cases, part)
        if not cases:
            print(f"part {part[1]} of {part[0]} has no case (the run has fewer cases than parts)")
            return 0
    _refuse_replacing_inputs(args, out, cases)
    dims = _case_dims(cases)
    method = method or _default_method(args, dims)
    recipes = _segmenter_recipes([method], args, dims)
    device = _device(args)
    if args.refine_box:
        cases = _refine_case_boxes(cases, args.refine_box, needs_box, method)
    rows, failed = _segment_cases(cases, partial(build_segmenters, recipes, device=device), args,
                                  method=method, out=out, device=device,
                                  skip_bad=not args.image,
                                  resume_key=None if args.image else json.dumps(
                                      {"method": method, "recipes": repr(recipes),
                                       "seed": args.seed, "part": part}, sort_keys=True),
                                  progress_name=".segment-progress.jsonl" if part is None
                                  else f".segment-progress-{_part_name(part)}.jsonl")
    failed = list(errors) + failed
    name = "segment.json" if part is None else f"segment-{_part_name(part)}.json"
    atomic_write_text(out / name, json.dumps(rows, indent=2))
    print(f"wrote {len(rows)} segmentation(s) to {out}"
          + (f" (part {part[1]} of {part[0]})" if part is not None else ""))
    if failed:
        errors_file = out / ("errors.csv" if part is None else f"errors-{_part_name(part)}.csv")
        _write_error_rows(errors_file, failed)
        print(f"{len(failed)} case(s) failed; see {errors_file}")
        return 3
    return 0


#: Boxes segmented per call of the segmenter by ``segment --dataset`` (flip batches up to 64).
SEGMENT_CHUNK = 64


def _chunk_size(n: int, workers: int, most: int) -> int:
    """Cases per chunk: ``most`` in one process; with several workers, small enough that
    each worker gets about two chunks (at least 4 cases each)."""
    if workers <= 1:
        return most
    return max(4, min(most, -(-n // (2 * workers))))


def _segment_cases(cases: list[dict[str, Any]], setup: Any, args: argparse.Namespace, *,
                   method: str, out: Path, device: str, skip_bad: bool,
                   resume_key: str | None = None, progress_name: str = ".segment-progress.jsonl"
                   ) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Every case segmented and written (:func:`segment_work`) on the engine of ``--workers``
    / ``--engine``; returns the rows of ``segment.json`` (in case order) and the failed
    cases ``(case_id, message)``.

    With ``resume_key`` (the run's method, options and seed), each chunk's rows are
    appended to ``OUT/.segment-progress.jsonl`` (``progress_name``) as it finishes; a re-run with the same key
    skips the cases found there whose mask is on disk (a run stopped half-way goes on
    where it stopped). The file goes once the run is done."""
    from tqdm.auto import tqdm

    from flipseg.engines.base import split
    from flipseg.engines.options import make_engine

    _, workers = _engine_settings(args)
    progress = None
    if resume_key:  # rows of a stopped run whose mask is on disk
        progress = ProgressLog(out / progress_name, resume_key, key=lambda r: r["case_id"],
                               keep=lambda r: (out / f"{r.get('case_id')}_mask.png").is_file())
    before = {r["case_id"]: r for r in (progress.rows if progress else [])}
    todo = [c for c in cases if c["case_id"] not in before]
    if before:
        print(f"segment: {len(cases) - len(todo)} case(s) done before, {len(todo)} to go")
    chunks = split(todo, _chunk_size(len(todo), workers, SEGMENT_CHUNK))
    work = partial(segment_work, method=method, seed=args.seed, out=str(out), skip_bad=skip_bad)
    got: dict[str, dict[str, Any]] = dict(before)
    failed: list[tuple[str, str]] = []
    bar = tqdm(total=len(todo), desc=method, unit="box", disable=len(todo) < 2, leave=False)
    if chunks:
        with make_engine(setup, args, device=device) as engine:
            if workers > 1 or engine.describe != "this process":
                tqdm.write(f"segment: the cases run in {engine.describe}")
            for res in engine.map(work, chunks):
                chunk = chunks[res.index]
                if res.error is not None:  # the chunk as a whole (a worker died, ...)
                    if not skip_bad:
                        raise res.error
                    rows, bad = [], [(c["case_id"], _one_line(res.error)) for c in chunk]
                else:
                    rows, bad = res.value
                for cid, msg in bad:
                    tqdm.write(f"skipped case {cid}: {msg}")
                failed += bad
                got.update((r["case_id"], r) for r in rows)
                if progress:
                    progress.append(rows)
                bar.update(len(chunk))
    bar.close()
    rows = [got[c["case_id"]] for c in cases if c["case_id"] in got]
    if progress:
        progress.finish()
    return rows, failed


def _one_line(exc: BaseException) -> str:
    """A per-case error message: a FlipsegError's own words, else ``Type: words``."""
    msg = str(exc) if isinstance(exc, FlipsegError) else f"{type(exc).__name__}: {exc}"
    return msg.splitlines()[0] if msg.strip() else type(exc).__name__


def _write_error_rows(path: Path, errors: list[tuple[str, str]]) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["case_id", "error"])
    w.writerows(errors)
    atomic_write_text(path, buf.getvalue())


def segment_work(state: dict[str, Any], chunk: list[dict[str, Any]], *, method: str, seed: int,
                 out: str, skip_bad: bool) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """In a worker: segment a chunk of cases and write their files; returns their rows of
    ``segment.json`` and the cases that failed. A chunk that fails is run again case by
    case, so one bad case cannot sink the others (``skip_bad``; without it the error is
    raised, as for ``segment --image``)."""
    seg = state[method]
    try:
        return _segment_and_write(seg, method, chunk, seed, Path(out)), []
    except Exception:
        if not skip_bad:
            raise
    rows, failed = [], []
    for c in chunk:
        try:
            rows += _segment_and_write(seg, method, [c], seed, Path(out))
        except Exception as exc:  # noqa: BLE001 - reported per case, the run goes on
            failed.append((c["case_id"], _one_line(exc)))
    return rows, failed


def _segment_and_write(seg: Any, method: str, cases: list[dict[str, Any]], seed: int,
                       out: Path) -> list[dict[str, Any]]:
    """Masks (+ flip's flipped image and curves, flip-vote's voters) of ``cases``, written
    under ``out``; returns their rows of ``segment.json``."""
    rows = []
    ims, bxs = [c["image"] for c in cases], [c["box"] for c in cases]
    if method == "flip":
        results = seg.model.segment_many(
            ims, bxs, gt_masks=[c.get("mask") for c in cases], progress=False, seed=seed,
            batch_size=seg.batch_size,
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

        # flip-vote: also a picture of its three voters and their vote
        parts = seg.vote_parts(ims, bxs, seed=seed) if hasattr(seg, "vote_parts") else None
        preds = parts[method] if parts else seg.segment_many(ims, bxs, seed=seed)
        for i, (c, m) in enumerate(zip(cases, preds)):
            _write_result(out, c, np.asarray(m, bool))
            if parts:
                save_png(out / f"{c['case_id']}_voters.png",
                         mask_panels(c["image"], c["box"], {k: v[i] for k, v in parts.items()},
                                     gt=c.get("mask")))
            rows.append({"case_id": c["case_id"], "method": method, "box": str(c["box"])})
    for c, row in zip(cases, rows):
        if "given_box" in c:  # --refine-box: the box segmented above is the refined one
            row["given_box"] = str(c["given_box"])
    return rows


def run_train(args: argparse.Namespace) -> int:
    """``flipseg train RECIPE``: the recipe registered under that name (``--fresh`` first
    moves an earlier run aside)."""
    from flipseg.methods import recipes
    from flipseg.registry import resolve
    from flipseg.runs import start_afresh

    spec = recipes().get(args.recipe)
    if spec is None:
        raise FlipsegError(f"unknown training recipe {args.recipe!r}")
    if getattr(args, "device", None) is not None:
        _check_device(args)  # `--device cuda` without a GPU: a one-line error before any work
    from flipseg.methods.training import launched_world_size

    if launched_world_size() > 1:
        return _run_train_distributed(args, spec)
    if getattr(args, "fresh", False):
        start_afresh(args.out)
    return int(resolve(spec.train)(args))


def _run_train_distributed(args: argparse.Namespace, spec: Any) -> int:
    """``torchrun --nproc_per_node N -m flipseg.cli train RECIPE ...``: every process joins the
    process group; rank 0 alone moves an old run aside (``--fresh``), shows progress and
    prints; the recipe trains with DistributedDataParallel (docs/scale.md)."""
    import os
    import sys

    from flipseg.methods import recipes
    from flipseg.methods.training import close_distributed, init_distributed
    from flipseg.registry import resolve
    from flipseg.runs import start_afresh

    if not spec.distributed:
        able = ", ".join(sorted(r for r, s in recipes().items() if s.distributed))
        raise FlipsegError(f"flipseg train {args.recipe} runs in one process, not under torchrun "
                           f"(recipes that do: {able}; Flip scales with more parallel "
                           "environments, see docs/scale.md)")
    rank = init_distributed(getattr(args, "device", None))
    if rank == 0 and getattr(args, "fresh", False):
        start_afresh(args.out)
    if rank != 0:
        args.no_progress = True
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - rank 0 alone prints
    import torch.distributed as dist

    dist.barrier()
    code = int(resolve(spec.train)(args))
    close_distributed()
    return code


def run_classify(args: argparse.Namespace) -> int:
    from flipseg.methods.lanet.cli import classify_cli

    return int(classify_cli(args))


def run_methods(args: argparse.Namespace) -> int:
    """``flipseg methods``: the registry as a table (and each method's ``--set`` options)."""
    import dataclasses

    from flipseg.methods import default_method, method_names, method_spec
    from flipseg.registry import resolve
    from flipseg.runs import config_field_types

    defaults = {default_method(2): "2D", default_method(3): "3D"}
    print("| method | kind | dims | --model | train | what |")
    print("|---|---|---|---|---|---|")
    for name in method_names():
        s = method_spec(name)
        tag = f" (default {defaults[name]})" if name in defaults else ""
        print(f"| {name}{tag} | {s.kind} | {'/'.join(map(str, s.dims))} | {s.model} | "
              f"{s.recipe or ''} | {s.help} |")
    if args.options:
        for name in method_names():
            s = method_spec(name)
            if s.config is None:
                continue
            cls = resolve(s.config)
            types = config_field_types(cls)
            opts = ", ".join(f"{f.name}={f.default!r} ({getattr(types[f.name], '__name__', types[f.name])})"
                             for f in dataclasses.fields(cls))
            print(f"{name}: --set {opts}")
    return 0


def run_label(args: argparse.Namespace) -> int:
    from flipseg.label import run_label as label

    return int(label(args))


def run_serve(args: argparse.Namespace) -> int:
    from flipseg.serve import run_serve as serve

    return int(serve(args))


def run_convert_model(args: argparse.Namespace) -> int:
    from flipseg.convert import run_convert_model as convert

    return int(convert(args))

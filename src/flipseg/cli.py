"""The ``flipseg`` command.

Sub-commands: ``demo``, ``evaluate``, ``segment``, ``label``, ``serve``, ``classify``,
``train``, ``methods``, ``convert-model``. Methods, training recipes and their options come from the method
registry (:mod:`flipseg.methods`). A user mistake is printed as one line (``flipseg:
error: ...``) with exit code 2; a run that finished but skipped bad cases exits with 3.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Sequence

from flipseg.errors import FlipsegError

__all__ = ["main", "build_parser"]

EXIT_USER_ERROR = 2
EXIT_SKIPPED_CASES = 3
_BOX_VALUE = re.compile(r"^-?\d+(\.\d+)?(,-?\d+(\.\d+)?)+$")
_DEFAULT_HELP = "default: flip-vote for 2D images, flip for 3D volumes"


def _method_help(names: Sequence[str] | None, what: str) -> str:
    listed = f"; one of: {', '.join(names)}" if names else " (`flipseg methods` lists them)"
    return f"{what}{listed}"


def _add_refine_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--refine-box", nargs="?", const="default", default=None, metavar="MODEL",
                   help="tighten each box with a box refiner before segmenting (2D, box-prompted "
                        "methods): the shipped one, or a `flipseg train box-refiner` run")


def _add_resize_masks_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resize-masks", action="store_true",
                   help="resize a mask of another size than its image by nearest neighbour "
                        "(with a warning) instead of stopping with an error (--dataset folder, "
                        "datalist, --mask)")


def _add_method_args(p: argparse.ArgumentParser, names: Sequence[str] | None, *,
                     several: bool) -> None:
    """``--method``, ``--model``, ``--set`` and every registered method's own options."""
    from flipseg.methods import recipes  # specs only: cheap
    from flipseg.registry import METHODS

    what = "method name (repeatable)" if several else "method (default: the one that trained " \
        "--model, else " + _DEFAULT_HELP.split(": ", 1)[1] + ")"
    p.add_argument("--method", action="append" if several else "store", default=None,
                   help=_method_help(names, what))
    p.add_argument("--model", default=None, help="trained model (run folder or model file)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an inference option of the method, e.g. --set segments=500 --set "
                        "prior_fusion=0.3 (flip); `flipseg methods --options` lists them")
    recipes()
    seen: set[str] = set()
    for name in METHODS.names():
        for flag, kw, help_text in METHODS.get(name).options:
            if flag not in seen:
                seen.add(flag)
                p.add_argument(flag, dest=kw, default=None, help=f"({name}) {help_text}")


def build_parser(method_names: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``flipseg`` parser; ``method_names`` (when known) are listed in ``--help``."""
    from flipseg.devices import add_device_arg
    from flipseg.engines.options import add_engine_args
    from flipseg.methods import recipes
    from flipseg.registry import resolve
    from flipseg.runs import add_data_args

    parser = argparse.ArgumentParser(prog="flipseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="segment the bundled sample images from their boxes")
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--method", default=None, help=_method_help(method_names, f"method ({_DEFAULT_HELP})"))

    p = sub.add_parser("evaluate", help="score a method on a dataset")
    add_data_args(p, default="samples")
    _add_method_args(p, method_names, several=True)
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two methods with paired t-tests")
    _add_resize_masks_arg(p)
    p.add_argument("--box-shift", default=None, help="box shift level: 0-10, 10-20 or 20-30")
    p.add_argument("--repeats", type=int, default=3, help="shifted copies per box")
    _add_refine_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder (with --num-parts: "
                   "OUT/part-I-of-K)")
    p.add_argument("--no-progress", action="store_true")
    add_device_arg(p)
    add_engine_args(p)

    p = sub.add_parser("segment", help="segment one image from its box(es) (whole-image models: no "
                       "box needed), or a whole dataset")
    _add_method_args(p, method_names, several=False)
    p.add_argument("--image", default=None, help="image or volume file")
    p.add_argument("--box", action="append", default=None, metavar="X0,Y0,X1,Y1",
                   help="x0,y0,x1,y1 (2D) or x0,y0,x1,y1,z0,z1 (3D), in pixels; repeat it for "
                        "several lesions of one image (each box is segmented on its own and "
                        "written as <image>-box<K>_*)")
    p.add_argument("--mask", default=None, help="optional ground-truth mask (adds Dice to curves)")
    _add_refine_arg(p)
    add_data_args(p)
    _add_resize_masks_arg(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    add_device_arg(p)
    add_engine_args(p)

    p = sub.add_parser("label", help="a mask for every box of a folder, a COCO file or a DICOM "
                       "folder, written as png, nifti, coco, dicom-seg and/or an nnU-Net dataset")
    p.add_argument("--images", default=None, help="folder of images (PNG, JPEG, TIFF, NIfTI, "
                   "DICOM files or series sub-folders), a folder dataset or COCO export, or a "
                   "COCO / datalist .json")
    p.add_argument("--boxes", default=None, help="the boxes: COCO .json (CVAT, Label Studio), "
                   "MONAI/Decathlon datalist .json or boxes.csv (case_id,x0,y0,x1,y1)")
    add_data_args(p)
    _add_method_args(p, method_names, several=False)
    p.add_argument("--format", default="png", help="png, nifti, coco, dicom-seg, nnunet; one or "
                   "several, comma-separated (default: png)")
    p.add_argument("--ignore-disagreement", action="store_true", help="nnunet: pixels where "
                   "flip-vote's voters disagree get the label 'ignore'")
    p.add_argument("--nnunet-id", type=int, default=501, help="nnU-Net dataset id (default 501)")
    p.add_argument("--nnunet-name", default="Lesions", help="nnU-Net dataset name")
    p.add_argument("--out", required=True, help="output folder (a re-run skips the boxes done)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    add_device_arg(p)
    add_engine_args(p)

    p = sub.add_parser("serve", help="a local web page: draw boxes, see their masks, correct, "
                       "accept or reject them (review queue by quality score), export them")
    p.add_argument("data", help="what to review, as `flipseg label --images` takes it: a folder of "
                   "images (with or without boxes), a folder dataset or COCO export, a COCO / "
                   "datalist .json, a DICOM folder")
    p.add_argument("--boxes", default=None, help="the boxes: COCO .json, datalist .json or boxes.csv")
    p.add_argument("--data-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="frame=K|all (multi-frame DICOM), category=NAME (COCO)")
    p.add_argument("--out", default=None, help="review state, accepted masks and exports "
                   "(default: DATA-review beside DATA); a restart goes on from it")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: "
                   "this machine only; any other needs a token)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one)")
    p.add_argument("--token", default=None, help="the token every request must carry (default: "
                   "none on 127.0.0.1, generated and printed on other addresses)")
    p.add_argument("--method", default=None, help=_method_help(method_names, "box method the page "
                   f"starts with ({_DEFAULT_HELP})"))
    p.add_argument("--quality-model", default=None, help="fitted quality model .json (default: "
                   "the shipped one)")
    p.add_argument("--max-upload-mb", type=float, default=64.0, help="largest request (default 64)")
    p.add_argument("--seed", type=int, default=0)
    add_device_arg(p)

    p = sub.add_parser("classify", help="benign/malignant probabilities, lesion map and Grad-CAM "
                       "of a trained LA-Net, for one image or a dataset")
    add_data_args(p)
    p.add_argument("--model", required=True, help="LA-Net run folder or model file")
    p.add_argument("--image", default=None, help="image file")
    p.add_argument("--no-gradcam", dest="gradcam", action="store_false",
                   help="skip the Grad-CAM pictures")
    p.add_argument("--out", required=True, help="output folder")

    p = sub.add_parser("train", help="train a method")
    tsub = p.add_subparsers(dest="recipe", required=True)
    for recipe, spec in sorted(recipes().items()):
        t = tsub.add_parser(recipe, help=spec.recipe_help or spec.help)
        resolve(spec.add_train_args)(t)
        t.add_argument("--fresh", action="store_true",
                       help="move an earlier run in --out aside (OUT.replaced-DATE) and start afresh")
        add_device_arg(t)

    p = sub.add_parser("methods", help="list the registered methods (name, kind, dims, model)")
    p.add_argument("--options", action="store_true", help="also list each method's --set options")

    p = sub.add_parser("convert-model", help="convert an old pickle model file (.pt) to a "
                       "safetensors model file; it runs the pickle's code: only for files you trust")
    p.add_argument("src", help="old model file")
    p.add_argument("--out", default=None, help="new file (default: SRC with .safetensors)")
    return parser


def _fix_negative_boxes(argv: list[str]) -> list[str]:
    """``--box -20,5,30,40`` -> ``--box=-20,5,30,40`` (argparse would take it for an option)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--box" and i + 1 < len(argv) and _BOX_VALUE.match(argv[i + 1]):
            out.append(f"--box={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _wants_method_list(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv) and any(
        a in ("demo", "evaluate", "segment", "label", "serve") for a in argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = _fix_negative_boxes(list(sys.argv[1:] if argv is None else argv))
    try:
        names = None
        if _wants_method_list(argv):
            from flipseg.methods import method_names

            names = method_names(kind="box") + method_names(kind="image")
        parser = build_parser(names)
        args = parser.parse_args(argv)
        from flipseg import commands

        return commands.run(args)
    except FlipsegError as exc:
        print(f"flipseg: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("flipseg: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

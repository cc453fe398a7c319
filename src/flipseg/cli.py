"""The ``flipseg`` command.

Sub-commands: ``demo``, ``evaluate``, ``segment``, ``classify``, ``train``. A user mistake is
printed as one line (``flipseg: error: ...``) with exit code 2; a run that
finished but skipped bad cases exits with 3.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from flipseg.errors import FlipsegError

__all__ = ["main", "build_parser"]

EXIT_USER_ERROR = 2
EXIT_SKIPPED_CASES = 3


def _add_data_args(p: argparse.ArgumentParser, *, default: str | None = None) -> None:
    p.add_argument("--dataset", default=default,
                   help="busi, bus-bra, folder, stu, samples, phantom2d, phantom3d")
    p.add_argument("--data-root", default=None, help="dataset folder (default: ../shared/data/...)")
    p.add_argument("--fold", type=int, default=None,
                   help="test fold: BUS-BRA's official ones; for busi, folder and stu a "
                        "patient-level split into --data-opt cv=K folds (default 5)")
    p.add_argument("--split", "--part", dest="part", default=None,
                   help="which part of the dataset: all, train, test, val (default: test when a "
                        "fold is given, else all)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N cases")
    p.add_argument("--data-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. --data-opt n=4 --data-opt shape=24,48,48 (phantoms)")


def _add_refine_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--refine-box", nargs="?", const="default", default=None, metavar="MODEL",
                   help="tighten each box with a box refiner before segmenting (2D, box-prompted "
                        "methods): the shipped one, or a `flipseg train box-refiner` run")


def _add_vote_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vote-model", default=None, metavar="RUN",
                   help="flip-vote's third voter: a `flipseg train boxinst` run, e.g. trained on "
                        "your own boxes (default: the shipped BoxInst U-Net)")


def _add_box_recipe(tsub: Any, name: str, help_text: str, config_name: str, example: str,
                    val_help: str) -> None:
    """A ``flipseg train`` recipe that learns from the boxes of a 2D dataset (boxinst,
    box-refiner): dataset options, ``--out``, ``--set``, ``--val-cases``."""
    r = tsub.add_parser(name, help=help_text)
    _add_data_args(r, default="bus-bra")
    r.add_argument("--out", required=True, help="run folder (re-run the command to resume)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override one {config_name} field, e.g. {example}")
    r.add_argument("--val-cases", type=int, default=64, help=val_help)
    r.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flipseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="segment the bundled sample images from their boxes")
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--method", default=None, help="method (default: flip when a model is shipped)")

    p = sub.add_parser("evaluate", help="score a method on a dataset")
    _add_data_args(p, default="samples")
    p.add_argument("--method", action="append", default=None, help="method name (repeatable)")
    p.add_argument("--model", default=None, help="trained model (run folder or file) for the method")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two methods with paired t-tests")
    p.add_argument("--box-shift", default=None, help="box shift level: 0-10, 10-20 or 20-30")
    p.add_argument("--repeats", type=int, default=3, help="shifted copies per box")
    _add_refine_arg(p)
    _add_vote_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("segment", help="segment one image from its box (whole-image models: no box "
                       "needed), or a whole dataset")
    p.add_argument("--method", default=None,
                   help="method (default: the one that trained --model, else flip)")
    p.add_argument("--model", default=None, help="trained model (run folder or file)")
    p.add_argument("--image", default=None, help="image or volume file")
    p.add_argument("--box", default=None, help="x0,y0,x1,y1 (2D) or x0,y0,x1,y1,z0,z1 (3D)")
    p.add_argument("--mask", default=None, help="optional ground-truth mask (adds Dice to curves)")
    _add_refine_arg(p)
    _add_vote_arg(p)
    _add_data_args(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("classify", help="benign/malignant probabilities, lesion map and Grad-CAM "
                       "of a trained LA-Net, for one image or a dataset")
    _add_data_args(p)
    p.add_argument("--model", required=True, help="LA-Net run folder or model file")
    p.add_argument("--image", default=None, help="image file")
    p.add_argument("--no-gradcam", dest="gradcam", action="store_false",
                   help="skip the Grad-CAM pictures")
    p.add_argument("--out", required=True, help="output folder")

    p = sub.add_parser("train", help="train a method")
    tsub = p.add_subparsers(dest="recipe", required=True)
    t = tsub.add_parser("flip", help="Flip Learning from boxes only")
    _add_data_args(t, default="bus-bra")
    t.add_argument("--out", required=True, help="run folder (re-run the command to resume)")
    t.add_argument("--dims", type=int, choices=(2, 3), default=None,
                   help="2 (BUS images) or 3 (ABUS volumes, with the 3D CPU preset); default: "
                        "that of the dataset")
    t.add_argument("--config", default=None, help="JSON file of FlipConfig fields")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one FlipConfig field, e.g. --set agents=2 --set levels=100,200")
    t.add_argument("--preset", choices=("cpu", "paper"), default=None,
                   help="cpu (default: compact networks, our additions on) or paper (the "
                        "journal paper's settings; days of CPU time)")
    t.add_argument("--classifier-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one ClassifierConfig field, e.g. --classifier-set epochs=20")
    t.add_argument("--classifier-epochs", type=int, default=None)
    t.add_argument("--classifier-network", default=None, help="compact or resnet18")
    t.add_argument("--val-cases", type=int, default=64, help="held-out boxes for validation")
    t.add_argument("--no-progress", action="store_true")
    _add_box_recipe(tsub, "boxinst", "box-supervised U-Net (BoxInst projection + pairwise losses; "
                    "--set supervision=pseudo fits it to flip-vote's masks of the boxes, "
                    "supervision=mask to the true masks)",
                    "BoxInstConfig", "--set epochs=10 --set supervision=pseudo",
                    "held-out boxes (their masks, when known, give the validation Dice)")
    _add_box_recipe(tsub, "box-refiner", "box refiner: learns to tighten rough boxes (for "
                    "--refine-box), from boxes only", "BoxRefineConfig", "--set epochs=10",
                    "held-out boxes, shifted, for the validation edge error")
    from flipseg.methods.cam_mt.cli import add_cam_mt_parser
    from flipseg.methods.hybrid.cli import add_hybrid_parser
    from flipseg.methods.lanet.cli import add_lanet_parser
    from flipseg.methods.pseudo.cli import add_pseudo_parser

    add_pseudo_parser(tsub)
    add_lanet_parser(tsub)
    add_cam_mt_parser(tsub)
    add_hybrid_parser(tsub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from flipseg.commands import run_demo

            return run_demo(args)
        if args.command == "evaluate":
            from flipseg.commands import run_evaluate

            return run_evaluate(args)
        if args.command == "segment":
            from flipseg.commands import run_segment

            return run_segment(args)
        if args.command == "classify":
            from flipseg.methods.lanet.cli import classify_cli

            return classify_cli(args)
        if args.command == "train":
            from flipseg.commands import run_train

            return run_train(args)
    except FlipsegError as exc:
        print(f"flipseg: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("flipseg: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USER_ERROR


def _json_default(o: Any) -> Any:
    return str(o)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_json_default)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Pieces every recipe shares that must not import PyTorch.

The CLI parser imports the recipes' packages and ``cli`` modules, so this module
(lazy package exports, the dataclass-configuration base, the ``flipseg train
RECIPE`` argument and run-config helpers) keeps to the standard library and
imports anything heavier inside the functions that need it. The PyTorch side
(checkpoints, logs, whole-image prediction) is :mod:`flipseg.methods.training`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence, TypeVar

from flipseg.errors import FlipsegError

__all__ = [
    "RecipeConfig",
    "add_data_args",
    "add_run_args",
    "check_options",
    "check_recipe_args",
    "config_from_dict",
    "config_to_dict",
    "lazy_exports",
    "load_recipe_samples",
    "resolve_run_config",
]

C = TypeVar("C")


# ------------------------------------------------------------- lazy packages
def lazy_exports(package: str, where: Mapping[str, str]) -> tuple[list[str], Callable[[str], Any]]:
    """``__all__`` and a module ``__getattr__`` that import each name on first use.

    Parameters
    ----------
    package
        ``__name__`` of the package whose ``__init__`` calls this.
    where
        Exported name -> the module defining it.

    Returns
    -------
    (sorted names, ``__getattr__``); the package assigns both::

        __all__, __getattr__ = lazy_exports(__name__, {"Name": "pkg.module", ...})

    A name, once imported, is cached in the package so ``__getattr__`` is not
    called for it again. This keeps ``flipseg --help`` from loading PyTorch.
    """
    where = dict(where)

    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(import_module(where[name]), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return sorted(where), __getattr__


# ------------------------------------------------------------ configurations
def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass configuration as a JSON-ready dict (tuples, nested ones too, as lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def config_from_dict(cls: type[C], d: Mapping[str, Any], what: str = "", *, strict: bool = True) -> C:
    """``cls(**d)`` for a dataclass configuration ``cls``.

    Parameters
    ----------
    cls
        The dataclass.
    d
        Saved or user-given field values.
    what
        The recipe's word in messages (``unknown pseudo option ...``).
    strict
        Unknown keys fail with the list of the known ones; otherwise they are
        dropped (configurations saved by another version still load).

    Raises
    ------
    FlipsegError
        An unknown key (``strict``), or whatever ``cls`` raises for a bad value.
    """
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - known)
    if unknown and strict:
        raise FlipsegError(f"unknown {what} option {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return cls(**{k: v for k, v in d.items() if k in known})


def check_options(what: str, cfg: Any, checks: Mapping[str, bool | tuple[bool, str]]) -> None:
    """Raise for the first failing check of a configuration's fields.

    Parameters
    ----------
    what
        The recipe's word in messages (``invalid pseudo option ...``).
    cfg
        The configuration (the failing field's value goes into the message).
    checks
        Field name -> ``ok`` or ``(ok, what it must be)``.

    Raises
    ------
    FlipsegError
        ``invalid WHAT option NAME=VALUE`` (``(must be ...)`` when said).
    """
    for name, check in checks.items():
        ok, need = check if isinstance(check, tuple) else (check, "")
        if not ok:
            must = f" (must be {need})" if need else ""
            raise FlipsegError(f"invalid {what} option {name}={getattr(cfg, name)!r}{must}")


class RecipeConfig:
    """Base of the recipes' dataclass configurations: ``to_dict``, ``from_dict``, checks.

    A subclass (a ``@dataclass``) sets ``option_word`` (the recipe's word in
    messages) and, to drop unknown keys instead of refusing them,
    ``strict_keys = False``; its ``__post_init__`` calls :meth:`check_options`.
    """

    option_word: ClassVar[str] = ""
    strict_keys: ClassVar[bool] = True

    def to_dict(self) -> dict[str, Any]:
        """The saved form (``config.json``): fields, tuples as lists."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """Build from a saved dict; unknown keys fail with the list of known ones
        (or are dropped, for ``strict_keys = False``)."""
        return config_from_dict(cls, d, cls.option_word, strict=cls.strict_keys)  # type: ignore[attr-defined]

    def check_options(self, checks: Mapping[str, bool | tuple[bool, str]]) -> None:
        """:func:`check_options` with this recipe's word."""
        check_options(self.option_word, self, checks)


# ------------------------------------------------------------ flipseg train
def add_data_args(
    parser: argparse.ArgumentParser,
    datasets: Sequence[str],
    fold_help: str = "BUS-BRA official fold held out as test (training uses the other folds)",
) -> None:
    """``--dataset``, ``--data-root`` and ``--fold`` of a ``flipseg train`` recipe.

    ``datasets``: the recipe's datasets, the two usual ones first; ``fold_help``: what
    ``--fold`` does in this recipe.
    """
    parser.add_argument("--dataset", default=None,
                        help=f"{datasets[0]} or {datasets[1]} (also: {', '.join(datasets[2:])})")
    parser.add_argument("--data-root", default=None, help="dataset folder (default: ../shared/data/...)")
    parser.add_argument("--fold", type=int, default=None, help=fold_help)


def add_run_args(parser: argparse.ArgumentParser, config_name: str, set_example: str) -> None:
    """``--out``, ``--set``, ``--limit``, ``--data-opt`` and ``--no-progress`` of a recipe.

    ``config_name``: the configuration class ``--set`` overrides; ``set_example``:
    e.g. ``--set epochs=5``.
    """
    parser.add_argument("--out", required=True, help="run folder (re-run the command to resume)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override one {config_name} field, e.g. {set_example}")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N cases")
    parser.add_argument("--data-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset option, e.g. --data-opt n=40 (phantom2d)")
    parser.add_argument("--no-progress", action="store_true")


def check_recipe_args(
    args: argparse.Namespace,
    datasets: Sequence[str],
    recipe: str,
    checks: Sequence[tuple[bool, str]] = (),
) -> str:
    """The dataset name of ``args``, checked with the recipe's own ``checks`` and ``--limit``.

    Parameters
    ----------
    args
        Parsed ``flipseg train RECIPE`` arguments.
    datasets
        The datasets the recipe reads.
    recipe
        Its name, for messages.
    checks
        ``(bad, message)`` pairs, tested in order after the dataset name.

    Raises
    ------
    FlipsegError
        No or an unknown dataset, a failing check, or ``--limit`` below 1.
    """
    name = (args.dataset or "").lower()
    if not name:
        raise FlipsegError(f"give --dataset ({', '.join(datasets)})")
    if name not in datasets:
        raise FlipsegError(f"unknown dataset {args.dataset!r} for {recipe}; choose one of: "
                           f"{', '.join(datasets)}")
    for bad, message in checks:
        if bad:
            raise FlipsegError(message)
    if args.limit is not None and args.limit < 1:
        raise FlipsegError(f"--limit must be >= 1, got {args.limit}")
    return name


def resolve_run_config(cls: type[C], args: argparse.Namespace, what: str,
                       flags: Mapping[str, Any] | None = None) -> C:
    """The run folder's saved ``config.json`` (when resuming) with the overrides on top.

    Parameters
    ----------
    cls
        The configuration class (a :class:`RecipeConfig`).
    args
        Parsed arguments: ``out`` (run folder) and ``set`` (``KEY=VALUE`` items).
    what
        The recipe's word in messages.
    flags
        Field -> value of the recipe's own flags; ``None`` values are not overrides.

    Raises
    ------
    FlipsegError
        An unreadable saved config, an unknown key or a bad value. A run folder
        holding a run with another configuration is refused when training starts
        (:func:`flipseg.methods.training.open_run`).
    """
    from flipseg.methods.flip.pipeline import parse_overrides

    overrides = parse_overrides(args.set, cls, what)
    overrides.update({k: v for k, v in (flags or {}).items() if v is not None})
    saved = Path(args.out) / "config.json"
    base: dict[str, Any] = {}
    if saved.exists():
        try:
            base = json.loads(saved.read_text())
        except (OSError, ValueError) as exc:
            raise FlipsegError(f"cannot read {saved}: {exc}".splitlines()[0]) from None
    return cls.from_dict({**base, **overrides})  # type: ignore[attr-defined]


def load_recipe_samples(
    args: argparse.Namespace, name: str, *, with_val: bool = False
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The cases of ``flipseg train RECIPE``: ``--data-root``, ``--data-opt``, ``--fold``, ``--limit``.

    Without ``--fold`` every case is read (part ``all``); with it, the fold's
    training part (and, with ``with_val``, its validation part). Cases that fail
    to load are reported and skipped; ``--limit`` keeps the first N of each part.

    Returns
    -------
    (part, samples, validation samples: empty unless ``with_val`` and ``--fold``)
    """
    from flipseg.commands import parse_data_opts
    from flipseg.data import load_dataset

    part = "train" if args.fold is not None else "all"
    opts = parse_data_opts(getattr(args, "data_opt", None) or [])
    if args.fold is not None:
        opts["fold"] = args.fold
    errors: list = []
    samples = load_dataset(name, args.data_root, part=part, errors=errors, **opts)
    val: list = []
    if with_val and args.fold is not None:
        val = load_dataset(name, args.data_root, part="val", errors=errors, **opts)
    for case_id, msg in errors:
        print(f"skipped case {case_id}: {msg}")
    if args.limit is not None:
        samples, val = samples[: args.limit], val[: args.limit]
    return part, samples, val


def read_box_cases(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """The cases a recipe trained from boxes learns from: ``--fold``'s training part (else
    the whole dataset), load errors printed and skipped, cases without a box dropped.

    Returns (samples, dataset name). Raises :class:`FlipsegError` under 4 boxes.
    """
    from flipseg.commands import load_cases

    args.part = args.part or ("train" if args.fold is not None else "all")
    samples, errors, dataset = load_cases(args)
    for err in errors:
        print(f"skipped case {err[0]}: {err[1]}")
    samples = [s for s in samples if s.get("box") is not None]
    if len(samples) < 4:
        raise FlipsegError(f"need at least 4 boxes to train, dataset {dataset!r} has {len(samples)}")
    return samples, dataset


def hold_out_boxes(args: argparse.Namespace, samples: Sequence[dict[str, Any]], dataset: str,
                   seed: int, what: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``--val-cases`` of the boxes (at most a tenth) held out by patient; writes the run's
    ``data.json`` and prints the progress line (``training <what> on N boxes ...``).

    Returns (training samples, validation samples).
    """
    from flipseg.data.splits import split_by_patient
    from flipseg.io_utils import atomic_write_text

    n_val = min(args.val_cases, max(1, len(samples) // 10))
    frac = n_val / len(samples)
    train_s, val_s = split_by_patient(samples, (1 - frac, frac), seed=seed)
    atomic_write_text(Path(args.out) / "data.json", json.dumps(
        {"dataset": dataset, "fold": args.fold, "part": args.part, "n_train": len(train_s),
         "n_val": len(val_s)}, indent=2))
    print(f"training {what} on {len(train_s)} boxes ({len(val_s)} held out) -> {args.out}")
    return train_s, val_s


def run_box_recipe(args: argparse.Namespace, cfg_cls: type[C], word: str, what: str,
                   train: Callable[..., Path]) -> int:
    """``flipseg train boxinst`` / ``box-refiner``: recipes that learn from the boxes of a 2D
    dataset.

    Reads the cases (:func:`read_box_cases`), resumes the run folder's configuration
    unless ``--set`` is given, holds out ``--val-cases`` (:func:`hold_out_boxes`) and
    calls ``train(train, val, cfg, out, progress=...)``.

    Parameters
    ----------
    args
        Parsed arguments of the recipe.
    cfg_cls
        Its configuration class; ``word`` names the recipe in messages and ``--set``
        errors, ``what`` in the progress line (e.g. ``"the box refiner"``).
    """
    import numpy as np

    from flipseg.methods.flip.pipeline import parse_overrides

    samples, dataset = read_box_cases(args)
    if np.ndim(samples[0]["image"]) != 2:
        raise FlipsegError(f"{word} trains on 2D images; dataset {dataset!r} holds volumes")
    saved = Path(args.out) / "config.json"
    if saved.exists() and not args.set:
        cfg = cfg_cls.from_dict(json.loads(saved.read_text()))  # type: ignore[attr-defined]
    else:
        cfg = cfg_cls(**parse_overrides(args.set, cfg_cls, word))
    train_s, val_s = hold_out_boxes(args, samples, dataset, cfg.seed, what)  # type: ignore[attr-defined]
    path = train(train_s, val_s, cfg, args.out, progress=not args.no_progress)
    print(f"model written to {path}")
    return 0

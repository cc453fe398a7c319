"""Pieces the recipes share that must not import PyTorch.

The CLI parser imports the recipes' argument functions, so this module (lazy package
exports, the dataclass-configuration base, ``flipseg train RECIPE`` argument helpers)
keeps to the standard library. Case loading, overrides, configuration resolution and
run records are :mod:`flipseg.runs`; the PyTorch side (checkpoints, logs, whole-image
prediction) is :mod:`flipseg.methods.training`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence, TypeVar

from flipseg import runs
from flipseg.errors import FlipsegError

__all__ = [
    "RecipeConfig",
    "add_data_args",
    "add_run_args",
    "check_options",
    "config_from_dict",
    "config_to_dict",
    "lazy_exports",
    "resolve_run_config",
    "run_box_recipe",
    "train_device",
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
    legacy_values: ClassVar[Mapping[str, Any]] = {}
    """Fields added after configurations of the recipe were first saved, with the values
    that reproduce how those were trained (not today's defaults): :meth:`migrate` fills
    them into a saved configuration that lacks them."""

    def to_dict(self) -> dict[str, Any]:
        """The saved form (``config.json``): fields, tuples as lists."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """Build from a saved dict; unknown keys fail with the list of known ones
        (or are dropped, for ``strict_keys = False``)."""
        return config_from_dict(cls, d, cls.option_word, strict=cls.strict_keys)  # type: ignore[attr-defined]

    @classmethod
    def migrate(cls, d: dict[str, Any], version: int) -> dict[str, Any]:
        """A configuration saved at ``version`` as one of ``version + 1``
        (:func:`flipseg.runs.read_config`): the :attr:`legacy_values` it lacks filled in."""
        return {**{k: v for k, v in cls.legacy_values.items() if k not in d}, **d}

    @classmethod
    def from_saved(cls: type[C], d: Mapping[str, Any]) -> C:
        """A saved configuration (a run's ``config.json`` or a model file's), migrated by
        :meth:`migrate`."""
        return runs.read_config(cls, d)

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


def resolve_run_config(cls: type[C], args: argparse.Namespace, what: str,
                       flags: Mapping[str, Any] | None = None,
                       preset: Mapping[str, Any] | None = None) -> C:
    """A recipe's configuration: ``preset`` < the run folder's saved ``config.json`` (when
    resuming) < ``--config`` < ``--set`` and the recipe's own ``flags``
    (:func:`flipseg.runs.resolve_config`).

    A run folder holding a checkpoint made with another configuration is refused when
    training starts (:func:`flipseg.methods.training.open_run`).
    """
    return runs.resolve_config(cls, preset=preset, saved=Path(args.out) / "config.json",
                               file=getattr(args, "config", None), overrides=args.set,
                               flags=flags, what=what)


def run_box_recipe(args: argparse.Namespace, cfg_cls: type[C], word: str, what: str,
                   train: Callable[..., Path]) -> int:
    """``flipseg train boxinst`` / ``box-refiner``: recipes that learn from the boxes of a 2D
    dataset.

    Reads the cases (:func:`flipseg.runs.read_box_cases`), resolves the configuration
    (:func:`resolve_run_config`), holds out ``--val-cases`` and records the run's data
    (:func:`flipseg.runs.hold_out_boxes`), then calls ``train(train, val, cfg, out,
    progress=..., device=...)`` (``--device``, default ``auto``).

    Parameters
    ----------
    args
        Parsed arguments of the recipe.
    cfg_cls
        Its configuration class; ``word`` names the recipe in messages and ``--set``
        errors, ``what`` in the progress line (e.g. ``"the box refiner"``).
    """
    import numpy as np

    samples, dataset = runs.read_box_cases(args)
    if np.ndim(samples[0]["image"]) != 2:
        raise FlipsegError(f"{word} trains on 2D images; dataset {dataset!r} holds volumes")
    cfg = resolve_run_config(cfg_cls, args, word)
    train_s, val_s = runs.hold_out_boxes(args, samples, dataset, cfg.seed, what)  # type: ignore[attr-defined]
    path = train(train_s, val_s, cfg, args.out, progress=not args.no_progress,
                 device=train_device(args))
    print(f"model written to {path}")
    return 0


def train_device(args: argparse.Namespace) -> str:
    """The ``--device`` of ``flipseg train RECIPE`` (``auto`` when not given)."""
    return getattr(args, "device", None) or "auto"

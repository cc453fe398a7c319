"""Run plumbing shared by every recipe and command, below the methods.

- case loading from command-line arguments (:func:`load_cases`, :func:`read_box_cases`,
  :func:`load_recipe_samples`) and dataset options (:func:`parse_data_opts`);
- one typed ``KEY=VALUE`` parser for dataclass configurations (:func:`parse_overrides`,
  typed from the fields' annotations: ``Optional``, tuples, bools, literals) and one
  configuration resolution with a documented precedence and versioned, explicitly
  migrated saved configurations (:func:`resolve_config`, :func:`read_config`);
- run folders that remember their data (:func:`record_run_data`) and are moved aside, never
  deleted, by ``--fresh`` (:func:`start_afresh`).

Standard library at import time (the CLI parser imports this module); anything heavier is
imported inside the functions that need it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence, TypeVar, Union, get_args, get_origin

from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_write_text

__all__ = [
    "CONFIG_VERSION_KEY",
    "DATA_FILE",
    "add_box_recipe_args",
    "add_data_args",
    "case_ids_hash",
    "check_recipe_args",
    "hold_out_boxes",
    "load_cases",
    "load_recipe_samples",
    "parse_data_opts",
    "parse_overrides",
    "parse_value",
    "read_box_cases",
    "read_config",
    "record_run_data",
    "resolve_config",
    "start_afresh",
    "write_config",
]

C = TypeVar("C")

#: Key of the configuration's version in a saved ``config.json``.
CONFIG_VERSION_KEY = "config_version"
#: The run folder's record of the data it was trained on.
DATA_FILE = "data.json"


# --------------------------------------------------------------- arguments
def add_data_args(p: argparse.ArgumentParser, *, default: str | None = None) -> None:
    """``--dataset``, ``--data-root``, ``--fold``, ``--split``, ``--limit``, ``--data-opt``."""
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


def add_box_recipe_args(p: argparse.ArgumentParser, config_name: str, example: str,
                        val_help: str) -> None:
    """The options of a recipe that learns from the boxes of a dataset (flip, boxinst,
    box-refiner): dataset options, ``--out``, ``--set``, ``--val-cases``, ``--no-progress``."""
    add_data_args(p, default="bus-bra")
    p.add_argument("--out", required=True, help="run folder (re-run the command to resume)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override one {config_name} field, e.g. {example}")
    p.add_argument("--val-cases", type=int, default=64, help=val_help)
    p.add_argument("--no-progress", action="store_true")


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


def parse_data_opts(items: Sequence[str]) -> dict[str, Any]:
    """``["n=4", "shape=24,48,48"]`` -> ``{"n": 4, "shape": (24, 48, 48)}``."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise FlipsegError(f"--data-opt {item!r} must look like KEY=VALUE")
        key, val = item.split("=", 1)
        out[key.strip().replace("-", "_")] = _opt_value(val)
    return out


# ------------------------------------------------------------------- cases
def load_cases(args: argparse.Namespace, *, lazy: bool = False
               ) -> tuple[list[dict], list[tuple[str, str]], str]:
    """Read the dataset named by the CLI arguments (``--dataset``, ``--data-root``,
    ``--fold``, ``--split``, ``--limit``, ``--data-opt``). ``lazy``: an index whose images
    are read when used, where the reader can (:func:`flipseg.data.load_dataset`).

    Returns (samples, errors, dataset name). Cases that fail to load are returned as
    ``(case_id, message)`` errors instead of stopping the run.
    """
    from flipseg.data import load_dataset

    name = args.dataset
    if name is None:
        raise FlipsegError("give --dataset (busi, bus-bra, folder, stu, samples, phantom2d, phantom3d)")
    if args.limit is not None and args.limit < 1:
        raise FlipsegError(f"--limit must be >= 1, got {args.limit}")
    part = args.part or ("test" if args.fold is not None else "all")
    opts: dict[str, Any] = parse_data_opts(getattr(args, "data_opt", None) or [])
    if args.fold is not None:
        opts["fold"] = args.fold
    errors: list[tuple[str, str]] = []
    samples = load_dataset(name, args.data_root, part=part, errors=errors, lazy=lazy, **opts)
    if args.limit is not None:
        samples = samples[: args.limit]
    if not samples:
        raise FlipsegError(f"dataset {name!r} (part {part!r}) has no cases")
    return samples, errors, name


def read_box_cases(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """The cases a recipe trained from boxes learns from: ``--fold``'s training part (else
    the whole dataset), load errors printed and skipped, cases without a box dropped.

    Returns (samples, dataset name). Raises :class:`FlipsegError` under 4 boxes.
    """
    args.part = args.part or ("train" if args.fold is not None else "all")
    samples, errors, dataset = load_cases(args)
    for err in errors:
        print(f"skipped case {err[0]}: {err[1]}")
    samples = [s for s in samples if s.get("box") is not None]
    if len(samples) < 4:
        raise FlipsegError(f"need at least 4 boxes to train, dataset {dataset!r} has {len(samples)}")
    return samples, dataset


def load_recipe_samples(
    args: argparse.Namespace, name: str, *, with_val: bool = False
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The cases of ``flipseg train RECIPE``: ``--data-root``, ``--data-opt``, ``--fold``, ``--limit``.

    Without ``--fold`` every case is read (part ``all``); with it, the fold's training part
    (and, with ``with_val``, its validation part). Cases that fail to load are reported and
    skipped; ``--limit`` keeps the first N of each part.

    Returns
    -------
    (part, samples, validation samples: empty unless ``with_val`` and ``--fold``)
    """
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


def check_recipe_args(
    args: argparse.Namespace,
    datasets: Sequence[str],
    recipe: str,
    checks: Sequence[tuple[bool, str]] = (),
) -> str:
    """The dataset name of ``args``, checked with the recipe's own ``checks`` and ``--limit``.

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


def hold_out_boxes(args: argparse.Namespace, samples: Sequence[dict[str, Any]], dataset: str,
                   seed: int, what: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``--val-cases`` of the boxes (at most a tenth) held out by patient; records the run's
    data (:func:`record_run_data`) and prints the progress line (``training <what> on N
    boxes ...``).

    Returns (training samples, validation samples).
    """
    from flipseg.data.splits import split_by_patient

    n_val = min(args.val_cases, max(1, len(samples) // 10))
    frac = n_val / len(samples)
    train_s, val_s = split_by_patient(samples, (1 - frac, frac), seed=seed)
    record_run_data(args, dataset, samples, part=args.part, n_train=len(train_s), n_val=len(val_s))
    print(f"training {what} on {len(train_s)} boxes ({len(val_s)} held out) -> {args.out}")
    return train_s, val_s


# -------------------------------------------------------------- run's data
def case_ids_hash(samples: Sequence[Mapping[str, Any]]) -> str:
    """A short hash of the cases' ids, in order (two runs on the same cases agree)."""
    h = hashlib.sha256("\n".join(str(s["case_id"]) for s in samples).encode())
    return h.hexdigest()[:16]


def _identity(args: argparse.Namespace, dataset: str, samples: Sequence[Mapping[str, Any]],
              part: str | None) -> dict[str, Any]:
    root = getattr(args, "data_root", None)
    return {
        "dataset": dataset,
        "root": str(Path(root).expanduser().resolve()) if root else None,
        "fold": getattr(args, "fold", None),
        "part": part,
        "limit": getattr(args, "limit", None),
        "data_opts": sorted(getattr(args, "data_opt", None) or []),
        "n_cases": len(samples),
        "case_ids_sha256": case_ids_hash(samples),
    }


def _describe(d: Mapping[str, Any]) -> str:
    bits = [f"dataset {d.get('dataset')!r}"]
    for key in ("root", "fold", "part", "limit"):
        if d.get(key) is not None:
            bits.append(f"{key} {d[key]}")
    if d.get("data_opts"):
        bits.append("data-opt " + " ".join(d["data_opts"]))
    bits.append(f"{d.get('n_cases')} cases")
    return ", ".join(bits)


def record_run_data(args: argparse.Namespace, dataset: str, samples: Sequence[Mapping[str, Any]],
                    *, part: str | None = None, **details: Any) -> dict[str, Any]:
    """Write, or check, the record of the data a run folder (``args.out``) trains on.

    The record (``data.json``) holds the dataset, its root, fold, part, ``--limit``,
    ``--data-opt`` and a hash of the case ids, with the recipe's ``details`` (counts). A
    run folder without one gets it; one whose record names the same data is left as it is
    (a finished run re-run does not rewrite it); one trained on other data is refused.

    Raises
    ------
    FlipsegError
        The run folder holds a run trained on other data (the message says how it differs
        and that ``--fresh`` starts afresh).
    """
    path = Path(args.out) / DATA_FILE
    ident = _identity(args, dataset, samples, part)
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FlipsegError(f"cannot read {path}: {exc}".splitlines()[0]) from None
        if "case_ids_sha256" in saved:
            if any(saved.get(k) != v for k, v in ident.items()):
                raise FlipsegError(
                    f"run folder {args.out} was trained on {_describe(saved)}; this command reads "
                    f"{_describe(ident)}: use another --out, or add --fresh to move the old run "
                    "aside and start afresh")
            return saved
    record = {**ident, **details}
    atomic_write_text(path, json.dumps(record, indent=2))
    return record


def start_afresh(out: str | Path) -> Path | None:
    """``--fresh``: move an existing run folder aside (``OUT.replaced-YYYYmmdd-HHMMSS``).

    Nothing is deleted. Returns where it went (None when there was nothing to move).
    """
    out = Path(out)
    if not out.exists() or not any(out.iterdir()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = out.with_name(f"{out.name}.replaced-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = out.with_name(f"{out.name}.replaced-{stamp}-{n}")
    out.rename(dest)
    print(f"--fresh: the earlier run in {out} was moved to {dest}")
    return dest


# ------------------------------------------------------- typed overrides
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def parse_value(text: str, tp: Any) -> Any:
    """``text`` converted to the annotation ``tp``.

    Handles ``int``, ``float``, ``bool`` (1/0, true/false, yes/no, on/off), ``str``,
    ``Literal[...]``, ``Optional[X]`` / ``X | None`` (``none`` or an empty value gives
    None), ``tuple[X, ...]`` and ``tuple[X, Y]`` (comma-separated), ``list[X]`` and unions
    (the first member that parses). Raises ``ValueError`` for a value that does not fit.
    """
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return text
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) < len(args) and text.strip().lower() in ("none", "null", ""):
            return None
        for member in members:
            try:
                return parse_value(text, member)
            except ValueError:
                continue
        raise ValueError(text)
    if origin is Literal:
        for choice in args:
            if str(choice) == text.strip():
                return choice
        raise ValueError(f"{text!r} is not one of {', '.join(map(str, args))}")
    if origin in (tuple, list):
        items = [t.strip() for t in text.split(",")] if text.strip() else []
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise ValueError(f"{text!r} needs {len(args)} comma-separated values")
            return tuple(parse_value(t, a) for t, a in zip(items, args))
        inner = args[0] if args else str
        values = [parse_value(t, inner) for t in items]
        return tuple(values) if origin is tuple else values
    if tp is bool:
        low = text.strip().lower()
        if low not in _TRUE + _FALSE:
            raise ValueError(text)
        return low in _TRUE
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError:
            raise ValueError(text) from None
    if tp is str:
        return text
    if origin is dict or tp is dict:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(text)
        return value
    raise ValueError(f"fields of type {_type_name(tp)} cannot be set from the command line")


def config_field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]


def parse_overrides(items: Sequence[str], cls: type, what: str = "") -> dict[str, Any]:
    """``["agents=2", "levels=100,200"]`` -> typed overrides of the dataclass ``cls``.

    Keys may use dashes for underscores. Raises FlipsegError naming the field and the value:
    an item without ``=``, an unknown field (listing the known ones) or a value that does not
    fit the field's type.
    """
    types_ = config_field_types(cls)
    word = f"{what} " if what else ""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise FlipsegError(f"--set {item!r} must look like KEY=VALUE")
        key, val = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in types_:
            raise FlipsegError(f"unknown {word}option {key!r}; known: {', '.join(sorted(types_))}")
        try:
            out[key] = parse_value(val.strip(), types_[key])
        except ValueError as exc:
            why = str(exc) if str(exc) and str(exc) != val.strip() else ""
            why = why or f"not a valid {_type_name(types_[key])}"
            raise FlipsegError(f"--set {item!r}: {why}") from None
    return out


# --------------------------------------------------------- configurations
def read_config(cls: type[C], d: Mapping[str, Any]) -> C:
    """A saved configuration, migrated to the current version of ``cls``.

    ``cls`` may define ``config_version`` (an int, default 1) and a classmethod
    ``migrate(d, version) -> dict`` that turns a dict saved at ``version`` into one of
    ``version + 1``; a dict without a version is version 0. Unknown keys and bad values
    fail through ``cls.from_dict`` (or ``cls(**d)``).
    """
    data = dict(d)
    version = int(data.pop(CONFIG_VERSION_KEY, 0))
    current = int(getattr(cls, "config_version", 1))
    if version > current:
        raise FlipsegError(f"this configuration was saved by a newer flipseg (version {version}; "
                           f"this one reads up to {current})")
    migrate: Callable[[dict[str, Any], int], dict[str, Any]] | None = getattr(cls, "migrate", None)
    while version < current:
        if migrate is not None:
            data = migrate(data, version)
        version += 1
    from_dict = getattr(cls, "from_dict", None)
    return from_dict(data) if from_dict is not None else cls(**data)


def config_dict(cfg: Any) -> dict[str, Any]:
    """A configuration as saved: its fields (tuples as lists) and its version."""
    to_dict = getattr(cfg, "to_dict", None)
    d = to_dict() if to_dict is not None else json.loads(json.dumps(dataclasses.asdict(cfg)))
    return {**d, CONFIG_VERSION_KEY: int(getattr(type(cfg), "config_version", 1))}


def write_config(path: str | Path, cfg: Any) -> None:
    """Save ``cfg`` (with its version) as JSON, atomically."""
    atomic_write_text(path, json.dumps(config_dict(cfg), indent=2))


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FlipsegError(f"{what} not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise FlipsegError(f"cannot read {what} {path}: {exc}".splitlines()[0]) from None
    if not isinstance(d, dict):
        raise FlipsegError(f"{what} {path} must hold a JSON object")
    return d


def resolve_config(
    cls: type[C],
    *,
    preset: Mapping[str, Any] | None = None,
    saved: str | Path | None = None,
    file: str | Path | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    what: str = "",
) -> C:
    """The one configuration resolution: **preset < saved run config < config file < --set**.

    Parameters
    ----------
    cls
        The configuration dataclass.
    preset
        Field values of a named preset (lowest precedence, over the dataclass defaults).
    saved
        The run folder's ``config.json`` (used when it exists): a resumed run keeps its own
        configuration; migrated from older versions by :func:`read_config`.
    file
        A JSON file of fields given by the user (``--config``).
    overrides
        ``KEY=VALUE`` items (``--set``), typed from the fields' annotations.
    flags
        Field -> value of a recipe's own flags (same precedence as ``--set``; None values
        are not overrides).
    what
        The recipe's word in messages.

    Raises
    ------
    FlipsegError
        An unreadable file, an unknown field or a value of the wrong type.
    """
    values: dict[str, Any] = dict(preset or {})
    for path in (saved, file):
        if path is not None and (path == file or Path(path).exists()):
            loaded = read_config(cls, _read_json(Path(path), "configuration file"))
            values.update(dataclasses.asdict(loaded))  # type: ignore[call-overload]
    values.update(parse_overrides(overrides, cls, what))
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    values.pop(CONFIG_VERSION_KEY, None)
    from_dict = getattr(cls, "from_dict", None)
    return from_dict(values) if from_dict is not None else cls(**values)

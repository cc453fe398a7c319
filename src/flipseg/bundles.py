"""Model files ("bundles"): written and read as data, never as code.

A bundle is a nested dict with a ``format`` tag (``flipseg-flip-1``,
``flipseg-boxinst-1``, ...) holding configurations, reports and weights. It is
stored as ONE ``.safetensors`` file: every torch tensor and numpy array of the
tree is a tensor of the file under a path-like key (``q_network/net.0.weight``);
the rest of the tree (str, int, float, bool, None, lists, tuples, dicts) is JSON
in the file's header metadata (key ``flipseg``), with the tensors replaced by
references. Reading such a file runs no code from it (:func:`save_bundle`,
:func:`load_bundle`, :func:`read_bundle`).

Older flipseg versions wrote bundles with ``torch.save`` (pickles: loading one
can run any code inside it). They are recognised by their first bytes and
refused; :func:`convert_model` (``flipseg convert-model``) is the one place that
unpickles, once, for a file the user trusts.

A missing, corrupt or foreign file is a user mistake, reported as one-line
:class:`FlipsegError`, never a traceback.
"""

from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_save

__all__ = [
    "MODEL_SUFFIX",
    "UnsafeLoadWarning",
    "bundle_format",
    "convert_model",
    "load_bundle",
    "load_torch_file",
    "locate",
    "read_bundle",
    "save_bundle",
    "unpickle_warning",
]

#: Suffix of every model file.
MODEL_SUFFIX = ".safetensors"
#: Header metadata keys: the JSON tree, and the version of its encoding.
_TREE_KEY = "flipseg"
_ENCODING_KEY = "flipseg_encoding"
_ENCODING = "1"
#: Marker key of the JSON objects that stand for something JSON has not (tensor, tuple, ...).
_MARK = "$"
#: numpy dtypes stored as a tensor of the same dtype (the others as raw bytes).
_NATIVE_NUMPY = {np.dtype(t) for t in ("bool", "uint8", "int8", "int16", "int32", "int64",
                                       "float16", "float32", "float64")}

#: Bundle ``format`` tag -> the ``--method`` that runs it (None: not a segmenter; the value
#: says what to use instead).


class UnsafeLoadWarning(UserWarning):
    """:func:`convert_model` is about to unpickle a file, which runs any code inside it."""


# ----------------------------------------------------------------- encoding
class _Encoder:
    """Splits a tree into JSON (with references) and the tensors it references."""

    def __init__(self) -> None:
        self.tensors: dict[str, Any] = {}

    def _key(self, where: str) -> str:
        where = where.lstrip("/") or "tensor"
        key, n = where, 1
        while key in self.tensors:
            key, n = f"{where}#{n}", n + 1
        return key

    def _tensor(self, t: Any, where: str) -> str:
        import torch

        if t.layout != torch.strided or t.is_quantized:
            raise TypeError(f"cannot store a {t.layout} tensor (at {where or 'the top'}) in a model file")
        key = self._key(where)
        # own, contiguous CPU memory: safetensors refuses shared or strided storage
        self.tensors[key] = t.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        return key

    def encode(self, x: Any, where: str = "") -> Any:
        import torch

        if isinstance(x, torch.Tensor):
            return {_MARK: "tensor", "key": self._tensor(x, where)}
        if isinstance(x, np.ndarray):
            if x.dtype.hasobject or x.dtype.fields is not None:
                raise TypeError(f"cannot store a numpy array of dtype {x.dtype} (at {where or 'the top'}) "
                                "in a model file")
            native = x.dtype in _NATIVE_NUMPY and x.dtype.isnative
            arr = x.copy(order="C") if native else np.frombuffer(x.tobytes(), np.uint8).copy()
            return {_MARK: "ndarray", "key": self._tensor(torch.from_numpy(arr), where),
                    "dtype": x.dtype.str, "shape": list(x.shape), "raw": not native}
        if isinstance(x, np.generic):
            return self.encode(x.item(), where)
        if x is None or isinstance(x, (bool, str)):
            return x
        if isinstance(x, int):
            return int(x)
        if isinstance(x, float):
            return float(x)
        if isinstance(x, list):
            return [self.encode(v, f"{where}/{i}") for i, v in enumerate(x)]
        if isinstance(x, tuple):
            return {_MARK: "tuple", "items": [self.encode(v, f"{where}/{i}") for i, v in enumerate(x)]}
        if isinstance(x, dict):
            plain = type(x) is dict and all(isinstance(k, str) and k != _MARK for k in x)
            if plain:
                return {k: self.encode(v, f"{where}/{k}") for k, v in x.items()}
            pairs = []
            for k, v in x.items():
                if not (k is None or isinstance(k, (str, int, float, tuple, np.generic))):
                    raise TypeError(f"cannot store a dict key of type {type(k).__name__} "
                                    f"(at {where or 'the top'}) in a model file")
                pairs.append([self.encode(k, f"{where}/{k}#key"), self.encode(v, f"{where}/{k}")])
            return {_MARK: "odict" if isinstance(x, OrderedDict) else "dict", "pairs": pairs}
        raise TypeError(f"cannot store a {type(x).__name__} (at {where or 'the top'}) in a model file")


class _Corrupt(Exception):
    pass


def _decode(x: Any, tensors: Mapping[str, Any]) -> Any:
    if isinstance(x, list):
        return [_decode(v, tensors) for v in x]
    if not isinstance(x, dict):
        return x
    if _MARK not in x:
        return {k: _decode(v, tensors) for k, v in x.items()}
    kind = x[_MARK]
    if kind in ("tensor", "ndarray"):
        if x.get("key") not in tensors:
            raise _Corrupt(f"tensor {x.get('key')!r} is missing")
        t = tensors[x["key"]]
        if kind == "tensor":
            return t
        dtype, shape = np.dtype(x["dtype"]), tuple(x["shape"])
        arr = t.numpy()
        if x.get("raw"):
            return np.frombuffer(arr.tobytes(), dtype).reshape(shape).copy()
        if arr.dtype != dtype or arr.shape != shape:
            raise _Corrupt(f"array {x['key']!r} is {arr.dtype} {arr.shape}, not {dtype} {shape}")
        return arr
    if kind == "tuple":
        return tuple(_decode(v, tensors) for v in x["items"])
    if kind in ("dict", "odict"):
        pairs = [(_decode(k, tensors), _decode(v, tensors)) for k, v in x["pairs"]]
        return OrderedDict(pairs) if kind == "odict" else dict(pairs)
    raise _Corrupt(f"unknown entry {kind!r}")


# ------------------------------------------------------------ file kinds
def _file_kind(path: Path) -> str:
    """``"safetensors"``, ``"pickle"`` (a ``torch.save`` zip or a bare pickle) or ``"unknown"``,
    from the file's first bytes only."""
    with open(path, "rb") as fh:
        head = fh.read(9)
        fh.seek(0, 2)
        size = fh.tell()
    if len(head) == 9:
        n = int.from_bytes(head[:8], "little")
        if 2 <= n <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def _old_pickle(path: Path, what: str = "model file") -> FlipsegError:
    return FlipsegError(f"{path} is an old pickle model file, not a flipseg {what} this version "
                        f"reads; convert it once with `flipseg convert-model {path}` (only for "
                        "files you trust)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _kind(path: Path, what: str) -> str:
    """:func:`_file_kind`; an unreadable file is a one-line FlipsegError."""
    try:
        return _file_kind(path)
    except OSError as exc:
        raise FlipsegError(f"cannot read {what} {path}: {exc.strerror or _first_line(exc)}") from None


def _require_safetensors(path: Path, what: str) -> None:
    """Refuse, from its first bytes, a file that is not safetensors (an old pickle: say how to
    convert it)."""
    kind = _kind(path, what)
    if kind == "pickle":
        raise _old_pickle(path, what)
    if kind != "safetensors":
        raise FlipsegError(f"cannot read {what} {path}: not a safetensors model file")


def _read_safetensors(path: Path, what: str, *, plain_ok: bool = False) -> Any:
    """The tree of a flipseg safetensors file (``plain_ok``: or the tensors of any other one)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if _TREE_KEY not in meta:
            if plain_ok:
                return tensors
            raise FlipsegError(f"cannot read {what} {path}: a safetensors file without flipseg metadata")
        if meta.get(_ENCODING_KEY) != _ENCODING:
            raise FlipsegError(f"cannot read {what} {path}: written by another flipseg version "
                               f"(encoding {meta.get(_ENCODING_KEY)!r}, this one reads {_ENCODING!r})")
        return _decode(json.loads(meta[_TREE_KEY]), tensors)
    except FlipsegError:
        raise
    except Exception as exc:  # a corrupt file is a user mistake
        raise FlipsegError(f"cannot read {what} {path}: {_first_line(exc)}") from None


# ------------------------------------------------------------- public API
def save_bundle(path: str | Path, bundle: Mapping[str, Any]) -> Path:
    """Write ``bundle`` to ``path`` as one ``.safetensors`` file, atomically.

    Tensors (any device, any strides, shared or not: each is stored as its own
    contiguous CPU copy) and numpy arrays become tensors of the file; str, int,
    float, bool, None, lists, tuples and dicts (OrderedDicts stay OrderedDicts;
    keys may also be int, float, None or tuples) go to its JSON header. numpy
    scalars are stored as Python scalars. :func:`load_bundle` gives back an equal
    tree: same types, tensors and arrays bit-identical with the same dtype and
    shape (tensors come back detached, without ``requires_grad``).

    Raises
    ------
    TypeError
        Something else in the tree (e.g. a Path, a set, an object array).
    """
    from safetensors.torch import save_file

    if not isinstance(bundle, Mapping):
        raise TypeError(f"a bundle is a dict, not a {type(bundle).__name__}")
    enc = _Encoder()
    tree = enc.encode(bundle if isinstance(bundle, dict) else dict(bundle))
    meta = {_TREE_KEY: json.dumps(tree), _ENCODING_KEY: _ENCODING}
    if isinstance(bundle.get("format"), str):
        meta["format"] = bundle["format"]  # for tools that list a file's metadata
    return atomic_save(path, lambda tmp: save_file(enc.tensors, tmp, metadata=meta))


def load_bundle(path: str | Path, what: str = "model file") -> Any:
    """The tree :func:`save_bundle` wrote to ``path`` (a file).

    Raises FlipsegError (one line) for a missing, corrupt or foreign file, and for
    an old pickle model file, which is never unpickled (see :func:`convert_model`).
    """
    path = Path(path).expanduser()
    _require_safetensors(path, what)
    return _read_safetensors(path, what)


def locate(path: str | Path, file_names: Sequence[str], what: str) -> Path:
    """``path`` itself, or the first of ``file_names`` inside the folder ``path``.

    Raises FlipsegError (naming ``what``) when nothing is there; for a run folder of
    an older flipseg (``*.pt`` where ``*.safetensors`` is looked for), the error says
    how to convert its model file.
    """
    path = Path(path).expanduser()
    if path.is_dir() and not file_names:
        raise FlipsegError(f"{what} must be a file; {path} is a folder")
    if path.is_dir():
        found = [path / n for n in file_names if (path / n).exists()]
        if not found:
            for n in file_names:
                old = path / (n.removesuffix(MODEL_SUFFIX) + ".pt")
                if n.endswith(MODEL_SUFFIX) and old.is_file():
                    raise _old_pickle(old, what)
            raise FlipsegError(f"no {what} in {path} (looked for {', '.join(file_names)})")
        path = found[0]
    if not path.exists():
        raise FlipsegError(f"{what} not found: {path}")
    return path


def bundle_format(path: str | Path, what: str = "model file") -> str | None:
    """The ``format`` tag of the model file at ``path`` (None: it has none), from its header
    only: no weights are read, no code runs. Same errors as :func:`load_bundle`."""
    from safetensors import safe_open

    path = Path(path).expanduser()
    _require_safetensors(path, what)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
        if _TREE_KEY not in meta:
            raise FlipsegError(f"cannot read {what} {path}: a safetensors file without flipseg metadata")
        if "format" in meta:
            return meta["format"]
        tree = json.loads(meta[_TREE_KEY])
    except FlipsegError:
        raise
    except Exception as exc:  # a corrupt file is a user mistake
        raise FlipsegError(f"cannot read {what} {path}: {_first_line(exc)}") from None
    fmt = tree.get("format") if isinstance(tree, dict) else None
    return fmt if isinstance(fmt, str) else None


def load_torch_file(path: str | Path, what: str, *, weights_only: bool = False) -> Any:
    """The contents of a model or weights file on the CPU, without running code from it.

    A flipseg ``.safetensors`` file is read by :func:`load_bundle`. With
    ``weights_only`` (third-party weights: torchvision or SAM checkpoints) a plain
    safetensors file gives its tensors and a torch file is read with
    ``torch.load(weights_only=True)`` (tensors and plain containers only, no code);
    without it a pickle is refused as an old model file. A corrupt or foreign file is
    a one-line FlipsegError.
    """
    path = Path(path).expanduser()
    if _kind(path, what) == "safetensors":
        return _read_safetensors(path, what, plain_ok=weights_only)
    if not weights_only:
        _require_safetensors(path, what)  # raises: an old pickle model file, or junk
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file is a user mistake
        raise FlipsegError(f"cannot read {what} {path}: {_first_line(exc)}") from None


def read_bundle(path: str | Path, file_names: str | Sequence[str], fmt: str, what: str) -> dict[str, Any]:
    """The bundle at ``path``, a file or a run folder holding one of ``file_names``.

    Parameters
    ----------
    path
        Model file, or a folder searched for ``file_names`` (relative paths, first found wins).
    file_names
        File name(s) of the bundle inside a run folder.
    fmt
        Expected ``format`` tag.
    what
        Words for messages, e.g. ``"boxinst model"``.
    """
    names = [file_names] if isinstance(file_names, str) else list(file_names)
    bundle = load_bundle(locate(path, names, what), what)
    if not isinstance(bundle, dict) or bundle.get("format") != fmt:
        raise FlipsegError(f"{path} is not a flipseg {what}")
    return bundle


def unpickle_warning(src: str | Path) -> str:
    """What :func:`convert_model` warns before it unpickles ``src``."""
    return (f"converting {src} unpickles it, which runs any code the file holds: "
            "only convert model files you trust")


def convert_model(src: str | Path, dst: str | Path | None = None) -> Path:
    """Convert an old pickle model file (``torch.save``) to a ``.safetensors`` one.

    The only place flipseg unpickles a file: ``torch.load(weights_only=False)`` runs
    any code the file holds, so use it only on files you trust. Warns
    (:class:`UnsafeLoadWarning`, :func:`unpickle_warning`) before loading.

    Parameters
    ----------
    src
        The old model file (a bundle with a flipseg ``format`` tag).
    dst
        Where to write; default ``src`` with the suffix ``.safetensors``. An existing
        file is never overwritten.

    Returns
    -------
    The written file.
    """
    src = Path(src).expanduser()
    if src.is_dir():
        raise FlipsegError(f"convert-model needs a model file; {src} is a folder")
    if not src.exists():
        raise FlipsegError(f"model file not found: {src}")
    dst = Path(dst).expanduser() if dst is not None else src.with_suffix(MODEL_SUFFIX)

    def refuse_existing() -> None:
        if dst.exists():
            raise FlipsegError(f"{dst} already exists; not overwriting it (remove it or pick another --out)")

    refuse_existing()
    if _kind(src, "model file") == "safetensors":
        raise FlipsegError(f"{src} is already a safetensors model file")
    import torch

    warnings.warn(unpickle_warning(src), UnsafeLoadWarning, stacklevel=2)
    try:
        bundle = torch.load(src, map_location="cpu", weights_only=False)
    except Exception as exc:  # a corrupt or foreign file is a user mistake
        raise FlipsegError(f"cannot read model file {src}: {_first_line(exc)}") from None
    fmt = bundle.get("format") if isinstance(bundle, dict) else None
    if not (isinstance(fmt, str) and fmt.startswith("flipseg-")):
        raise FlipsegError(f"{src} is not a flipseg model file (no flipseg format tag)")
    refuse_existing()
    try:
        return save_bundle(dst, bundle)
    except TypeError as exc:
        raise FlipsegError(f"cannot convert {src}: {exc}") from None

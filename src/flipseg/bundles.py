"""Reading saved model bundles: one place for the checks every loader needs.

A bundle is a ``torch.save``-d dict with a ``format`` tag (``flipseg-flip-1``,
``flipseg-boxinst-1``, ...). A missing, corrupt or foreign file is a user
mistake, reported as one-line :class:`FlipsegError`, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from flipseg.errors import FlipsegError

__all__ = ["load_torch_file", "locate", "method_of_model", "read_bundle"]

#: Bundle ``format`` tag -> the ``--method`` that runs it (None: not a segmenter; the value
#: says what to use instead).
_FORMAT_METHODS: dict[str, tuple[str | None, str]] = {
    "flipseg-flip-1": ("flip", ""),
    "flipseg-boxinst-1": ("boxinst", ""),
    "flipseg-pseudo-unet-1": ("pseudo-unet", ""),
    "flipseg-hybrid-1": ("hybrid", ""),
    "flipseg-cam-mt-1": ("cam-mt", ""),
    "flipseg-lanet-1": (None, "a LA-Net classifier: use `flipseg classify --model`"),
    "flipseg-cam-classifier-1": (None, "a CAM classifier, not a segmenter"),
    "flipseg-classifier-1": (None, "a Flip classifier, not a segmenter"),
    "flipseg-boxrefine-1": (None, "a box refiner: use it with --refine-box"),
}
#: File name of each recipe's bundle inside its run folder.
_RUN_FILES = ("flip_model.pt", "boxinst_model.pt", "pseudo_model.pt", "hybrid_model.pt",
              "cam_mt_model.pt", "mean_teacher/cam_mt_model.pt", "lanet_model.pt",
              "boxrefine_model.pt")


def locate(path: str | Path, file_names: Sequence[str], what: str) -> Path:
    """``path`` itself, or the first of ``file_names`` inside the folder ``path``.

    Raises FlipsegError (naming ``what``) when nothing is there.
    """
    path = Path(path).expanduser()
    if path.is_dir() and not file_names:
        raise FlipsegError(f"{what} must be a file; {path} is a folder")
    if path.is_dir():
        found = [path / n for n in file_names if (path / n).exists()]
        if not found:
            raise FlipsegError(f"no {what} in {path} (looked for {', '.join(file_names)})")
        path = found[0]
    if not path.exists():
        raise FlipsegError(f"{what} not found: {path}")
    return path


def load_torch_file(path: str | Path, what: str, *, weights_only: bool = False) -> Any:
    """``torch.load`` on the CPU; a corrupt or foreign file is a one-line FlipsegError."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # a corrupt or foreign file is a user mistake
        raise FlipsegError(f"cannot read {what} {path}: {exc}") from None


def method_of_model(path: str | Path) -> str:
    """The ``--method`` that runs a trained model (a bundle file or a run folder).

    Raises FlipsegError for a missing path, a folder without a model, a file that
    is not a flipseg bundle, or a model that does not segment (e.g. LA-Net).
    """
    path = locate(path, _RUN_FILES, "trained model")
    bundle = load_torch_file(path, "model file")
    fmt = bundle.get("format") if isinstance(bundle, dict) else None
    if fmt not in _FORMAT_METHODS:
        raise FlipsegError(f"{path} is not a flipseg model")
    method, instead = _FORMAT_METHODS[fmt]
    if method is None:
        raise FlipsegError(f"{path} is {instead}")
    return method


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
    bundle = load_torch_file(locate(path, names, what), "model file")
    if not isinstance(bundle, dict) or bundle.get("format") != fmt:
        raise FlipsegError(f"{path} is not a flipseg {what}")
    return bundle

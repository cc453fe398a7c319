"""Reading saved model bundles: one place for the checks every loader needs.

A bundle is a ``torch.save``-d dict with a ``format`` tag (``flipseg-flip-1``,
``flipseg-boxinst-1``, ...). A missing, corrupt or foreign file is a user
mistake, reported as one-line :class:`FlipsegError`, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from flipseg.errors import FlipsegError

__all__ = ["read_bundle"]


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
    import torch

    path = Path(path)
    if path.is_dir():
        names = [file_names] if isinstance(file_names, str) else list(file_names)
        found = [path / n for n in names if (path / n).exists()]
        if not found:
            raise FlipsegError(f"no {what} in {path} (looked for {', '.join(names)})")
        path = found[0]
    if not path.exists():
        raise FlipsegError(f"{what} not found: {path}")
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a corrupt or foreign file is a user mistake
        raise FlipsegError(f"cannot read model file {path}: {exc}") from None
    if not isinstance(bundle, dict) or bundle.get("format") != fmt:
        raise FlipsegError(f"{path} is not a flipseg {what}")
    return bundle

"""``flipseg convert-model SRC [--out DST]``: an old pickle model file -> ``.safetensors``.

Model files of older flipseg versions were ``torch.save`` pickles; loading one can
run any code inside it, so flipseg no longer reads them. This command converts one
file once (unpickling it: only for files you trust) with
:func:`flipseg.bundles.convert_model`.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from flipseg.bundles import UnsafeLoadWarning, convert_model, unpickle_warning

__all__ = ["run_convert_model"]


def run_convert_model(args: Any) -> int:
    """Convert ``args.src`` to ``args.out`` (None: next to it, ``.safetensors``); returns 0.

    The warning that the file's code runs goes to stderr, the written path to stdout.
    A missing, foreign or corrupt file, or an existing output, raises FlipsegError.
    """
    print(f"warning: {unpickle_warning(args.src)}", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsafeLoadWarning)  # printed above
        dst = convert_model(args.src, getattr(args, "out", None))
    print(f"wrote {dst}")
    return 0

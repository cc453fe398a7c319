"""Ten BUS-BRA images shipped with the package (demo, smoke tests, docs).

Five benign and five malignant images of ten patients from three scanners, all
in the test part of BUS-BRA's official fold 5, with their masks and published
boxes. See ``samples/CITATION.txt`` for the license and the citation it requires.
"""

from __future__ import annotations

import contextlib
import csv
import io
from importlib import resources
from pathlib import Path
from typing import Any

from flipseg.data.busbra import samples_from_rows
from flipseg.errors import FlipsegError

__all__ = ["load_embedded"]


def load_embedded(*, errors: list | None = None) -> list[dict[str, Any]]:
    """The bundled BUS-BRA samples, as :func:`~flipseg.data.busbra.load_busbra` returns them.

    ``case_id`` is the BUS-BRA ID (``bus_0002-l`` ...), ``fold`` is 5 for all.
    """
    folder = resources.files("flipseg.data").joinpath("samples")
    table = folder.joinpath("samples.csv")
    if not table.is_file():
        raise FlipsegError("embedded samples are missing from the installed package (samples.csv)")
    rows = list(csv.DictReader(io.StringIO(table.read_text(encoding="utf-8"))))
    folds = {r["ID"]: int(r["kFold"]) for r in rows if r.get("kFold")}
    with contextlib.ExitStack() as stack:

        def path_of(name: str) -> Path:
            return stack.enter_context(resources.as_file(folder.joinpath(name)))

        def image(cid: str) -> Path:
            return path_of(f"{cid}.png")

        def mask(cid: str) -> Path:
            return path_of(f"mask_{cid[4:]}.png")

        return samples_from_rows(rows, image, mask, errors=errors, folds=folds)


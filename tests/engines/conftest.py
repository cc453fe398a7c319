"""The small dataset the engine tests share."""

import numpy as np
import pytest

from flipseg.data import phantom_dataset_2d
from flipseg.data.io import write_png


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    """A folder dataset of 7 phantom images (one with two boxes) and a boxes.csv row whose
    image is missing (a case that fails to load)."""
    root = tmp_path_factory.mktemp("data")
    rows = ["case_id,x0,y0,x1,y1"]
    for i, s in enumerate(phantom_dataset_2d(7, seed=5, shape=(40, 48))):
        write_png(root / "images" / f"p{i}.png", s["image"].astype(np.uint8))
        write_png(root / "masks" / f"p{i}.png", s["mask"])
        b = s["box"]
        rows.append(f"p{i},{b.x0},{b.y0},{b.x1},{b.y1}")
        if i == 3:  # a second, looser box on the same image
            rows.append(f"p{i},{max(0, b.x0 - 3)},{max(0, b.y0 - 3)},{b.x1 + 2},{b.y1 + 2}")
    rows.append("gone,1,1,9,9")
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    return root

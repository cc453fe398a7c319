"""STU-Hospital breast ultrasound images (``Test_Image_N.png`` + ``mask_N.png``).

The files may sit in one folder or in subfolders of ``root`` (searched
recursively); image ``N`` is paired with mask ``N``. Some masks are stored at
a higher resolution than their image and anti-aliased: every mask is scaled to
its maximum, resized to the image (area averaging) and thresholded at 0.5. The
dataset has no pathology labels (``label`` None) and no patient ids
(``patient_id`` = ``case_id`` = ``"stu_N"``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flipseg.data.io import IMAGE_EXTENSIONS, read_image, read_mask
from flipseg.data.sample import make_sample, try_case
from flipseg.errors import FlipsegError

__all__ = ["load_stu"]

_IMAGE = re.compile(r"^test_image_(\d+)$", re.IGNORECASE)
_MASK = re.compile(r"^mask_(\d+)$", re.IGNORECASE)


def load_stu(root: str | Path, *, errors: list | None = None) -> list[dict[str, Any]]:
    """Read the STU-Hospital layout, in image-number order.

    ``errors``: if a list, cases that fail (unreadable file, no mask) are
    appended as ``(case_id, message)`` and skipped; if None they raise.

    Raises
    ------
    FlipsegError
        Missing folder, or no ``Test_Image_N`` files in it.
    """
    root = Path(root)
    if not root.is_dir():
        raise FlipsegError(f"dataset folder not found: {root}")
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    for f in sorted(root.rglob("*")):
        if not f.is_file() or f.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        for pattern, table in ((_IMAGE, images), (_MASK, masks)):
            m = pattern.match(f.stem)
            if m:
                n = int(m.group(1))
                if n in table:
                    raise FlipsegError(f"STU files {table[n]} and {f} have the same number {n}")
                table[n] = f
    if not images:
        raise FlipsegError(f"no Test_Image_N files found under {root}")
    samples = []
    for n in sorted(images):
        case_id = f"stu_{n}"

        def load(n=n, case_id=case_id):
            if n not in masks:
                raise FlipsegError(f"STU case {case_id}: no mask_{n} file for {images[n]}")
            image = read_image(images[n])
            mask = read_mask(masks[n], shape=image.shape, threshold=0.5)
            return make_sample(image, mask=mask, case_id=case_id, file=str(images[n]))

        sample = try_case(case_id, load, errors)
        if sample is not None:
            samples.append(sample)
    return samples

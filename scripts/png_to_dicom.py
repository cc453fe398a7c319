"""BUS-BRA PNGs -> ultrasound DICOM files (pydicom) with an ultrasound region calibration.

    python3 scripts/png_to_dicom.py ../shared/data/BUS-BRA runs/busbra-dicom [--limit N] \
        [--pixel-size 0.1] [--compress jpeg]

Writes ``OUT/images/<ID>.dcm`` (Ultrasound Image Storage, MONOCHROME2, 8-bit; one study per
patient of ``bus_data.csv``'s ``Case`` column; SequenceOfUltrasoundRegions with
PhysicalDeltaX/Y = ``--pixel-size`` mm written in cm, PhysicalUnits 3 = cm: BUS-BRA
publishes no pixel size, so this one is assumed) and ``OUT/boxes.csv`` (``case_id,x0,y0,
x1,y1,label`` from the published BBOX, as :func:`flipseg.data.busbra.parse_busbra_bbox`
reads it). ``--compress jpeg`` stores JPEG baseline, ``jpeg2000`` JPEG 2000 lossless. Then::

    flipseg label --images runs/busbra-dicom --out runs/busbra-seg --format dicom-seg
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from flipseg.data.busbra import parse_busbra_bbox
from flipseg.data.dicom import make_us_dicom
from flipseg.data.io import read_raw


def convert(root: Path, out: Path, *, limit: int | None = None, pixel_size: float = 0.1,
            compress: str | None = None) -> int:
    """Convert the first ``limit`` images of ``bus_data.csv``; returns how many."""
    from pydicom.uid import generate_uid

    with open(root / "bus_data.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:limit]
    (out / "images").mkdir(parents=True, exist_ok=True)
    studies: dict[str, str] = {}
    lines = ["case_id,x0,y0,x1,y1,label"]
    for n, row in enumerate(rows, start=1):
        arr = read_raw(root / "Images" / f"{row['ID']}.png")
        if arr.ndim == 3:
            arr = arr[..., 0]
        study = studies.setdefault(row["Case"], generate_uid())
        ds = make_us_dicom(np.asarray(arr, np.uint8), pixel_size_mm=pixel_size,
                           patient_id=f"BUSBRA{int(row['Case']):04d}", study_uid=study,
                           instance_number=n, compress=compress)
        ds.save_as(out / "images" / f"{row['ID']}.dcm", enforce_file_format=True)
        b = parse_busbra_bbox(row["BBOX"])
        lines.append(f"{row['ID']},{b.x0},{b.y0},{b.x1},{b.y1},{row['Pathology'].strip().lower()}")
    (out / "boxes.csv").write_text("\n".join(lines) + "\n")
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("busbra", help="BUS-BRA folder (Images/, bus_data.csv)")
    p.add_argument("out", help="output folder (images/*.dcm, boxes.csv)")
    p.add_argument("--limit", type=int, default=None, help="the first N images only")
    p.add_argument("--pixel-size", type=float, default=0.1, help="assumed pixel size in mm")
    p.add_argument("--compress", choices=("jpeg", "jpeg2000"), default=None)
    a = p.parse_args(argv)
    root = Path(a.busbra)
    if not (root / "bus_data.csv").is_file():
        print(f"png_to_dicom: error: {root} has no bus_data.csv", file=sys.stderr)
        return 2
    n = convert(root, Path(a.out), limit=a.limit, pixel_size=a.pixel_size, compress=a.compress)
    print(f"{n} DICOM files -> {Path(a.out) / 'images'}, boxes -> {Path(a.out) / 'boxes.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

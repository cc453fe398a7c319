"""BUSI's masks -> a COCO JSON with one box per lesion, as CVAT or Label Studio export it.

    python3 scripts/busi_to_coco.py ../shared/data/BUSI busi_coco.json [--limit N]

Every image of ``benign/`` and ``malignant/`` (and ``normal/`` with ``--normal``) is an
``images`` entry (``file_name`` relative to the BUSI folder, ``width``, ``height``); every
mask file (``<stem>_mask.png``, ``_mask_1.png`` ...: one lesion each) with a lesion is one
annotation: ``bbox`` = the tight box of its pixels as ``[x, y, w, h]`` (half-open pixel
box ``x0, y0, x0 + w, y0 + h``), ``segmentation`` empty (boxes only, as a box annotation
tool writes them), category ``benign`` or ``malignant``. Then::

    flipseg label --images ../shared/data/BUSI --boxes busi_coco.json --out runs/busi-label \
        --format png,nifti,coco,nnunet
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from flipseg.boxes import Box
from flipseg.data.io import read_mask, read_raw

CLASSES = ("benign", "malignant", "normal")
_MASK = re.compile(r"^(?P<stem>.+)_mask(?:_\d+)?$")


def busi_coco(root: Path, *, classes: tuple[str, ...] = ("benign", "malignant"),
              limit: int | None = None) -> dict:
    """The COCO document of BUSI's images and mask boxes (see module docstring)."""
    images, annotations = [], []
    categories = [{"id": k, "name": c, "supercategory": "lesion"}
                  for k, c in enumerate(CLASSES, start=1)]
    cat_id = {c["name"]: c["id"] for c in categories}
    for cls in classes:
        folder = root / cls
        files = sorted(folder.glob("*.png"), key=lambda p: [int(t) if t.isdigit() else t
                                                           for t in re.split(r"(\d+)", p.name)])
        masks: dict[str, list[Path]] = {}
        for f in files:
            m = _MASK.match(f.stem)
            if m:
                masks.setdefault(m["stem"], []).append(f)
        stems = [f for f in files if not _MASK.match(f.stem)]
        for f in stems:
            if limit is not None and len(images) >= limit:
                break
            h, w = read_raw(f).shape[:2]
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": f"{cls}/{f.name}", "width": int(w),
                           "height": int(h)})
            for mf in masks.get(f.stem, []):
                mask = read_mask(mf, shape=(h, w))
                if not mask.any():
                    continue
                b = Box.from_mask(mask)
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id,
                    "category_id": cat_id[cls], "segmentation": [], "iscrowd": 0,
                    "area": float((b.x1 - b.x0) * (b.y1 - b.y0)),
                    "bbox": [float(b.x0), float(b.y0), float(b.x1 - b.x0), float(b.y1 - b.y0)],
                    "attributes": {"occluded": False, "mask_file": f"{cls}/{mf.name}"}})
    return {"info": {"description": "BUSI boxes from its masks (scripts/busi_to_coco.py)"},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": categories}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("busi", help="BUSI folder (benign/, malignant/, normal/)")
    p.add_argument("out", help="COCO JSON file to write")
    p.add_argument("--normal", action="store_true", help="also list the normal images (no box)")
    p.add_argument("--limit", type=int, default=None, help="the first N images only")
    a = p.parse_args(argv)
    root = Path(a.busi)
    if not (root / "benign").is_dir():
        print(f"busi_to_coco: error: {root} has no benign/ folder", file=sys.stderr)
        return 2
    classes = ("benign", "malignant", "normal") if a.normal else ("benign", "malignant")
    doc = busi_coco(root, classes=classes, limit=a.limit)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print(f"{len(doc['images'])} images, {len(doc['annotations'])} boxes -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

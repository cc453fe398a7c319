"""Time and peak memory of ``flipseg segment --image --box`` against the box's size.

    python benchmarks/box_size.py                                 # this checkout
    PYTHONPATH=OLD/src python benchmarks/box_size.py              # another checkout
    python benchmarks/box_size.py --sizes 100,500,1000,2000 --methods flip,flip-vote,grabcut

For each size S a BUS-BRA image (the first of fold 5; a phantom when BUS-BRA is absent) is
cropped to its lesion box and 60 % of the box's size around it, then resized so that the
box is S pixels on its longer side: the image is then about 2.2 S wide (about 4,400 x
4,400 pixels for S = 2000, the issue's 1,900-pixel box on a 4,000 x 4,000 image). Every run is a fresh
``python -m flipseg.cli segment`` process, timed wall-clock (model loading included) with
its peak resident memory (``ru_maxrss``). A run past ``--limit-gb`` of address space or
``--timeout`` seconds is reported as such instead of a number. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_case(size: int, work: Path) -> tuple[Path, str]:
    """An image file whose lesion box is about ``size`` px, and the box as ``X0,Y0,X1,Y1``."""
    from flipseg.data import load_dataset, make_phantom_2d, write_png
    from flipseg.resize import resize

    try:
        case = load_dataset("bus-bra", None, part="test", fold=5)[0]
    except Exception:  # noqa: BLE001 - no BUS-BRA here: a phantom
        case = make_phantom_2d(0, shape=(400, 400))
    image, box = np.asarray(case["image"], np.float32), case["box"]
    view = box.expand(0.6, relative=True).clip(image.shape)  # the box and its surroundings
    image, box = image[view.slices()], box.relative_to(view)
    scale = size / max(box.shape)
    shape = tuple(max(8, int(round(n * scale))) for n in image.shape)
    big = np.clip(resize(image, shape), 0, 255).astype(np.uint8)
    x0, y0 = int(box.x0 * scale), int(box.y0 * scale)
    x1, y1 = min(shape[1], int(round(box.x1 * scale))), min(shape[0], int(round(box.y1 * scale)))
    path = work / f"image-{size}.png"
    if not path.is_file():
        write_png(path, big)
    return path, f"{x0},{y0},{x1},{y1}"


def run(argv: list[str], limit_gb: float, timeout: float) -> tuple[str, str]:
    """(seconds, peak MB) of ``python -m flipseg.cli ARGV`` as table cells."""
    def limit() -> None:
        if limit_gb > 0:
            cap = int(limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "flipseg.cli", *argv], preexec_fn=limit,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stopped = False
    while True:  # wait4 keeps the child's own peak memory (Popen.wait would lose it)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - t0 > timeout and not stopped:
            proc.kill()
            stopped = True
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    mb = f"{usage.ru_maxrss / 1024:.0f}"
    if stopped:
        return f"> {timeout:.0f} (stopped)", mb
    if code != 0:
        last = (err.strip().splitlines() or ["?"])[-1][:80]
        return f"failed: {last}", mb
    return f"{seconds:.1f}", mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,500,1000,2000")
    ap.add_argument("--methods", default="flip-vote")
    ap.add_argument("--limit-gb", type=float, default=16.0)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--work", default="runs/bench_box_size")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    print("| method | box px | image px | seconds | peak memory (MB) |")
    print("|---|---|---|---|---|")
    for size in (int(s) for s in a.sizes.split(",")):
        path, box = make_case(size, work)
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        for method in a.methods.split(","):
            out = work / f"out-{method}-{size}"
            sec, mb = run(["segment", "--image", str(path), "--box", box, "--method", method,
                           "--out", str(out)], a.limit_gb, a.timeout)
            print(f"| {method} | {size} | {w} x {h} | {sec} | {mb} |", flush=True)


if __name__ == "__main__":
    main()

"""Memory and time of ``flipseg label`` and ``flipseg evaluate`` on 1,000 and 10,000 images.

    python benchmarks/stream.py                          # this checkout
    PYTHONPATH=OLD/src python benchmarks/stream.py       # another checkout, to compare
    python benchmarks/stream.py --sizes 1000,10000,100000 --method ellipse

Writes a folder dataset (``images/``, ``masks/``, ``boxes.csv``) of N phantom images (50
distinct 2D phantoms of 256 x 256 pixels, repeated: the readers read every file) under
``--work``, then runs each command as a fresh process and reports its peak resident memory
(``ru_maxrss`` of that process) and its wall time per case. ``--method ellipse`` (default)
keeps the segmentation itself cheap, so the table shows what the data handling costs; with
a real method the time per case grows, the memory does not. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def make_folder(root: Path, n: int, side: int) -> Path:
    """``root/images``, ``root/masks``, ``root/boxes.csv`` with ``n`` images (reused if there)."""
    import numpy as np

    from flipseg.data import make_phantom_2d, write_png

    done = root / ".complete"
    if done.is_file() and done.read_text() == f"{n} {side}":
        return root
    shutil.rmtree(root, ignore_errors=True)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    base = []
    for k in range(50):
        s = make_phantom_2d(k, shape=(side, side))
        base.append((np.clip(s["image"], 0, 255).astype(np.uint8), s["mask"], s["box"]))
    lines = ["case_id,x0,y0,x1,y1"]
    for i in range(n):
        im, m, b = base[i % len(base)]
        name = f"case{i:06d}"
        if i < len(base):
            write_png(root / "images" / f"{name}.png", im)
            write_png(root / "masks" / f"{name}.png", m.astype(np.uint8) * 255)
        else:  # the same bytes as an earlier file: a copy, made fast
            src = f"case{i % len(base):06d}.png"
            shutil.copyfile(root / "images" / src, root / "images" / f"{name}.png")
            shutil.copyfile(root / "masks" / src, root / "masks" / f"{name}.png")
        lines.append(f"{name},{b.x0},{b.y0},{b.x1},{b.y1}")
    (root / "boxes.csv").write_text("\n".join(lines) + "\n")
    done.write_text(f"{n} {side}")
    return root


def run(argv: list[str]) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit code) of ``python -m flipseg.cli ARGV``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "flipseg.cli", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 3):
        sys.exit(f"failed ({code}): flipseg {' '.join(argv)}\n{err[-2000:]}")
    return seconds, usage.ru_maxrss / 1024.0, code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--method", default="ellipse")
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--commands", default="label,evaluate")
    ap.add_argument("--work", default="runs/bench_stream")
    a = ap.parse_args()
    work = Path(a.work)
    print("| command | images | peak memory (MB) | s per case | wall s |")
    print("|---|---|---|---|---|")
    for n in (int(x) for x in a.sizes.split(",")):
        data = make_folder(work / f"data-{n}", n, a.side)
        for cmd in a.commands.split(","):
            out = work / f"out-{cmd}-{n}"
            shutil.rmtree(out, ignore_errors=True)
            if cmd == "label":
                argv = ["label", "--images", str(data / "images"), "--boxes",
                        str(data / "boxes.csv"), "--method", a.method, "--format", "png",
                        "--out", str(out), "--no-progress"]
            else:
                argv = ["evaluate", "--dataset", "folder", "--data-root", str(data),
                        "--method", a.method, "--out", str(out), "--no-progress"]
            seconds, mb, _code = run(argv)
            print(f"| {cmd} | {n} | {mb:.0f} | {seconds / n:.4f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()

"""CLI start-up: seconds until ``flipseg`` answers, for help and for one-line input errors.

    python benchmarks/startup.py                      # this checkout
    python benchmarks/startup.py --src /tmp/old/src   # another checkout's package, to compare

Each command runs ``--repeats`` times in a fresh interpreter (``python -m flipseg.cli``);
the table gives the median and the fastest wall-clock seconds and the exit code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "flipseg" / "data" / "samples" / "bus_0002-l.png"

COMMANDS = {
    "flipseg --help": ["--help"],
    "flipseg segment --help": ["segment", "--help"],
    "segment: missing image": ["segment", "--image", "/nonexistent.png", "--box", "1,2,30,40",
                               "--out", "/tmp/flipseg-startup"],
    "segment: bad box (3 numbers)": ["segment", "--image", str(SAMPLE), "--box", "1,2,3",
                                     "--out", "/tmp/flipseg-startup"],
    "segment: box outside the image": ["segment", "--image", str(SAMPLE), "--box",
                                       "5000,5000,5010,5010", "--out", "/tmp/flipseg-startup"],
    "evaluate: unknown dataset": ["evaluate", "--dataset", "nope", "--out", "/tmp/flipseg-startup"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=None, help="put this folder first on PYTHONPATH")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    env = dict(os.environ)
    if a.src:
        env["PYTHONPATH"] = a.src + os.pathsep + env.get("PYTHONPATH", "")
    print(f"| command ({a.src or 'installed flipseg'}) | median s | min s | exit |")
    print("|---|---|---|---|")
    for label, argv in COMMANDS.items():
        times, rc = [], None
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            rc = subprocess.run([sys.executable, "-m", "flipseg.cli", *argv], env=env,
                                capture_output=True).returncode
            times.append(time.perf_counter() - t0)
        print(f"| {label} | {statistics.median(times):.2f} | {min(times):.2f} | {rc} |")


if __name__ == "__main__":
    main()

"""Fixtures of the ``flipseg serve`` tests: small 2D and 3D data folders, a quality model,
sessions and API clients, a live server in a subprocess and headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="flipseg serve needs the serve extra (pip install -e .[test])")

from flipseg.boxes import Box  # noqa: E402
from flipseg.qc import FEATURES  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "src" / "flipseg" / "data" / "samples"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: The 2D fixture: these samples with a box each, and one image without a box.
BOXED = ("bus_0002-l", "bus_0005-l", "bus_0329-r")
UNBOXED = "bus_0349-l"


def make_data2d(root: Path) -> Path:
    """``root/images/*.png`` + ``root/boxes.csv``: three boxed BUS-BRA samples and one image
    without a box (drawn on the page)."""
    from flipseg.data.folder import read_any_mask

    (root / "images").mkdir(parents=True)
    rows = ["case_id,x0,y0,x1,y1"]
    for stem in BOXED + (UNBOXED,):
        shutil.copy(SAMPLES / f"{stem}.png", root / "images" / f"{stem}.png")
        if stem in BOXED:
            from PIL import Image

            w, h = Image.open(SAMPLES / f"{stem}.png").size
            mask = read_any_mask([SAMPLES / f"mask_{stem[4:]}.png"], (h, w))
            rows.append(f"{stem}," + ",".join(map(str, Box.from_mask(mask).as_tuple())))
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    return root


def make_data3d(root: Path) -> Path:
    """``root/images/vol.nii.gz`` (a phantom with 2 x 0.5 x 0.5 mm voxels, an oblique-free
    affine with an origin) and ``root/boxes.csv`` without its box (drawn on the page)."""
    from flipseg.data import load_dataset
    from flipseg.data.volumes import write_volume

    case = load_dataset("phantom3d", None, n=1)[0]
    (root / "images").mkdir(parents=True)
    sz, sy, sx = case["spacing"]
    affine = np.diag([sx, sy, sz, 1.0])
    affine[:3, 3] = (-10.0, 20.0, 5.0)
    write_volume(root / "images" / "vol.nii.gz", case["image"].astype(np.float32),
                 {"format": None, "affine": affine, "shape": case["image"].shape})
    np.save(root / "truth_box.npy", np.array(case["box"].as_tuple()))
    return root


def write_quality_model(path: Path) -> Path:
    """A fitted-looking quality model whose score grows with the mask's fill of its box."""
    coef = [0.0] * (len(FEATURES) + 1)
    coef[FEATURES.index("fill")] = 3.0
    model = {"features": list(FEATURES), "mean": [0.0] * len(coef), "std": [1.0] * len(coef),
             "coef": coef, "intercept": -1.5}
    path.write_text(json.dumps(model))
    return path


@pytest.fixture
def data2d(tmp_path) -> Path:
    return make_data2d(tmp_path / "data")


@pytest.fixture
def qmodel(tmp_path) -> Path:
    return write_quality_model(tmp_path / "qc.json")


@pytest.fixture
def session2d(data2d, qmodel, tmp_path):
    from flipseg.serve.session import Session

    s = Session(data2d, out=tmp_path / "out", method="ellipse", quality_model=qmodel)
    yield s
    s.close()


def make_client(app, **kwargs):
    """Starlette's TestClient (its note that httpx will be replaced is not ours to fix)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    kwargs.setdefault("base_url", "http://127.0.0.1:8000")
    return TestClient(app, raise_server_exceptions=False, **kwargs)


@pytest.fixture
def client(session2d):
    from flipseg.serve.app import create_app

    with make_client(create_app(session2d)) as c:
        yield c


# ------------------------------------------------------------------ a live server
class LiveServer:
    """``flipseg serve`` in a subprocess (``--port 0``); ``url`` is the address it printed."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "flipseg.cli", "serve", *args, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env)
        self.lines: list[str] = []
        deadline = time.time() + 120
        self.url = None
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"open (http://\S+)", line)
            if m:
                self.url = m.group(1)
                break
        if self.url is None:
            self.kill()
            raise RuntimeError("flipseg serve did not start:\n" + "".join(self.lines)
                               + (self.proc.stdout.read() or ""))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def chromium_ok():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        msg = (f"{CHROMIUM} / {CHROMEDRIVER} not installed (apt-get install chromium "
               "chromium-driver; scripts/test.sh does it)")
        if os.environ.get("CI"):
            pytest.fail("browser tests must run in CI: " + msg)
        pytest.skip(msg)
    pytest.importorskip("selenium", reason="pip install -e .[test] installs selenium")


@pytest.fixture(scope="module")
def browser(chromium_ok):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,900", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()

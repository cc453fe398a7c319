"""Mouse-up to mask shown on the page, for 20 real BUS-BRA boxes (flip-vote, this CPU).

Prints the median and the maximum; ``latency.json`` in the test's folder keeps every box."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from .conftest import LiveServer
from .test_browser import draw_box, open_page, shown, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("chromium_ok")]
N_BOXES = 20


def test_latency_of_20_busbra_boxes(browser, tmp_path):
    from flipseg.data import default_data_root, load_dataset
    from flipseg.data.io import write_png
    from flipseg.viz import to_uint8

    root = default_data_root("bus-bra")
    if not (root / "bus_data.csv").is_file():
        pytest.skip(f"BUS-BRA is not at {root}")
    cases = load_dataset("bus-bra", None, part="test", fold=5)[:N_BOXES + 1]
    (tmp_path / "data").mkdir()
    for c in cases:
        write_png(tmp_path / "data" / f"{c['case_id']}.png", to_uint8(c["image"]))
    srv = LiveServer(str(tmp_path / "data"), "--out", str(tmp_path / "out"))
    try:
        open_page(browser, srv)
        ids = {it["case_id"]: it["id"] for it in browser.execute_script("return window.flipseg.state.items")}
        latencies = []
        for k, c in enumerate([cases[-1]] + cases[:N_BOXES]):  # the first one warms up
            browser.execute_script("window.flipseg.openItem(arguments[0])", ids[c["case_id"]])
            wait_for(browser, "return window.flipseg.state.cur.id === arguments[0]", ids[c["case_id"]])
            before = shown(browser)
            b = c["box"]
            draw_box(browser, 0, (b.x0, b.y0, b.x1, b.y1))
            wait_for(browser, "return Number(document.body.dataset.shown || 0) > arguments[0]", before,
                     timeout=120)
            ms = browser.execute_script("return window.flipseg.state.latencies.slice(-1)[0]")
            if k:
                latencies.append(ms)
            time.sleep(0.1)
        med, top = float(np.median(latencies)), float(np.max(latencies))
        (tmp_path / "latency.json").write_text(json.dumps({"ms": latencies, "median": med, "max": top}))
        print(f"\nmouse-up to mask shown, flip-vote, {N_BOXES} BUS-BRA boxes: median {med:.0f} ms, "
              f"max {top:.0f} ms")
        assert len(latencies) == N_BOXES and med < 5000
    finally:
        srv.kill()

"""The review page in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
Selenium): boxes drawn with the mouse, masks shown, brushed, accepted, found on disk; the
shortcuts; the review queue; the three views of a volume; two tabs; a server restart."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from flipseg.boxes import Box
from flipseg.serve.session import decode_rle

from .conftest import BOXED, SAMPLES, UNBOXED, LiveServer, make_data2d, make_data3d, write_quality_model

DOCS = Path(__file__).resolve().parents[2] / "docs"
#: FLIPSEG_DOCS_SCREENSHOTS=1 also writes docs/serve-2d.png and docs/serve-3d.png.
WRITE_DOCS = os.environ.get("FLIPSEG_DOCS_SCREENSHOTS") == "1"

pytestmark = pytest.mark.usefixtures("chromium_ok")


# ------------------------------------------------------------------ helpers
def api(srv: LiveServer, path: str, body: dict | None = None, method: str | None = None) -> dict:
    method = method or ("POST" if body is not None else "GET")
    req = urllib.request.Request(srv.url.split("?")[0].rstrip("/") + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def wait_for(driver, script: str, *args, timeout: float = 90.0):
    end = time.time() + timeout
    while time.time() < end:
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.05)
    msg = driver.execute_script("return document.querySelector('#message-text').textContent")
    raise AssertionError(f"timed out waiting for: {script} (page says: {msg!r})")


def wait_api(srv, path, check, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        got = api(srv, path)
        if check(got):
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting on {path}: {got}")


def open_page(driver, srv) -> None:
    driver.get(srv.url)
    wait_for(driver, "return document.body.dataset.ready === '1'")


def shown(driver) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.shown || 0)"))


def current(driver) -> int:
    return driver.execute_script("return window.flipseg.state.cur.id")


def key(driver, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for k in keys:
        ActionChains(driver).send_keys(k).perform()


def drag(driver, view: int, p0, p1, *, steps: int = 4) -> None:
    """A left-button drag in view ``view`` from image point ``p0`` to ``p1`` ((u, v) pixels)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    cv = driver.find_elements(By.CSS_SELECTOR, "#views canvas")[view]
    w, h = cv.size["width"], cv.size["height"]

    def at(p):
        x, y = driver.execute_script("return window.flipseg.imageToCanvas(arguments[0], arguments[1], "
                                     "arguments[2])", view, float(p[0]), float(p[1]))
        return round(x - w / 2), round(y - h / 2)

    ac = ActionChains(driver, duration=15)
    ac.move_to_element_with_offset(cv, *at(p0)).click_and_hold()
    for s in range(1, steps + 1):
        ac.move_to_element_with_offset(cv, *at([a + (b - a) * s / steps for a, b in zip(p0, p1)]))
    ac.release().perform()


def draw_box(driver, view: int, box: tuple[int, int, int, int]) -> None:
    """Draw box (u0, v0, u1, v1) in a view: press a little outside the corner pixel edges."""
    drag(driver, view, (box[0] + 0.2, box[1] + 0.2), (box[2] + 0.2, box[3] + 0.2))


def red_at(driver, view: int, u: float, v: float) -> bool:
    """Whether the view shows the mask's red at image point (u, v)."""
    return driver.execute_script("""
        const [k, u, v] = arguments; const cv = document.querySelectorAll('#views canvas')[k];
        const [x, y] = window.flipseg.imageToCanvas(k, u, v);
        const p = cv.getContext('2d').getImageData(Math.round(x), Math.round(y), 1, 1).data;
        return p[0] > p[1] + 40 && p[0] > p[2] + 40;""", view, u, v)


def lesion_box(stem: str) -> Box:
    from PIL import Image

    from flipseg.data.folder import read_any_mask

    w, h = Image.open(SAMPLES / f"{stem}.png").size
    return Box.from_mask(read_any_mask([SAMPLES / f"mask_{stem[4:]}.png"], (h, w)))


def set_slices(driver, z: int, y: int, x: int) -> None:
    driver.execute_script("window.flipseg.setSlices(arguments[0], arguments[1], arguments[2])", z, y, x)


def screenshot(driver, path: Path, docs_name: str | None = None) -> None:
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    if WRITE_DOCS and docs_name:
        shutil.copy(path, DOCS / docs_name)


@pytest.fixture
def data(tmp_path):
    return make_data2d(tmp_path / "data"), write_quality_model(tmp_path / "qc.json")


@pytest.fixture
def ellipse_server(data, tmp_path):
    folder, q = data
    srv = LiveServer(str(folder), "--out", str(tmp_path / "out"), "--method", "ellipse",
                     "--quality-model", str(q))
    yield srv
    srv.kill()


# ------------------------------------------------------------------ 2D
def test_draw_box_brush_accept(browser, data, tmp_path):
    """flip-vote: a box drawn with the mouse on an image without one, its mask, a brush
    stroke, accept: the PNG on disk is the corrected mask."""
    folder, q = data
    srv = LiveServer(str(folder), "--out", str(tmp_path / "out"), "--quality-model", str(q))
    try:
        open_page(browser, srv)
        item = BOXED.index(BOXED[-1]) + 1  # the image without a box is the last item
        browser.find_element("css selector", f"#list li[data-id='{item}']").click()
        wait_for(browser, f"return window.flipseg.state.cur && window.flipseg.state.cur.id === {item}")
        b = lesion_box(UNBOXED).expand(4).clip((10_000, 10_000))
        before = shown(browser)
        draw_box(browser, 0, (b.x0, b.y0, b.x1, b.y1))
        wait_for(browser, "return Number(document.body.dataset.shown || 0) > arguments[0]", before)
        d = api(srv, f"/api/items/{item}")
        assert d["state"] == "proposed" and d["method"] == "flip-vote"
        assert np.abs(np.subtract(d["box"], [b.x0, b.y0, b.x1, b.y1])).max() <= 2, d["box"]
        mask = decode_rle(d["mask"], d["shape"])
        assert mask.sum() > 100 and sorted(d["voters"]) == ["boxinst", "flip", "flip-grabcut"]
        assert red_at(browser, 0, *[(lo + hi) / 2 for lo, hi in ((d["box"][0], d["box"][2]),
                                                                   (d["box"][1], d["box"][3]))])
        # a brush stroke outside the mask
        key(browser, "d")
        u = min(d["box"][2] + 12, d["shape"][1] - 8)
        v0, v1 = d["box"][1] + 2, d["box"][1] + 22
        assert not mask[v0:v1, u].any()
        drag(browser, 0, (u, v0), (u, v1))
        d2 = wait_api(srv, f"/api/items/{item}", lambda x: x["version"] > d["version"])
        fixed = decode_rle(d2["mask"], d2["shape"])
        assert fixed[v0 + 3:v1 - 3, u].all() and (fixed & ~mask).sum() > 50
        browser.find_element("css selector", "#voters").click()
        legend = browser.find_element("css selector", "#legend").text
        assert "mask (flip-vote)" in legend and "boxinst" in legend
        screenshot(browser, tmp_path / "serve-2d.png", "serve-2d.png")
        key(browser, "a")
        d3 = wait_api(srv, f"/api/items/{item}", lambda x: x["state"] == "accepted")
        from PIL import Image

        png = np.asarray(Image.open(tmp_path / "out" / "png" / f"{UNBOXED}.png"))
        np.testing.assert_array_equal(png > 0, decode_rle(d3["mask"], d3["shape"]))
        np.testing.assert_array_equal(png > 0, fixed)
        ms = browser.execute_script("return window.flipseg.state.latencies")
        print(f"mouse-up to mask shown: {ms[0]:.0f} ms (flip-vote, first box of the server)")
    finally:
        srv.kill()


def test_shortcuts_and_undo(browser, ellipse_server, tmp_path):
    srv = ellipse_server
    open_page(browser, srv)
    assert current(browser) == 0
    before = shown(browser)
    key(browser, "s")  # segment the item's box from boxes.csv
    wait_for(browser, "return Number(document.body.dataset.shown || 0) > arguments[0]", before)
    png = tmp_path / "out" / "png" / f"{BOXED[0]}.png"
    key(browser, "a")  # accept, then the next item opens
    wait_for(browser, "return window.flipseg.state.cur.id === 1")
    assert api(srv, "/api/items/0")["state"] == "accepted" and png.is_file()
    key(browser, "z")  # undo: back to item 0, proposed again, the file gone
    wait_for(browser, "const c = window.flipseg.state.cur; return c.id === 0 && c.state === 'proposed'")
    wait_api(srv, "/api/items/0", lambda x: x["state"] == "proposed")
    assert not png.exists()
    key(browser, "x")  # reject
    wait_for(browser, "return window.flipseg.state.cur.id === 1")
    assert api(srv, "/api/items/0")["state"] == "rejected"
    li = browser.find_element("css selector", "#list li[data-id='0']")
    assert li.get_attribute("data-state") == "rejected"
    key(browser, "n")
    wait_for(browser, "return window.flipseg.state.cur.id === 2")
    key(browser, "p")
    wait_for(browser, "return window.flipseg.state.cur.id === 1")
    key(browser, "\ue015")  # arrow down
    wait_for(browser, "return window.flipseg.state.cur.id === 2")
    key(browser, "e")
    assert browser.execute_script("return window.flipseg.state.tool") == "eraser"
    key(browser, "h")
    assert browser.execute_script("return window.flipseg.state.tool") == "pan"
    key(browser, "b", "v")
    got = browser.execute_script("return [window.flipseg.state.tool, window.flipseg.state.showVoters]")
    assert got == ["box", True]
    # zoom with the wheel about the cursor, fit with F
    scale0 = browser.execute_script("return window.flipseg.state.views[0].scale")
    browser.execute_script("""const cv = document.querySelector('#views canvas');
        const r = cv.getBoundingClientRect();
        cv.dispatchEvent(new WheelEvent('wheel', {deltaY: -300, clientX: r.left + 50, clientY: r.top + 50,
                                                  bubbles: true, cancelable: true}));""")
    assert browser.execute_script("return window.flipseg.state.views[0].scale") > scale0 * 1.3
    key(browser, "f")
    assert abs(browser.execute_script("return window.flipseg.state.views[0].scale") - scale0) < 1e-6
    # pan with the hand tool
    key(browser, "h")
    ox0 = browser.execute_script("return window.flipseg.state.views[0].ox")
    drag(browser, 0, (50, 50), (90, 50))
    assert browser.execute_script("return window.flipseg.state.views[0].ox") > ox0 + 20
    key(browser, "b")
    # window/level: a narrow window makes the image's mid-greys black or white
    grey = "return Array.from(window.flipseg.state.lut.slice(100, 103))"
    assert browser.execute_script(grey) == [100, 101, 102]
    browser.execute_script("""for (const [id, v] of [['window', 20], ['level', 200]]) {
        const el = document.getElementById(id); el.value = v; el.dispatchEvent(new Event('input')); }""")
    assert browser.execute_script(grey) == [0, 0, 0]


def test_review_queue_and_segment_every_box(browser, ellipse_server):
    srv = ellipse_server
    open_page(browser, srv)
    browser.find_element("css selector", "#segment-all").click()
    assert browser.find_element("css selector", "#segment-all").text in ("Stop", "Segment every box")
    wait_for(browser, "return document.body.dataset.job === 'done'")
    assert browser.find_element("css selector", "#segment-all").text == "Segment every box"
    prog = browser.find_element("css selector", "#progress")
    assert prog.get_attribute("value") == prog.get_attribute("max") == "3"
    # one mask made much worse: it must lead the queue
    d = api(srv, "/api/items/1")
    small = np.zeros(d["shape"], bool)
    small[d["box"][1]:d["box"][1] + 4, d["box"][0]:d["box"][0] + 4] = True
    from flipseg.serve.session import encode_rle

    api(srv, "/api/items/1", {"version": d["version"], "mask": encode_rle(small)}, method="PUT")
    browser.find_element("css selector", "#tab-queue").click()
    browser.execute_script("return 0")
    wait_for(browser, "return document.querySelectorAll('#list li').length === 3")
    key(browser, "n")  # refreshes the lists as well
    wait_for(browser, "return document.querySelector('#list li').dataset.id === '1'")
    ids = [int(li.get_attribute("data-id")) for li in browser.find_elements("css selector", "#list li")]
    rows = browser.find_elements("css selector", "#list li")
    qs = [float(li.find_element("css selector", ".q").text) for li in rows]
    assert ids[0] == 1 and qs == sorted(qs) and ids == [q["id"] for q in api(srv, "/api/queue")]


def test_two_tabs_get_a_clear_conflict(browser, ellipse_server):
    srv = ellipse_server
    api(srv, "/api/items/0/segment", {"version": 0})
    open_page(browser, srv)
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    open_page(browser, srv)
    key(browser, "a")  # tab B accepts
    wait_api(srv, "/api/items/0", lambda x: x["state"] == "accepted")
    browser.close()
    browser.switch_to.window(first)
    key(browser, "x")  # tab A still has the old version: refused with a message
    wait_for(browser, "return !document.querySelector('#message').hidden")
    text = browser.find_element("css selector", "#message-text").text
    assert "saved elsewhere" in text and "reload" in text
    assert api(srv, "/api/items/0")["state"] == "accepted"  # nothing overwritten
    browser.find_element("css selector", "#reload").click()
    wait_for(browser, "return window.flipseg.state.cur.state === 'accepted'")


def test_restart_keeps_accepted_masks(browser, data, tmp_path):
    folder, q = data
    args = (str(folder), "--out", str(tmp_path / "out"), "--method", "ellipse", "--quality-model", str(q))
    srv = LiveServer(*args)
    try:
        open_page(browser, srv)
        before = shown(browser)
        key(browser, "s")
        wait_for(browser, "return Number(document.body.dataset.shown || 0) > arguments[0]", before)
        key(browser, "d")
        d = api(srv, "/api/items/0")
        drag(browser, 0, (2, 2), (2, 30))  # a brush stroke, then accept
        d = wait_api(srv, "/api/items/0", lambda x, v=d["version"]: x["version"] > v)
        key(browser, "a")
        accepted = wait_api(srv, "/api/items/0", lambda x: x["state"] == "accepted")
    finally:
        srv.kill()  # SIGKILL: no clean shutdown
    srv = LiveServer(*args)
    try:
        open_page(browser, srv)
        li = browser.find_element("css selector", "#list li[data-id='0']")
        assert li.get_attribute("data-state") == "accepted"
        browser.execute_script("window.flipseg.openItem(0)")
        wait_for(browser, "const c = window.flipseg.state.cur; return c.id === 0 && c.mask !== null")
        again = api(srv, "/api/items/0")
        assert again["mask"] == accepted["mask"] == d["mask"] and again["version"] == accepted["version"]
        assert decode_rle(again["mask"], again["shape"])[5:25, 2].all()
        screenshot(browser, tmp_path / "after-restart.png")
    finally:
        srv.kill()


# ------------------------------------------------------------------ 3D
def test_volume_three_views(browser, tmp_path):
    """A volume: the box from two views (axial, then coronal), flip's mask shown in all three,
    accepted as NIfTI with the input's geometry."""
    import nibabel as nib

    data = make_data3d(tmp_path / "d3")
    x0, y0, x1, y1, z0, z1 = np.load(data / "truth_box.npy").tolist()
    srv = LiveServer(str(data), "--out", str(tmp_path / "out"),
                     "--quality-model", str(tmp_path / "none.json"))
    try:
        open_page(browser, srv)
        assert len(browser.find_elements("css selector", "#views canvas")) == 3
        assert len(browser.find_elements("css selector", ".view-bar input[type=range]")) == 3
        zc, yc, xc = (z0 + z1) // 2, (y0 + y1) // 2, (x0 + x1) // 2
        set_slices(browser, zc, yc, xc)
        before = shown(browser)
        draw_box(browser, 0, (x0, y0, x1, y1))  # axial: x and y
        assert "coronal" in browser.find_element("css selector", "#item-hint").text
        draw_box(browser, 1, (x0, z0, x1, z1))  # coronal: x and z
        wait_for(browser, "return Number(document.body.dataset.shown || 0) > arguments[0]", before)
        d = api(srv, "/api/items/0")
        assert d["state"] == "proposed" and d["method"] == "flip" and len(d["box"]) == 6
        assert np.abs(np.subtract(d["box"], [x0, y0, x1, y1, z0, z1])).max() <= 2, d["box"]
        mask = decode_rle(d["mask"], d["shape"])
        zc, yc, xc = (int(np.mean(a)) for a in np.nonzero(mask))
        set_slices(browser, zc, yc, xc)
        assert mask[zc, yc, xc]
        # a voxel of the mask beside the crosshair lines, in each plane through the centre
        assert mask[zc, yc + 2, xc + 2] and mask[zc + 1, yc, xc + 2] and mask[zc + 1, yc + 2, xc]
        assert red_at(browser, 0, xc + 2.5, yc + 2.5)  # axial
        assert red_at(browser, 1, xc + 2.5, zc + 1.5)  # coronal
        assert red_at(browser, 2, yc + 2.5, zc + 1.5)  # sagittal
        slider = browser.find_elements("css selector", ".view-bar input[type=range]")[0]
        assert slider.get_attribute("value") == str(zc)
        screenshot(browser, tmp_path / "serve-3d.png", "serve-3d.png")
        key(browser, "a")
        wait_api(srv, "/api/items/0", lambda x: x["state"] == "accepted")
        got = nib.load(str(tmp_path / "out" / "nifti" / "vol.nii.gz"))
        src = nib.load(str(data / "images" / "vol.nii.gz"))
        np.testing.assert_allclose(got.affine, src.affine)
        np.testing.assert_array_equal(np.asarray(got.dataobj).transpose(2, 1, 0) > 0, mask)
    finally:
        srv.kill()

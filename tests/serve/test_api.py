"""Every endpoint of ``flipseg serve`` through Starlette's TestClient, bad input included."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from flipseg.serve.session import decode_rle, encode_rle

from .conftest import BOXED, UNBOXED


def _ok(r, status=200):
    assert r.status_code == status, r.text
    return r.json()


def _err(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and body["error"], body
    return body["error"]


def _ids(client):
    return {it["case_id"]: it["id"] for it in client.get("/api/items").json()}


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (3, 4, 6)]:
        for m in (rng.random(shape) > 0.5, np.zeros(shape, bool), np.ones(shape, bool)):
            rle = encode_rle(m)
            assert rle["counts"][0] == (0 if m.flat[0] else rle["counts"][0])
            np.testing.assert_array_equal(decode_rle(rle, shape), m)


def test_page_static_and_info(client):
    page = client.get("/")
    assert page.status_code == 200 and "flipseg" in page.text and "/static/app.js" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: everything local
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").status_code == 200
    _err(client.get("/static/nope.js"), 404)
    info = _ok(client.get("/api/info"))
    assert info["dims"] == 2 and info["items"] == 4 and info["method"] == "ellipse"
    assert {"flip-vote", "ellipse", "boxinst"} <= set(info["methods"])
    assert info["quality"] is True and info["formats"] == ["png", "nifti", "coco", "nnunet"]


def test_items_image_and_detail(client, session2d):
    items = _ok(client.get("/api/items"))
    assert [it["case_id"] for it in items] == list(BOXED) + [UNBOXED]
    assert all(it["state"] == "todo" and it["version"] == 0 for it in items)
    assert items[-1]["box"] is None and len(items[0]["box"]) == 4
    r = client.get("/api/items/0/image")
    h, w = np.shape(session2d.cases[0]["image"])
    assert r.headers["x-shape"] == f"{h},{w}" and len(r.content) == h * w
    d = _ok(client.get("/api/items/0"))
    assert d["shape"] == [h, w] and d["mask"] is None and d["voters"] == {}
    _err(client.get("/api/items/4"), 404)
    _err(client.get("/api/items/99999999999999999999"), 404)
    _err(client.get("/api/items/abc"), 404)
    _err(client.get("/api/items/-1"), 404)


def test_segment_save_accept_reject(client, session2d):
    out = session2d.out
    d = _ok(client.post("/api/items/0/segment", json={"version": 0}))
    assert d["state"] == "proposed" and d["version"] == 1 and d["method"] == "ellipse"
    mask = decode_rle(d["mask"], d["shape"])
    assert mask.sum() > 50 and 0.0 < d["quality"] < 1.0
    # a brush correction: a few pixels more
    fixed = mask.copy()
    fixed[:5, :5] = True
    d2 = _ok(client.put("/api/items/0", json={"version": 1, "mask": encode_rle(fixed)}))
    assert d2["version"] == 2 and d2["state"] == "proposed"
    np.testing.assert_array_equal(decode_rle(d2["mask"], d2["shape"]), fixed)
    # accept: the mask is written as flipseg label writes it
    d3 = _ok(client.put("/api/items/0", json={"version": 2, "state": "accepted"}))
    assert d3["state"] == "accepted"
    png = out / "png" / f"{BOXED[0]}.png"
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(png)) > 0, fixed)
    # reject: no accepted file any more
    _ok(client.put("/api/items/0", json={"version": 3, "state": "rejected"}))
    assert not png.exists()
    # back to to-do: the mask goes
    d5 = _ok(client.put("/api/items/0", json={"version": 4, "state": "todo"}))
    assert d5["mask"] is None and d5["state"] == "todo"


def test_new_box_on_an_image_without_one(client):
    i = _ids(client)[UNBOXED]
    assert "draw one" in _err(client.post(f"/api/items/{i}/segment", json={"version": 0}), 400)
    d = _ok(client.post(f"/api/items/{i}/segment", json={"version": 0, "box": [60, 80, 140, 150.4]}))
    assert d["box"] == [60, 80, 140, 150]
    m = decode_rle(d["mask"], d["shape"])
    ys, xs = np.nonzero(m)
    assert xs.min() >= 60 and xs.max() < 140 and ys.min() >= 80 and ys.max() < 150


@pytest.mark.parametrize("box, words", [
    ([1, 2, 3], "give 4 numbers"), ("1,2,3,4", "give 4 numbers"), ([1, 2, 3, "4"], "give 4 numbers"),
    ([True, 2, 30, 40], "give 4 numbers"), ([10, 10, 10, 40], "empty"), ([5000, 5000, 6000, 6000], "outside"),
    ([1, 2, 30, 40, 0, 1], "give 4 numbers"), ([float("nan"), 2, 30, 40], "give 4 numbers"),
])
def test_segment_refuses_bad_boxes(client, box, words):
    body = json.dumps({"version": 0, "box": box}, allow_nan=True)
    r = client.post("/api/items/0/segment", content=body, headers={"content-type": "application/json"})
    assert words in _err(r, 400)


def test_segment_bad_requests(client):
    assert "one of" in _err(client.post("/api/items/0/segment", json={"version": 0, "method": "nope"}), 400)
    assert "method" in _err(client.post("/api/items/0/segment", json={"version": 0, "method": 3}), 400)
    assert "version" in _err(client.post("/api/items/0/segment", json={}), 400)
    assert "version" in _err(client.post("/api/items/0/segment", json={"version": "0"}), 400)
    assert "version" in _err(client.post("/api/items/0/segment", json={"version": True}), 400)
    assert "version" in _err(client.post("/api/items/0/segment", json={"version": 7}), 409)
    _err(client.post("/api/items/9/segment", json={"version": 0}), 404)
    _err(client.get("/api/items/0/segment"), 405)
    _err(client.delete("/api/items/0", headers={"content-type": "application/json"}), 405)
    _err(client.get("/api/nothing"), 404)


@pytest.mark.parametrize("body, status, words", [
    ({"version": 1, "mask": {"shape": [2, 2], "counts": [4]}}, 400, "shape"),
    ({"version": 1, "mask": "abc"}, 400, "counts"),
    ({"version": 1, "mask": {"counts": [1, 2]}}, 400, "shape"),
    ({"version": 1, "mask": "SHAPE", "counts": [-1]}, 400, "unknown field"),
    ({"version": 1, "state": "bogus"}, 400, "state"),
    ({"version": 1, "state": ["accepted"]}, 400, "state"),
    ({"version": 1, "box": {"x0": 1}}, 400, "box"),
    ({"version": 0, "state": "accepted"}, 409, "version"),
    ({"state": "accepted"}, 400, "version"),
])
def test_save_refuses_bad_input(client, body, status, words):
    _ok(client.post("/api/items/0/segment", json={"version": 0}))
    shape = client.get("/api/items/0").json()["shape"]
    if body.get("mask") == "SHAPE":
        body["mask"] = {"shape": shape, "counts": [int(np.prod(shape))]}
    assert words in _err(client.put("/api/items/0", json=body), status)


def test_save_checks_mask_counts(client):
    d = _ok(client.post("/api/items/0/segment", json={"version": 0}))
    n = int(np.prod(d["shape"]))
    for counts, words in [([n - 1], "add up"), ([-1, n + 1], "non-negative"), ([1.5, n - 1.5], "integers"),
                          ([True, n - 1], "integers")]:
        r = client.put("/api/items/0", json={"version": 1, "mask": {"shape": d["shape"], "counts": counts}})
        assert words in _err(r, 400)
    huge = {"version": 1, "mask": {"shape": d["shape"], "counts": [1] * (n + 1)}}
    assert "add up" in _err(client.put("/api/items/0", json=huge), 400)


def test_accepting_needs_a_mask(client):
    assert "needs a mask" in _err(client.put("/api/items/1", json={"version": 0, "state": "accepted"}), 400)


def test_a_mask_without_a_box_gets_its_own_box(client):
    i = _ids(client)[UNBOXED]
    shape = _ok(client.get(f"/api/items/{i}"))["shape"]
    empty = np.zeros(shape, bool)
    body = {"version": 0, "state": "accepted", "mask": encode_rle(empty)}
    assert "draw a box" in _err(client.put(f"/api/items/{i}", json=body), 400)
    painted = empty.copy()
    painted[10:20, 30:45] = True
    d = _ok(client.put(f"/api/items/{i}", json=dict(body, mask=encode_rle(painted))))
    assert d["box"] == [30, 10, 45, 20] and d["state"] == "accepted"
    assert _ok(client.post("/api/export", json={"formats": ["coco"]}))["accepted"] == 1
    todo = _ok(client.put(f"/api/items/{i}", json={"version": 1, "state": "todo",
                                                   "mask": encode_rle(painted)}))
    assert todo["mask"] is None  # to do has no mask


def test_stale_save_gets_409_and_nothing_is_corrupted(client, session2d):
    """Two tabs opened the item at version 1; the second save is refused with a clear message."""
    d = _ok(client.post("/api/items/0/segment", json={"version": 0}))
    m = decode_rle(d["mask"], d["shape"])
    tab_a, tab_b = m.copy(), m.copy()
    tab_a[:3] = True
    tab_b[-3:] = True
    _ok(client.put("/api/items/0", json={"version": 1, "mask": encode_rle(tab_a)}))
    msg = _err(client.put("/api/items/0", json={"version": 1, "mask": encode_rle(tab_b)}), 409)
    assert "saved elsewhere" in msg and "version 2 on disk, yours is 1" in msg and "reload" in msg
    now = _ok(client.get("/api/items/0"))
    assert now["version"] == 2
    np.testing.assert_array_equal(decode_rle(now["mask"], now["shape"]), tab_a)
    state = json.loads((session2d.out / "serve" / "state.json").read_text())
    assert state["items"][BOXED[0]]["version"] == 2
    masks = sorted(p.name for p in (session2d.out / "serve" / "masks").iterdir())
    assert masks == [f"{BOXED[0]}-v2.npz"]  # the old version's file is gone, no temporary left


def test_queue_worst_first_and_accepted_leave_it(client):
    for i in range(3):
        _ok(client.post(f"/api/items/{i}/segment", json={"version": 0}))
    # make one mask much worse: a few pixels only (low fill -> low score in the fixture model)
    d = _ok(client.get("/api/items/1"))
    small = np.zeros(d["shape"], bool)
    b = d["box"]
    small[b[1]:b[1] + 3, b[0]:b[0] + 3] = True
    _ok(client.put("/api/items/1", json={"version": 1, "mask": encode_rle(small)}))
    queue = _ok(client.get("/api/queue"))
    scores = [q["quality"] for q in queue]
    assert scores == sorted(scores) and len(queue) == 3 and queue[0]["id"] == 1
    _ok(client.put("/api/items/1", json={"version": 2, "state": "accepted"}))
    assert [q["id"] for q in _ok(client.get("/api/queue"))] == [q["id"] for q in queue[1:]]


def test_segment_all_with_progress(client, session2d):
    r = client.post("/api/segment-all", json={"method": "ellipse"})
    job = _ok(r, 202)
    assert job["running"] and job["total"] == 3
    for _ in range(200):
        job = _ok(client.get("/api/segment-all"))
        if not job["running"]:
            break
        time.sleep(0.05)
    assert job["done"] == 3 and job["errors"] == []
    states = {it["case_id"]: it["state"] for it in _ok(client.get("/api/items"))}
    assert states == {**{c: "proposed" for c in BOXED}, UNBOXED: "todo"}
    session2d.job.running = True  # a second start while one runs is refused
    assert "already running" in _err(client.post("/api/segment-all", json={}), 409)
    session2d.job.running = False
    assert "method" in _err(client.post("/api/segment-all", json={"method": ["x"]}), 400)
    assert "one of" in _err(client.post("/api/segment-all", json={"method": "nope"}), 400)
    stopped = _ok(client.delete("/api/segment-all", headers={"content-type": "application/json"}))
    assert stopped["running"] is False


def test_export_in_label_formats(client, session2d):
    assert "no accepted" in _err(client.post("/api/export", json={"formats": ["png"]}), 400)
    _ok(client.post("/api/items/0/segment", json={"version": 0}))
    _ok(client.put("/api/items/0", json={"version": 1, "state": "accepted"}))
    got = _ok(client.post("/api/export", json={"formats": ["png", "nifti", "coco", "nnunet"]}))
    assert got["accepted"] == 1 and got["written"][:3] == ["png/", "nifti/", "coco.json"]
    out = session2d.out
    assert (out / "png" / f"{BOXED[0]}.png").is_file()
    assert (out / "png" / "merged" / f"{BOXED[0]}.png").is_file()
    assert (out / "nifti" / f"{BOXED[0]}.nii.gz").is_file()
    from pycocotools.coco import COCO

    coco = COCO(str(out / "coco.json"))
    ann = coco.loadAnns(coco.getAnnIds())[0]
    mask = decode_rle(_ok(client.get("/api/items/0"))["mask"], coco.annToMask(ann).shape)
    np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)
    assert ann["attributes"]["case_id"] == BOXED[0]
    assert "dicom-seg" in _err(client.post("/api/export", json={"formats": ["dicom-seg"]}), 400)
    assert "one or several" in _err(client.post("/api/export", json={"formats": ["jpeg"]}), 400)
    assert "list" in _err(client.post("/api/export", json={"formats": "png"}), 400)


def test_state_survives_a_new_session(data2d, qmodel, tmp_path):
    from flipseg.serve.session import Session

    s1 = Session(data2d, out=tmp_path / "o", method="ellipse", quality_model=qmodel)
    d = s1.segment(0, None, None, 0)
    s1.save(0, d["version"], state="accepted")
    (tmp_path / "o" / "png" / f"{BOXED[0]}.png").unlink()  # as if it crashed before the file
    s1.close()
    s2 = Session(data2d, out=tmp_path / "o", method="ellipse", quality_model=qmodel)
    again = s2.detail(0)
    assert again["state"] == "accepted" and again["version"] == 2 and again["mask"] == d["mask"]
    assert (tmp_path / "o" / "png" / f"{BOXED[0]}.png").is_file()  # written again at start
    s2.close()


def test_without_quality_model(data2d, tmp_path):
    from flipseg.serve.session import Session

    s = Session(data2d, out=tmp_path / "o", method="ellipse", quality_model=tmp_path / "missing.json")
    assert s.info()["quality"] is False and "no quality score" in s.info()["quality_note"]
    assert s.segment(0, None, None, 0)["quality"] is None
    s.close()


def test_flip_vote_sends_its_voters(data2d, qmodel, tmp_path):
    from flipseg.serve.session import Session

    s = Session(data2d, out=tmp_path / "o", quality_model=qmodel)
    assert s.method == "flip-vote"
    d = s.segment(0, None, None, 0)
    assert sorted(d["voters"]) == ["boxinst", "flip", "flip-grabcut"] and d["method"] == "flip-vote"
    d2 = s.save(0, d["version"], mask=d["mask"])  # a correction keeps what the voters said
    assert d2["voters"] == d["voters"]
    s.close()


def test_volumes(tmp_path):
    """3D: a 6-number box, the mask in the volume's shape, saved as NIfTI with its geometry."""
    import nibabel as nib

    from flipseg.serve.session import Session

    from .conftest import make_data3d

    data = make_data3d(tmp_path / "d3")
    s = Session(data, out=tmp_path / "o3", method="ellipse", quality_model=tmp_path / "none.json")
    assert s.dims == 3 and s.info()["formats"] == ["nifti", "nnunet"] and "flip" in s.methods
    box = np.load(data / "truth_box.npy").tolist()
    d = s.segment(0, box, None, 0)
    assert len(d["shape"]) == 3 and decode_rle(d["mask"], d["shape"]).any()
    with pytest.raises(Exception, match="give 6 numbers"):
        s.segment(0, box[:4], None, d["version"])
    s.save(0, d["version"], state="accepted")
    got = nib.load(str(tmp_path / "o3" / "nifti" / "vol.nii.gz"))
    src = nib.load(str(data / "images" / "vol.nii.gz"))
    np.testing.assert_allclose(got.affine, src.affine)
    assert got.shape == src.shape
    np.testing.assert_array_equal(np.asarray(got.dataobj).transpose(2, 1, 0) > 0,
                                  decode_rle(d["mask"], d["shape"]))
    s.close()


def test_read_errors_are_one_line(tmp_path):
    from flipseg.errors import FlipsegError
    from flipseg.serve.session import Session

    with pytest.raises(FlipsegError, match="DATA not found"):
        Session(tmp_path / "nope", out=tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlipsegError, match="no image to review"):
        Session(tmp_path / "empty", out=tmp_path / "o")
    with pytest.raises(FlipsegError, match="holds the input"):
        Session(tmp_path / "empty", out=tmp_path)


def test_coco_input_keeps_its_ids(tmp_path, qmodel):
    """DATA + --boxes COCO.json as flipseg label reads them; the export keeps the COCO ids."""
    from PIL import Image

    from flipseg.serve.session import Session

    from .conftest import make_data2d

    data = make_data2d(tmp_path / "d")
    images, anns = [], []
    for k, stem in enumerate(BOXED[:2], start=1):
        w, h = Image.open(data / "images" / f"{stem}.png").size
        images.append({"id": 10 + k, "file_name": f"{stem}.png", "width": w, "height": h})
        anns.append({"id": 100 + k, "image_id": 10 + k, "category_id": 3, "bbox": [40, 50, 60, 45],
                     "area": 2700, "iscrowd": 0})
    coco = tmp_path / "instances.json"
    coco.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 3, "name": "lesion"}]}))
    s = Session(data / "images", boxes=coco, out=tmp_path / "o", method="ellipse", quality_model=qmodel)
    assert [it["box"] for it in s.items()] == [[40, 50, 100, 95]] * 2
    d = s.segment(1, None, None, 0)
    s.save(1, d["version"], state="accepted")
    s.export(["coco"])
    doc = json.loads((tmp_path / "o" / "coco.json").read_text())
    assert [i["id"] for i in doc["images"]] == [12] and [a["id"] for a in doc["annotations"]] == [102]
    s.close()


def test_dicom_folder_without_boxes(tmp_path, qmodel):
    """A folder of DICOM files and no box file: the images are listed to draw boxes on; the
    export offers DICOM-SEG."""
    from PIL import Image

    from flipseg.data.dicom import make_us_dicom
    from flipseg.serve.session import Session

    from .conftest import SAMPLES

    folder = tmp_path / "dicom"
    folder.mkdir()
    for k, stem in enumerate(BOXED[:2], start=1):
        grey = np.asarray(Image.open(SAMPLES / f"{stem}.png").convert("L"))
        make_us_dicom(grey, pixel_size_mm=0.1, instance_number=k).save_as(
            folder / f"{stem}.dcm", enforce_file_format=True)
    s = Session(folder, out=tmp_path / "o", method="ellipse", quality_model=qmodel)
    assert [it["box"] for it in s.items()] == [None, None] and "dicom-seg" in s.info()["formats"]
    d = s.segment(0, [40, 50, 100, 95], None, 0)
    assert d["spacing"] == [0.1, 0.1]
    s.save(0, d["version"], state="accepted")
    got = s.export(["dicom-seg", "png"])
    assert got["errors"] == [] and (tmp_path / "o" / "dicom-seg" / f"{BOXED[0]}.seg.dcm").is_file()
    s.close()

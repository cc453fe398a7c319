"""A box's mask is the same whether it is segmented alone or in a batch of 64, in the
Python API, ``flipseg segment`` and ``flipseg evaluate`` (20 real BUS-BRA boxes, exact)."""

import csv
from pathlib import Path

import numpy as np
import pytest

import flipseg
from flipseg.cli import main
from flipseg.data import load_dataset
from flipseg.data.io import read_image
from flipseg.metrics import compute_dice

BUSBRA = Path(__file__).parents[1].parent / "shared" / "data" / "BUS-BRA"
pytestmark = pytest.mark.skipif(not BUSBRA.is_dir(), reason=f"real BUS-BRA not found at {BUSBRA}")


@pytest.fixture(scope="module")
def cases():
    return load_dataset("bus-bra", str(BUSBRA), part="test", fold=5)[:64]


@pytest.fixture(scope="module")
def alone(cases):
    """flip-vote's masks of the first 20 boxes, each segmented on its own."""
    return [flipseg.segment(c["image"], c["box"], method="flip-vote")[0] for c in cases[:20]]


@pytest.mark.slow
def test_api_alone_equals_a_batch_of_64(cases, alone):
    seg = flipseg.make_segmenter("flip-vote")
    order = np.random.default_rng(0).permutation(64)  # the 20 boxes at other places too
    batch = seg.segment_many([cases[i]["image"] for i in order], [cases[i]["box"] for i in order])
    by_case = {int(i): m for i, m in zip(order, batch)}
    assert all(np.array_equal(alone[i], by_case[i]) for i in range(20))


@pytest.mark.slow
def test_cli_segment_and_evaluate_agree_with_alone(cases, alone, tmp_path):
    data = ["--dataset", "bus-bra", "--data-root", str(BUSBRA), "--fold", "5", "--limit", "20"]
    assert main(["segment", *data, "--out", str(tmp_path / "seg")]) == 0
    for c, m in zip(cases[:20], alone):
        assert np.array_equal(read_image(tmp_path / "seg" / f"{c['case_id']}_mask.png") > 0, m)
    assert main(["evaluate", *data, "--out", str(tmp_path / "ev"), "--no-progress"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "ev" / "cases.csv")))
    dice = {r["case_id"]: float(r["dice"]) for r in rows}
    for c, m in zip(cases[:20], alone):
        assert dice[c["case_id"]] == pytest.approx(compute_dice(m, c["mask"]), abs=1e-9)

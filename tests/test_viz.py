"""flipseg.viz: overlays enlarged with a legend, contact sheets of cases (tiny arrays)."""

import numpy as np
import pytest

from flipseg.boxes import Box
from flipseg.viz import BOX, PREDICTION, TRUTH, case_sheet, contact_sheet, legend_strip, overlay

LEGEND_ONE_LINE = 18 + 6  # px: one text line of legend_strip


def _has(picture: np.ndarray, rgb) -> bool:
    return bool((picture == np.array(rgb, np.uint8)).all(-1).any())


def test_small_overlay_is_enlarged_by_a_whole_factor_with_sharp_lines_and_a_legend():
    image = np.zeros((10, 20), np.float32)
    mask = np.zeros((10, 20), bool)
    mask[4:6, 5:9] = True
    pic = overlay(image, mask, box=Box(2, 3, 8, 7))
    k = 26  # ceil(256 / 10): the shorter side becomes 260 >= 256
    assert pic.dtype == np.uint8 and pic.shape == (10 * k + LEGEND_ONE_LINE, 20 * k, 3)
    body, strip = pic[: 10 * k], pic[10 * k :]
    # the fill of a black image: 0.25 * red, as k x k blocks (nearest), exactly
    fill = (np.array(PREDICTION[1]) * 0.25).astype(np.uint8)
    assert (body[5 * k + 3, 6 * k + 5] == fill).all()
    # box edges inside the blocks of its edge pixels, 2 px wide (round(520 / 300)):
    # rows 3k, 3k + 1 and 7k - 2, 7k - 1; nothing outside them
    yellow = np.array(BOX[1], np.uint8)
    for row in (3 * k, 3 * k + 1, 7 * k - 2, 7 * k - 1):
        assert (body[row, 2 * k : 8 * k] == yellow).all()
    for row in (3 * k - 1, 3 * k + 2, 7 * k - 3, 7 * k):
        assert not (body[row, 3 * k : 7 * k] == yellow).all(-1).any()
    assert (body[4 * k, 2 * k : 2 * k + 2] == yellow).all() and (body[4 * k, 2 * k - 1] == 0).all()
    # the legend names what is drawn: a red and a yellow swatch, no green (no truth given)
    assert (strip[2:-2, 2:4] == 32).all()  # dark strip
    assert _has(strip, PREDICTION[1]) and _has(strip, BOX[1]) and not _has(strip, TRUTH[1])


def test_large_overlay_keeps_its_size_and_nothing_drawn_means_no_legend():
    image = np.full((300, 400), 128, np.uint8)
    gt = np.zeros((300, 400), bool)
    gt[100:200, 100:300] = True
    assert overlay(image, gt=gt).shape == (300 + LEGEND_ONE_LINE, 400, 3)
    assert overlay(image).shape == (300, 400, 3)
    plain = overlay(np.zeros((10, 20)), gt[:10, :20], min_side=0, legend=False)
    assert plain.shape == (10, 20, 3)


def test_legend_wraps_onto_a_second_line_when_narrow():
    items = [PREDICTION, TRUTH, BOX]
    assert legend_strip(400, items).shape == (LEGEND_ONE_LINE, 400, 3)
    assert legend_strip(120, items).shape[0] > LEGEND_ONE_LINE
    assert legend_strip(50, []).shape == (0, 50, 3)


def test_contact_sheet_grid_titles_and_fit():
    blue = np.zeros((10, 20, 3), np.uint8)
    blue[..., 2] = 255
    sheet = contact_sheet([blue, blue, blue], ["a", "b\nDice 12.0 %", "c"], columns=2, tile_size=64)
    title = 2 * 18 + 6  # the tallest title has two lines; every bar gets its height
    cell = title + 64
    assert sheet.shape == (2 * cell + 4, 2 * 64 + 4, 3)
    # a 10 x 20 tile fits the 64 px square as 32 x 64, centred (rows 16..47)
    assert (sheet[title + 16, :64] == (0, 0, 255)).all() and (sheet[title + 15, 10] == 200).all()
    with_legend = contact_sheet([blue], ["a"], tile_size=64, legend=[PREDICTION])
    assert with_legend.shape[0] == 18 + 6 + 64 + LEGEND_ONE_LINE


@pytest.mark.parametrize("tiles, titles", [([], []), ([np.zeros((4, 4, 3), np.uint8)], [])])
def test_contact_sheet_refuses_bad_input(tiles, titles):
    with pytest.raises(ValueError):
        contact_sheet(tiles, titles)


def test_case_sheet_2d_and_3d_cases():
    img = np.zeros((40, 60), np.float32)
    gt = np.zeros((40, 60), bool)
    gt[10:20, 20:30] = True
    pred = np.zeros((40, 60), bool)
    pred[12:22, 22:32] = True
    vol = np.zeros((5, 40, 60), np.float32)
    vgt = np.zeros((5, 40, 60), bool)
    vgt[1:4, 10:20, 20:30] = True
    sheet = case_sheet([(img, Box(18, 8, 34, 24), pred, gt, "a\nDice 64.0 %"),
                        (vol, Box(18, 8, 34, 24, 1, 4), vgt, vgt, "v"),
                        (img, None, pred, None, "no box, no truth")], tile_size=96)
    assert sheet.dtype == np.uint8 and sheet.shape[1] == 3 * 96 + 2 * 4
    legend = sheet[-LEGEND_ONE_LINE:]
    assert _has(legend, PREDICTION[1]) and _has(legend, TRUTH[1]) and _has(legend, BOX[1])
    with pytest.raises(ValueError, match="differs from image"):
        case_sheet([(img, None, pred[:10], None, "bad")])

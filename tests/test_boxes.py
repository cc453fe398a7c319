import numpy as np
import pytest

from flipseg.boxes import Box, parse_shift_level, shift_box, shifted_boxes
from flipseg.errors import FlipsegError


def test_from_mask_is_tight_and_half_open_2d():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    b = Box.from_mask(m)
    assert b.as_tuple() == (3, 2, 9, 5)
    assert b.shape == (3, 6) and b.size == 18
    assert np.array_equal(b.to_mask(m.shape), m)


def test_from_mask_3d_and_slices():
    m = np.zeros((6, 7, 8), bool)
    m[1:3, 2:6, 4:5] = True
    b = Box.from_mask(m)
    assert b.ndim == 3 and b.as_tuple() == (4, 2, 5, 6, 1, 3)
    assert m[b.slices()].all() and m[b.slices()].size == m.sum()


@pytest.mark.parametrize("text", ["", "1,2,3", "a,b,c,d", "5,5,5,9", "1,2,3,4,5"])
def test_parse_rejects_bad_boxes(text):
    with pytest.raises(FlipsegError):
        Box.parse(text)


def test_validate_clips_and_rejects_outside_and_wrong_dims():
    assert Box(-5, -5, 4, 4).validate((10, 10)).as_tuple() == (0, 0, 4, 4)
    with pytest.raises(FlipsegError, match="outside"):
        Box(20, 20, 30, 30).validate((10, 10))
    with pytest.raises(FlipsegError, match="2D box"):
        Box(1, 1, 3, 3).validate((4, 10, 10))
    with pytest.raises(FlipsegError, match="empty"):
        Box.from_mask(np.zeros((3, 3)))


def test_expand_and_iou():
    b = Box(10, 10, 20, 30)
    assert b.expand(0.5, relative=True).as_tuple() == (5, 0, 25, 40)
    assert b.iou(b) == 1.0
    assert Box(0, 0, 10, 10).iou(Box(5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_shift_levels_parse():
    assert parse_shift_level("0-10") == (0, 10)
    assert parse_shift_level(None) == (0, 0)
    with pytest.raises(FlipsegError):
        parse_shift_level("ten")


@pytest.mark.parametrize("level", [(0, 10), (10, 20), (20, 30)])
def test_shift_moves_edges_within_level_and_is_seeded(level):
    box = Box(100, 100, 180, 160)
    shape = (400, 400)
    rng = np.random.default_rng(3)
    for _ in range(50):
        s = shift_box(box, shape, level, rng)
        moves = np.abs(np.array(s.as_tuple()) - np.array(box.as_tuple()))
        assert np.all(moves >= level[0]) and np.all(moves <= level[1])
        assert s.is_valid()
    a = shifted_boxes(box, shape, "10-20", repeats=3, seed=7)
    b = shifted_boxes(box, shape, "10-20", repeats=3, seed=7)
    assert a == b and len(a) == 3 and len(set(a)) > 1


def test_shift_stays_in_image_3d():
    box = Box(0, 0, 5, 5, 0, 4)
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = shift_box(box, (8, 10, 10), (0, 10), rng)
        assert s.is_valid() and s.clip((8, 10, 10)) == s


def test_relative_to_moves_a_box_into_a_crops_coordinates():
    box, view = Box.parse("40,30,80,70"), Box.parse("25,20,100,90")
    assert box.relative_to(view) == Box.parse("15,10,55,50")
    b3, v3 = Box.parse("4,5,9,10,2,6"), Box.parse("1,1,20,20,1,8")
    assert b3.relative_to(v3) == Box.parse("3,4,8,9,1,5")

"""Box jitter in training (``train_box_shift``): which box an episode is trained on."""

import numpy as np

from flipseg.boxes import Box
from flipseg.methods.flip.config import FlipConfig
from flipseg.methods.flip.train import BoxCase, jittered_box


def _cases(n=40):
    img = np.full((200, 220), 120.0, np.float32)
    box = Box(x0=60, y0=50, x1=140, y1=130)
    return [BoxCase(case_id=f"c{i}", image=img, box=box,
                    source=np.arange(np.prod(box.shape), dtype=np.float32).reshape(box.shape))
            for i in range(n)]


def test_no_jitter_by_default():
    cfg = FlipConfig()
    for case in _cases(5):
        box, source, reward_box = jittered_box(case, cfg)
        assert box == case.box and source is case.source and reward_box is None


def test_jitter_follows_the_protocol_and_keeps_the_annotated_box_for_the_reward():
    cfg = FlipConfig(train_box_shift=10, train_box_shift_prob=0.5)
    cases = _cases()
    out = [jittered_box(c, cfg) for c in cases]
    jittered = [(c, o) for c, o in zip(cases, out) if o[2] is not None]
    assert 8 <= len(jittered) <= 32  # about half of the 40 boxes
    for case, (box, source, reward_box) in jittered:
        assert reward_box == case.box
        assert source.shape == box.shape
        moves = np.abs(np.subtract(box.lo, case.box.lo)).tolist() + \
            np.abs(np.subtract(box.hi, case.box.hi)).tolist()
        assert max(moves) <= 10 and max(moves) > 0
    # the draw depends on the seed and the case only: every level sees the same box
    assert [jittered_box(c, cfg)[0] for c in cases] == [o[0] for o in out]
    other = [jittered_box(c, cfg.with_overrides(seed=1))[0] for c in cases]
    assert other != [o[0] for o in out]
    everyone = [jittered_box(c, cfg.with_overrides(train_box_shift_prob=1.0)) for c in cases]
    assert sum(o[2] is not None for o in everyone) >= 38

"""Coarse-to-fine (``curriculum="c2f"``): the prior channel, the state-canvas masks
and a tiny training + inference run through both stages."""

import numpy as np
import pytest
import torch

from flipseg.boxes import Box
from flipseg.errors import FlipsegError
from flipseg.methods.flip.agent import state_channels
from flipseg.methods.flip.config import FlipConfig
from flipseg.methods.flip.env import VecErasingEnv, coarse_priors, greedy_rollout, prepare_episode
from flipseg.methods.flip.infer import FlipModel
from flipseg.methods.flip.train import BoxCase, FlipTrainer


def _image(seed, center, radius, shape=(120, 140)):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    disc = (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2
    img = 150 + 20 * rng.standard_normal(shape)
    img[disc] = 40 + 10 * rng.standard_normal(disc.sum())
    return np.clip(img, 0, 255).astype(np.float32), disc


def _scorer(x: torch.Tensor) -> torch.Tensor:  # brighter view = more "normal"
    return torch.sigmoid((x.flatten(1).mean(1) - 0.45) * 20)


SPOTS = [((60, 70), 22), ((50, 60), 15), ((70, 80), 28)]


def _episodes(cfg, n_segments):
    eps = []
    for i, (c, r) in enumerate(SPOTS):
        img, disc = _image(i, c, r)
        box = Box.from_mask(disc)
        eps.append(prepare_episode(img, box, np.full(box.shape, 150.0, np.float32), cfg,
                                   n_segments, case_id=str(i), gt_mask=disc, seed=0))
    return eps


def _cfg(**kw):
    base = dict(agents=2, state_size=16, curriculum="c2f", levels=(12, 40), epochs=2,
                num_envs=3, warmup=8, batch_size=8, stop_margin=0.0)
    base.update(kw)
    return FlipConfig(**base)


def test_c2f_needs_two_levels():
    with pytest.raises(FlipsegError, match="levels"):
        FlipConfig(curriculum="c2f", levels=(50,))


def test_prior_channel_shows_no_prior_then_the_given_prior():
    cfg = _cfg()
    eps = _episodes(cfg, 40)
    assert state_channels(cfg) == cfg.frames + 2 + 3 * cfg.global_view
    states, _, _ = VecErasingEnv(eps, cfg, _scorer).observe()
    assert states.shape[2] == state_channels(cfg)
    p = cfg.frames + 1  # frames, position channel, then the prior
    assert np.all(states[:, :, p] == 128)  # 0.5: no prior
    priors = [np.ones(ep.state_labels.shape, np.float32) for ep in eps]
    priors[1][:] = 0.0
    states, _, _ = VecErasingEnv(eps, cfg, _scorer, priors=priors).observe()
    assert np.all(states[0, :, p] == 255) and np.all(states[1, :, p] == 0)
    with pytest.raises(ValueError, match="shape"):
        VecErasingEnv(eps, cfg, _scorer, priors=[np.ones((3, 3))] * len(eps))


def test_state_masks_follow_erased_superpixels_and_fit_every_level():
    cfg = _cfg()
    coarse, fine = _episodes(cfg, 12), _episodes(cfg, 40)
    env = greedy_rollout(coarse, cfg, _scorer, lambda s, a: np.tile([0.0, 1.0], s.shape[:2] + (1,)))
    masks = env.state_masks()
    for ep, m, f in zip(coarse, masks, fine):
        assert m.shape == ep.state_labels.shape == f.state_labels.shape
        assert np.array_equal(m > 0, ep.state_labels >= 0)  # everything inside the box erased
    never = coarse_priors(coarse, cfg, _scorer, lambda s, a: np.tile([1.0, 0.0], s.shape[:2] + (1,)))
    assert all(not p.any() for p in never)
    # the priors feed the fine level's environment
    VecErasingEnv(fine, cfg, _scorer, priors=masks).observe()


def test_c2f_trains_both_stages_and_segments(tmp_path):
    cfg = _cfg()
    cases = []
    for i, (c, r) in enumerate(SPOTS):
        img, disc = _image(i, c, r)
        box = Box.from_mask(disc)
        cases.append(BoxCase(str(i), img, box, np.full(box.shape, 150.0, np.float32), disc))
    trainer = FlipTrainer(cfg, _scorer, tmp_path, progress=False)
    log = trainer.fit(cases)
    assert [r["level"] for r in log] == [12, 40]
    assert all(np.isfinite(r["loss"]) for r in log)
    model = FlipModel.__new__(FlipModel)  # the Q-network only; the test scorer classifies
    model.cfg, model.agent, model.scorer = cfg, trainer.agent, _scorer
    model._q_graph = trainer.agent.q_network.eval()
    res = model.segment_many([c.image for c in cases], [c.box for c in cases])
    for r, c in zip(res, cases):
        assert r.mask.shape == c.image.shape and not (r.mask & ~c.box.to_mask(c.image.shape)).any()

"""The vectorised environment must behave exactly like one environment at a time."""

import numpy as np
import pytest
import torch

from flipseg.boxes import Box
from flipseg.methods.flip.config import FlipConfig
from flipseg.methods.flip.env import VecErasingEnv, greedy_rollout, prepare_episode


def _image(seed=0, shape=(120, 140), center=(60, 70), radius=22):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    disc = (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2
    img = 150 + 20 * rng.standard_normal(shape)
    img[disc] = 40 + 10 * rng.standard_normal(disc.sum())
    return np.clip(img, 0, 255).astype(np.float32), disc


def _scorer(x: torch.Tensor) -> torch.Tensor:
    # batch-independent stand-in for the classifier: brighter view = more "normal"
    return torch.sigmoid((x.flatten(1).mean(1) - 0.45) * 20)


def _episodes(cfg, n_segments=40):
    eps = []
    for i, (c, r) in enumerate([((60, 70), 22), ((50, 60), 15), ((70, 80), 28)]):
        img, disc = _image(i, center=c, radius=r)
        box = Box.from_mask(disc)
        source = np.full(box.shape, 150.0, np.float32)
        eps.append(prepare_episode(img, box, source, cfg, n_segments, case_id=str(i),
                                   gt_mask=disc, seed=0))
    return eps


def _run(env, actions_for, states=None):
    rewards, steps = [], 0
    while not env.all_done():
        obs = env.observe()
        if states is not None:
            states.append(obs[0])
        rewards.append(env.step(actions_for(env, steps)))
        steps += 1
    return rewards


@pytest.mark.parametrize("attribution,global_view", [("per_agent", False), ("joint", False),
                                                     ("per_agent", True)])
def test_vectorised_equals_sequential(attribution, global_view):
    cfg = FlipConfig(agents=2, state_size=16, reward_attribution=attribution, stop_margin=0.0,
                     global_view=global_view, csr_tolerance=0.001 * global_view)
    eps = _episodes(cfg)
    table = np.random.default_rng(5).integers(0, 2, size=(len(eps), 500, cfg.agents))

    vec = VecErasingEnv(eps, cfg, _scorer)
    vec_states = []
    vec_rewards = _run(vec, lambda env, t: table[:, t], vec_states)
    vec_masks = vec.masks()
    for e, ep in enumerate(eps):
        one = VecErasingEnv([ep], cfg, _scorer)
        one_states = []
        one_rewards = _run(one, lambda env, t, e=e: table[e : e + 1, t], one_states)
        for t in range(len(one_states)):
            np.testing.assert_array_equal(one_states[t][0], vec_states[t][e])
        n = int(one.t[0])
        assert n == int(vec.t[e])
        for t in range(n):
            assert np.array_equal(one_rewards[t][0][0], vec_rewards[t][0][e])
        assert np.array_equal(one.masks()[0], vec_masks[e])
        for k, v in one.curves(0).items():
            np.testing.assert_allclose(v, vec.curves(e)[k], rtol=1e-6)


def test_episode_geometry_and_agents():
    cfg = FlipConfig(agents=3, standard_short_side=100)
    ep = _episodes(cfg)[0]
    hi_lo = np.array(ep.box_hi) - np.array(ep.box_lo)
    assert min(hi_lo) == pytest.approx(100, abs=2)
    ids = np.concatenate(ep.agent_lists)
    assert sorted(ids.tolist()) == list(range(ep.n_labels))  # every superpixel once
    sizes = [len(lst) for lst in ep.agent_lists]
    assert max(sizes) - min(sizes) <= 1
    for lst in ep.agent_lists:  # inner-to-outer inside each sector
        assert np.all(np.diff(ep.dist[lst]) >= 0)


@pytest.mark.parametrize("restores", [True, False])
def test_erasing_everything_then_passing(restores):
    cfg = FlipConfig(agents=2, traversals=2, stop_margin=0.0, pass_restores=restores)
    eps = _episodes(cfg)[:1]
    env = VecErasingEnv(eps, cfg, _scorer)
    L = int(env.agent_len.max())
    t, peak = 0, 0.0
    while not env.all_done():
        env.observe()
        # first traversal (of each agent's own list): erase all; second: pass (restores)
        env.step((t < env.agent_len).astype(int))
        peak = max(peak, env._erased_area_fraction()[0])
        t += 1
    assert peak > 0.95
    # pass restores only with pass_restores; by default the erased region only grows
    assert env._erased_area_fraction()[0] == (0.0 if restores else pytest.approx(1.0))
    assert t == 2 * L


def test_perfect_policy_reaches_high_dice_and_flips():
    cfg = FlipConfig(agents=2, stop_margin=0.0)
    eps = _episodes(cfg, n_segments=100)
    env = VecErasingEnv(eps, cfg, _scorer)
    lesion = [ep.gt_overlap / ep.areas > 0.5 for ep in eps]

    def oracle(env, t):
        sp = env._current_sp()
        return np.array([[lesion[e][s] if s < eps[e].n_labels else 0 for s in sp[e]]
                         for e in range(len(eps))]).astype(int)

    rewards = _run(env, oracle)
    assert np.nanmin(env._dice()) > 0.85
    assert np.all(env.score > env.initial_score)
    # erasing a lesion superpixel is rewarded on average
    total = sum(r[0].sum() for r in rewards)
    assert total > 0


def test_global_view_shows_the_erased_region_and_current_superpixel():
    cfg = FlipConfig(agents=2, state_size=16, global_view=True, stop_margin=0.0)
    env = VecErasingEnv(_episodes(cfg)[:1], cfg, _scorer)
    states, _, _ = env.observe()
    C = states.shape[2]
    assert C == cfg.frames + 1 + 3
    assert states[0, :, C - 2].max() == 0  # nothing erased yet
    assert states[0, 0, C - 1].max() == 255  # the current superpixel is marked
    env.step(np.ones((1, 2), int))
    states, _, _ = env.observe()
    assert states[0, :, C - 2].max() == 255  # the erased superpixels now show


@pytest.mark.parametrize("inference_terminal", [True, False])
def test_flip_terminal_at_inference_is_an_option(inference_terminal):
    cfg = FlipConfig(agents=2, traversals=2, stop_margin=0.5, inference_terminal=inference_terminal)
    eps = _episodes(cfg)[:1]

    def erase_all(states, aux):  # [E, K, 2]: erase preferred everywhere
        q = torch.zeros(states.shape[0], states.shape[1], 2)
        q[..., 1] = 1.0
        return q

    env = greedy_rollout(eps, cfg, _scorer, erase_all)
    full = 2 * int(env.agent_len.max())
    steps = int(env.t[0])
    assert env.score[0] > 0.5  # erasing the disc flips the stand-in classifier early
    if inference_terminal:
        assert steps < full and env._erased_area_fraction()[0] < 1.0
    else:
        assert steps == full and env._erased_area_fraction()[0] == pytest.approx(1.0)
    # training environments keep the paper's terminal whatever the inference option
    train_env = VecErasingEnv(eps, cfg, _scorer)
    _run(train_env, lambda env, t: np.ones((1, cfg.agents), int))
    assert int(train_env.t[0]) < full


# ---------------------------------------------------------------- ellipse-prior fusion
def test_prior_fusion_trims_a_spur_keeps_the_core_and_stays_in_the_box():
    from flipseg.baselines.shapes import inscribed_ellipse
    from flipseg.methods.flip.env import fuse_with_box_prior
    from flipseg.metrics import compute_dice

    shape = (80, 100)
    box = Box(20, 10, 80, 70)  # x0, y0, x1, y1
    ell = inscribed_ellipse(np.zeros(shape), box)
    # an ellipse-shaped mask comes back (nearly) as it is
    assert compute_dice(fuse_with_box_prior(ell, box, 0.4, 0.06), ell) > 0.97
    # a blob smaller than the ellipse plus a one-pixel spur running to the box corner
    blob = np.zeros(shape, bool)
    blob[25:55, 35:65] = True
    spurred = blob.copy()
    spurred[10:25, 20:36] = np.eye(15, 16, dtype=bool)
    fused = fuse_with_box_prior(spurred, box, 0.4, 0.06)
    assert not fused[10:20, 20:30].any()  # the spur is gone
    assert fused[30:50, 40:60].all()  # the core stays
    assert not (fused & ~box.to_mask(shape)).any()
    # the boundary lands between the agents' mask and the ellipse
    assert blob.sum() < fused.sum() < ell.sum()
    # weight 0 and an empty mask leave the mask untouched
    assert (fuse_with_box_prior(spurred, box, 0.0, 0.06) == spurred).all()
    empty = np.zeros(shape, bool)
    assert not fuse_with_box_prior(empty, box, 0.4, 0.06).any()


def test_prior_fusion_in_3d_blurs_each_axis_relative_to_the_box():
    from flipseg.baselines.shapes import inscribed_ellipse
    from flipseg.methods.flip.env import fuse_with_box_prior
    from flipseg.metrics import compute_dice

    shape = (12, 60, 60)
    box = Box(10, 10, 50, 50, 3, 9)  # 6 slices thick, 40 x 40 in plane
    ell = inscribed_ellipse(np.zeros(shape), box)
    fused = fuse_with_box_prior(ell, box, 0.4, 0.06)
    assert fused.shape == shape and compute_dice(fused, ell) > 0.95
    assert fused[3:9].any(axis=(1, 2)).all()  # the thin axis keeps every slice
    assert not fused[:3].any() and not fused[9:].any()


def test_env_masks_apply_the_prior_fusion_switch():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (64, 64)).astype(np.float32)
    box = Box(12, 12, 52, 52)
    masks = {}
    for w in (0.0, 0.9):
        cfg = FlipConfig(agents=1, levels=(20,), prior_fusion=w, smooth=0.0)
        ep = prepare_episode(img, box, img[box.slices()], cfg, 20, seed=0)
        env = VecErasingEnv([ep], cfg, lambda x: torch.zeros(x.shape[0]))
        env.erased[0, : ep.n_labels // 2] = True
        masks[w] = env.masks()[0]
    assert (masks[0.0] != masks[0.9]).any()
    from flipseg.baselines.shapes import inscribed_ellipse
    from flipseg.metrics import compute_dice

    ell = inscribed_ellipse(img, box)
    assert compute_dice(masks[0.9], ell) > compute_dice(masks[0.0], ell)


def test_reward_radius_is_measured_in_the_annotated_box():
    cfg = FlipConfig(agents=2, use_csr=False)
    img, disc = _image(0)
    tight = Box.from_mask(disc)
    source = np.full(tight.shape, 150.0, np.float32)
    same = prepare_episode(img, tight, source, cfg, 40, seed=0, reward_box=tight)
    # the annotated box is the box itself: the same radii as the state's
    np.testing.assert_allclose(same.reward_radius, same.radius, atol=0.05)
    loose = Box.from_lo_hi([tight.lo[0] - 10, tight.lo[1] - 10], [tight.hi[0] + 10, tight.hi[1] + 10])
    ep = prepare_episode(img, loose, np.full(loose.shape, 150.0, np.float32), cfg, 40, seed=0,
                         reward_box=tight)
    # in a loose box a superpixel sits further out of the tight box than of its own box
    assert np.all(ep.reward_radius >= ep.radius - 0.05)
    assert ep.reward_radius.max() > ep.radius.max() + 0.2
    # the prior reward reads reward_radius: erasing an outer superpixel of the loose box
    # that is inside its own ellipse but outside the tight one costs the prior's -1
    k = int(np.argmax(np.where(ep.radius < 1.0, ep.reward_radius, -np.inf)))
    assert ep.radius[k] < 1.0 < ep.reward_radius[k]
    env = VecErasingEnv([ep], cfg.with_overrides(use_idr2=False, erase_cost=0.0, agents=2),
                        _scorer, compute_rewards=True)
    loose_env = VecErasingEnv([prepare_episode(img, loose, np.full(loose.shape, 150.0, np.float32),
                                               cfg, 40, seed=0)],
                              cfg.with_overrides(use_idr2=False, erase_cost=0.0, agents=2),
                              _scorer, compute_rewards=True)
    for e in (env, loose_env):
        e.agent_sp[0, 0, 0] = k  # agent 0 visits superpixel k first
    r_tight, _ = env.step(np.array([[1, 0]]))
    r_loose, _ = loose_env.step(np.array([[1, 0]]))
    assert r_tight[0, 0] == -1.0 and r_loose[0, 0] >= 1.0


def test_mask_post_processing_cost_does_not_grow_with_the_box(monkeypatch):
    """A box larger than ``mask_work_side`` is post-processed at that size, then resized:
    the mask agrees with full-resolution processing (Dice > 0.98)."""
    from flipseg.boxes import Box
    from flipseg.methods.flip import env as env_module
    from flipseg.methods.flip.infer import FlipSegmenter
    from flipseg.metrics import compute_dice

    rng = np.random.default_rng(0)
    img = rng.normal(130, 15, (520, 520)).astype(np.float32)
    yy, xx = np.ogrid[:520, :520]
    img[((yy - 260) / 170.0) ** 2 + ((xx - 260) / 150.0) ** 2 <= 1] -= 70
    box = Box(80, 80, 440, 440)
    seg = FlipSegmenter(segments=60)
    shapes = []
    real = env_module.postprocess_mask

    def spy(mask, **kw):
        shapes.append(mask.shape)
        return real(mask, **kw)

    monkeypatch.setattr(env_module, "postprocess_mask", spy)
    seg.model.cfg = seg.model.cfg.with_overrides(mask_work_side=96)
    small = seg.segment(img, box)
    assert shapes and max(min(s) for s in shapes) <= 96 * 1.5 + 2  # the view: box + margins
    shapes.clear()
    seg.model.cfg = seg.model.cfg.with_overrides(mask_work_side=0)
    full = seg.segment(img, box)
    assert min(min(s) for s in shapes) >= 360
    assert small.shape == full.shape == img.shape
    assert compute_dice(small, full) > 0.98


@pytest.mark.parametrize("ndim", [2, 3])
def test_distance_transform_morphology_equals_scipy(ndim):
    from scipy import ndimage

    from flipseg.methods.flip.env import _ball, _dilate, _erode

    rng = np.random.default_rng(ndim)
    for _ in range(40):
        shape = tuple(rng.integers(4, 40 if ndim == 2 else 18, ndim))
        m = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.5
        r = int(rng.integers(1, 7))
        ball = _ball(r, ndim)
        np.testing.assert_array_equal(_erode(m, r), ndimage.binary_erosion(m, ball))
        np.testing.assert_array_equal(_dilate(m, r), ndimage.binary_dilation(m, ball))

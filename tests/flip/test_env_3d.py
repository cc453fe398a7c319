"""The same environment in 3D: vectorised == sequential, geometry, oracle erasing."""

import numpy as np
import pytest
import torch

from flipseg.boxes import Box
from flipseg.methods.flip.config import FlipConfig, default_config
from flipseg.methods.flip.curriculum import scaled_level
from flipseg.methods.flip.env import VecErasingEnv, prepare_episode


def _volume(seed=0, shape=(20, 40, 44), center=(10, 20, 22), radii=(5, 9, 11)):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    ball = sum(((g - c) / r) ** 2 for g, c, r in zip((zz, yy, xx), center, radii)) <= 1.0
    vol = 150 + 20 * rng.standard_normal(shape)
    vol[ball] = 40 + 10 * rng.standard_normal(ball.sum())
    return np.clip(vol, 0, 255).astype(np.float32), ball


def _scorer(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid((x.flatten(1).mean(1) - 0.45) * 20)


def _cfg(**kw):
    base = dict(dims=3, agents=4, state_size=8, classifier_size=16, standard_short_side=12,
                max_long_side=32, stop_margin=0.0)
    base.update(kw)
    return FlipConfig(**base)


def _episodes(cfg, n_segments=24):
    eps = []
    for i, (c, r) in enumerate([((10, 20, 22), (5, 9, 11)), ((9, 18, 20), (4, 7, 8)),
                                ((11, 21, 23), (6, 11, 12))]):
        vol, ball = _volume(i, center=c, radii=r)
        box = Box.from_mask(ball)
        eps.append(prepare_episode(vol, box, np.full(box.shape, 150.0, np.float32), cfg,
                                   n_segments, case_id=str(i), gt_mask=ball, seed=0))
    return eps


def _run(env, actions_for):
    rewards, steps = [], 0
    while not env.all_done():
        env.observe()
        rewards.append(env.step(actions_for(env, steps)))
        steps += 1
    return rewards


@pytest.mark.parametrize("attribution,extras", [
    ("per_agent", {}), ("joint", {}),
    ("per_agent", {"global_view": True, "use_prior": True, "smooth": 0.1, "csr_tolerance": 0.01}),
    ("joint", {"use_prior": True, "erase_cost": 0.5}),
])
def test_vectorised_equals_sequential_3d(attribution, extras):
    cfg = _cfg(reward_attribution=attribution, **extras)
    eps = _episodes(cfg)
    table = np.random.default_rng(5).integers(0, 2, size=(len(eps), 200, cfg.agents))
    vec = VecErasingEnv(eps, cfg, _scorer)
    states, aux, active = vec.observe()
    channels = cfg.frames + 1 + 3 * cfg.global_view
    assert states.shape == (3, 4, channels, 8, 8, 8) and states.dtype == np.uint8
    vec_rewards = _run(vec, lambda env, t: table[:, t])
    vec_masks = vec.masks()
    for e, ep in enumerate(eps):
        one = VecErasingEnv([ep], cfg, _scorer)
        one_rewards = _run(one, lambda env, t, e=e: table[e : e + 1, t])
        n = int(one.t[0])
        assert n == int(vec.t[e])
        for t in range(n):
            assert np.array_equal(one_rewards[t][0][0], vec_rewards[t][0][e])
        assert np.array_equal(one.masks()[0], vec_masks[e])
        assert vec_masks[e].shape == (20, 40, 44)
        for k, v in one.curves(0).items():
            np.testing.assert_allclose(v, vec.curves(e)[k], rtol=1e-6)


def test_agents_split_every_supervoxel_once():
    ep = _episodes(_cfg())[0]
    assert ep.labels.ndim == 3 and len(ep.agent_lists) == 4
    ids = np.concatenate(ep.agent_lists)
    assert sorted(ids.tolist()) == list(range(ep.n_labels))
    for lst in ep.agent_lists:
        assert np.all(np.diff(ep.dist[lst]) >= 0)  # inner to outer


def test_oracle_erasing_in_3d():
    cfg = _cfg()
    eps = _episodes(cfg, n_segments=40)
    env = VecErasingEnv(eps, cfg, _scorer)
    lesion = [ep.gt_overlap / ep.areas > 0.5 for ep in eps]

    def oracle(env, t):
        sp = env._current_sp()
        return np.array([[lesion[e][s] if s < eps[e].n_labels else 0 for s in sp[e]]
                         for e in range(len(eps))]).astype(int)

    _run(env, oracle)
    assert np.nanmin(env._dice()) > 0.8
    assert np.all(env.score > env.initial_score)


def test_3d_preset_and_level_scaling():
    cpu = default_config(3)
    assert (cpu.dims, cpu.agents, cpu.classifier_size, cpu.scale_levels_to_box) == (3, 4, 32, False)
    assert scaled_level(cpu, 200, (4, 12, 12)) == 200  # fixed counts in the CPU preset
    cfg = default_config(3, "paper")
    assert cfg.scale_levels_to_box and cfg.levels == (100, 1000, 2000, 5000, 10000)
    edge = cfg.level_reference_edge
    assert scaled_level(cfg, 100, (edge,) * 3) == 100
    assert scaled_level(cfg, 100, (2 * edge,) * 3) == 800
    assert scaled_level(cfg, 100, (2, 2, 2)) == 8  # floor
    assert default_config(2) == FlipConfig()

import numpy as np
import pytest
import torch

from flipseg.methods.flip.agent import DQNAgent, state_channels
from flipseg.methods.flip.config import FlipConfig
from flipseg.methods.flip.env import N_AUX
from flipseg.methods.flip.replay import PrioritizedReplay


def _fill(buf, n, K=2, C=4, S=8, seed=0):
    rng = np.random.default_rng(seed)
    st = rng.integers(0, 255, (n, K, C, S, S)).astype(np.uint8)
    buf.add(st, np.zeros((n, K, N_AUX), np.float32), rng.integers(0, 2, (n, K)),
            rng.normal(size=(n, K)).astype(np.float32), st, np.zeros((n, K, N_AUX), np.float32),
            np.zeros((n, K), np.float32), np.ones((n, K), np.float32))


def test_replay_ring_and_new_items_get_max_priority():
    buf = PrioritizedReplay(10, (4, 8, 8), N_AUX, 2)
    _fill(buf, 6)
    buf.update_priorities(np.array([0, 1]), np.array([5.0, 0.0]))
    _fill(buf, 6, seed=1)  # wraps around
    assert len(buf) == 10 and buf.pos == 2
    assert buf.priorities[0] == pytest.approx(5.0 + buf.eps)  # overwritten with max priority
    assert buf.priorities[6] == pytest.approx(5.0 + buf.eps)
    assert buf.priorities[5] == 1.0  # untouched item keeps its priority


def test_replay_weights_follow_priorities():
    buf = PrioritizedReplay(4, (4, 8, 8), N_AUX, 2, alpha=1.0)
    _fill(buf, 4)
    buf.update_priorities(np.arange(4), np.array([1.0, 1.0, 1.0, 7.0]) - buf.eps)
    probs = buf.probabilities()
    assert probs == pytest.approx([0.1, 0.1, 0.1, 0.7])
    b = buf.sample(2000, beta=1.0, rng=np.random.default_rng(0))
    assert np.mean(b.indices == 3) == pytest.approx(0.7, abs=0.04)
    # w = (N P)^-1 / max: the rarest item has weight 1, the common one 0.1/0.7
    w = dict(zip(b.indices.tolist(), b.weights.tolist()))
    assert w[0] == pytest.approx(1.0) and w[3] == pytest.approx(0.1 / 0.7)


def test_uniform_replay_has_unit_weights():
    buf = PrioritizedReplay(8, (4, 8, 8), N_AUX, 2, prioritized=False)
    _fill(buf, 8)
    buf.update_priorities(np.arange(8), np.arange(8.0))
    b = buf.sample(16, beta=0.4, rng=np.random.default_rng(0))
    assert np.all(b.weights == 1) and buf.probabilities() == pytest.approx(np.full(8, 1 / 8))


def test_double_dqn_target_uses_online_argmax_and_target_value():
    cfg = FlipConfig(agents=2, state_size=16, gamma=0.5, huber=False, lr=0.0, target_sync=10**9)
    agent = DQNAgent(cfg)
    C = state_channels(cfg)
    buf = PrioritizedReplay(4, (C, 16, 16), N_AUX, 2)
    _fill(buf, 4, C=C, S=16)
    batch = buf.sample(4, beta=1.0, rng=np.random.default_rng(0))
    batch.dones[:] = 0
    # make target network differ from the online one
    with torch.no_grad():
        for p in agent.target_network.parameters():
            p.add_(0.05)
    ns = torch.from_numpy(batch.next_states).float() / 255
    na = torch.from_numpy(batch.next_aux)
    agent.q_network.eval()
    with torch.no_grad():
        a_star = agent.q_network(ns, na).argmax(-1, keepdim=True)
        expected = torch.from_numpy(batch.rewards) + 0.5 * agent.target_network(ns, na).gather(
            -1, a_star)[..., 0]
        q = agent.q_network(torch.from_numpy(batch.states).float() / 255,
                            torch.from_numpy(batch.aux))
    q_taken = q.gather(-1, torch.from_numpy(batch.actions)[..., None])[..., 0]
    _, td = agent.learn(batch)
    assert td == pytest.approx((expected - q_taken).abs().mean(1).numpy(), rel=1e-4, abs=1e-5)

"""Prioritized experience replay with per-sample priorities and IS weights.

Each stored item is the joint transition of all K agents of one environment
step: states ``[K, C, *S]`` (uint8), aux features, actions, rewards, next
states, per-agent done flags and the mask of agents that acted.

Sampling probability ``P(i) = p_i^alpha / sum_j p_j^alpha``; importance weight
``w_i = (N * P(i))^-beta / max_j w_j`` where the max runs over the whole buffer
(i.e. it is taken at the smallest stored probability), so weights are at most
1. After a learning step, every sampled item gets priority
``|TD error| + eps`` (mean over the agents that acted). New items enter with
the current maximum priority so each is replayed at least once with high
probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PrioritizedReplay", "ReplayBatch"]


@dataclass
class ReplayBatch:
    states: np.ndarray  # [B, K, C, *S] uint8
    aux: np.ndarray  # [B, K, F]
    actions: np.ndarray  # [B, K] int64
    rewards: np.ndarray  # [B, K] float32
    next_states: np.ndarray
    next_aux: np.ndarray
    dones: np.ndarray  # [B, K] float32 (1: no bootstrap)
    acted: np.ndarray  # [B, K] float32 (1: this agent acted)
    indices: np.ndarray  # [B]
    weights: np.ndarray  # [B] importance-sampling weights


class PrioritizedReplay:
    """Ring buffer with proportional prioritisation (alpha=0 gives uniform sampling)."""

    def __init__(
        self,
        capacity: int,
        state_shape: tuple[int, ...],
        n_aux: int,
        agents: int,
        *,
        alpha: float = 0.6,
        eps: float = 1e-3,
        prioritized: bool = True,
    ) -> None:
        self.capacity = int(capacity)
        self.alpha = alpha if prioritized else 0.0
        self.eps = eps
        self.prioritized = prioritized
        K = agents
        self.states = np.zeros((capacity, K) + tuple(state_shape), np.uint8)
        self.next_states = np.zeros_like(self.states)
        self.aux = np.zeros((capacity, K, n_aux), np.float32)
        self.next_aux = np.zeros_like(self.aux)
        self.actions = np.zeros((capacity, K), np.int64)
        self.rewards = np.zeros((capacity, K), np.float32)
        self.dones = np.zeros((capacity, K), np.float32)
        self.acted = np.zeros((capacity, K), np.float32)
        self.priorities = np.zeros(capacity, np.float64)
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, states, aux, actions, rewards, next_states, next_aux, dones, acted) -> None:
        """Add a batch of transitions (leading axis = number of transitions)."""
        n = len(states)
        if n == 0:
            return
        idx = (self.pos + np.arange(n)) % self.capacity
        self.states[idx] = states
        self.aux[idx] = aux
        self.actions[idx] = actions
        self.rewards[idx] = rewards
        self.next_states[idx] = next_states
        self.next_aux[idx] = next_aux
        self.dones[idx] = dones
        self.acted[idx] = acted
        pmax = self.priorities[: self.size].max() if self.size else 1.0
        self.priorities[idx] = pmax
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def probabilities(self) -> np.ndarray:
        p = self.priorities[: self.size] ** self.alpha
        return p / p.sum()

    def sample(self, batch_size: int, beta: float, rng: np.random.Generator) -> ReplayBatch:
        probs = self.probabilities()
        idx = rng.choice(self.size, size=batch_size, replace=True, p=probs)
        if self.prioritized:
            w = (self.size * probs[idx]) ** (-beta)
            w_max = (self.size * probs.min()) ** (-beta)
            weights = (w / w_max).astype(np.float32)
        else:
            weights = np.ones(batch_size, np.float32)
        return ReplayBatch(
            states=self.states[idx],
            aux=self.aux[idx],
            actions=self.actions[idx],
            rewards=self.rewards[idx],
            next_states=self.next_states[idx],
            next_aux=self.next_aux[idx],
            dones=self.dones[idx],
            acted=self.acted[idx],
            indices=idx,
            weights=weights,
        )

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Set each sampled item's priority to ``|td| + eps`` (td per item, shape [B])."""
        self.priorities[indices] = np.abs(td_errors) + self.eps

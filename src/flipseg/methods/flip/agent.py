"""Double-DQN learner for the K erasing agents (shared trunk, one head each)."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from flipseg.methods.flip.config import FlipConfig
from flipseg.methods.flip.env import N_AUX
from flipseg.methods.flip.replay import ReplayBatch
from flipseg.networks.qnetwork import MultiAgentQNetwork

__all__ = ["DQNAgent", "state_channels", "to_tensor"]


def state_channels(cfg: FlipConfig) -> int:
    """Channels of one agent's state: stacked frames (+ position mask) (+ c2f prior)
    (+ 3 global-view channels)."""
    return (cfg.frames + int(cfg.position_channel) + int(cfg.curriculum == "c2f")
            + 3 * int(cfg.global_view))


def to_tensor(states: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """uint8 states -> float tensor in [0, 1]."""
    return torch.from_numpy(states).to(device).float().div_(255.0)


class DQNAgent:
    """Online + target Q-networks, epsilon-greedy acting and the DDQN update."""

    def __init__(self, cfg: FlipConfig) -> None:
        self.cfg = cfg
        self.device = cfg.device
        self.q_network = MultiAgentQNetwork(
            cfg.agents,
            state_channels(cfg),
            spatial_dims=cfg.dims,
            n_aux=N_AUX,
            trunk=cfg.q_network,
        ).to(self.device)
        self.target_network = copy.deepcopy(self.q_network)
        self.target_network.eval()
        self.optimizer = torch.optim.AdamW(
            self.q_network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.learn_steps = 0

    # ---------------------------------------------------------------- acting
    @torch.no_grad()
    def q_values(self, states: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """[E, K, C, *S] uint8, [E, K, F] -> Q [E, K, 2] (eval mode, batched)."""
        if self.q_network.training:
            self.q_network.eval()
        q = self.q_network(to_tensor(states, self.device), torch.from_numpy(aux).to(self.device))
        return q.cpu().numpy()

    def act(
        self, states: np.ndarray, aux: np.ndarray, epsilon: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Epsilon-greedy actions [E, K] (each agent explores independently)."""
        greedy = self.q_values(states, aux).argmax(-1)
        if epsilon <= 0:
            return greedy
        explore = rng.random(greedy.shape) < epsilon
        random_actions = rng.integers(0, 2, size=greedy.shape)
        return np.where(explore, random_actions, greedy)

    # -------------------------------------------------------------- learning
    def learn(self, batch: ReplayBatch) -> tuple[float, np.ndarray]:
        """One DDQN step on a replay batch; returns (loss, per-item |TD| for priorities)."""
        cfg = self.cfg
        dev = self.device
        self.q_network.train()
        states = to_tensor(batch.states, dev)
        next_states = to_tensor(batch.next_states, dev)
        aux = torch.from_numpy(batch.aux).to(dev)
        next_aux = torch.from_numpy(batch.next_aux).to(dev)
        actions = torch.from_numpy(batch.actions).to(dev)  # [B, K]
        rewards = torch.from_numpy(batch.rewards).to(dev)
        dones = torch.from_numpy(batch.dones).to(dev)
        acted = torch.from_numpy(batch.acted).to(dev)
        weights = torch.from_numpy(batch.weights).to(dev)  # [B]

        q = self.q_network(states, aux)  # [B, K, A]
        q_taken = q.gather(-1, actions[..., None])[..., 0]  # [B, K]
        with torch.no_grad():
            # Double DQN: the online network picks a*, the target network evaluates it.
            self.q_network.eval()
            next_online = self.q_network(next_states, next_aux)  # [B, K, A]
            self.q_network.train()
            best_next = next_online.argmax(-1, keepdim=True)  # [B, K, 1]
            next_target = self.target_network(next_states, next_aux)
            next_value = next_target.gather(-1, best_next)[..., 0]  # [B, K]
            td_target = rewards + cfg.gamma * (1.0 - dones) * next_value
        td_error = td_target - q_taken  # [B, K]
        if cfg.huber:
            per_elem = F.smooth_l1_loss(q_taken, td_target, reduction="none")
        else:
            per_elem = td_error.pow(2)
        n_acted = acted.sum(1).clamp_min(1.0)
        per_item = (per_elem * acted).sum(1) / n_acted  # [B]
        loss = (weights * per_item).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.q_network.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.learn_steps += 1
        if self.learn_steps % cfg.target_sync == 0:
            self.sync_target()
        td_item = ((td_error.abs() * acted).sum(1) / n_acted).detach().cpu().numpy()
        return float(loss.item()), td_item

    def sync_target(self) -> None:
        self.target_network.load_state_dict(self.q_network.state_dict())

    # ------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        return {
            "q_network": self.q_network.state_dict(),
            "target_network": self.target_network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "learn_steps": self.learn_steps,
        }

    def load_state_dict(self, d: dict) -> None:
        self.q_network.load_state_dict(d["q_network"])
        self.target_network.load_state_dict(d.get("target_network", d["q_network"]))
        if "optimizer" in d:
            self.optimizer.load_state_dict(d["optimizer"])
        self.learn_steps = int(d.get("learn_steps", 0))

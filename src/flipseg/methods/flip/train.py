"""Training loop of the erasing agents (read top to bottom).

Hooks, in order: ``on_train_start`` (classifier, eraser sources, resume),
per epoch ``run_epoch`` -> many ``collect_and_learn`` chunks, ``on_epoch_end``
(checkpoint, log, validation). A killed run restarts from the last finished
epoch; the replay buffer is refilled (its warm-up) rather than saved.
"""

from __future__ import annotations

import csv
import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from flipseg.boxes import Box, shift_box
from flipseg.bundles import save_bundle
from flipseg.io_utils import atomic_save, atomic_write_text
from flipseg.methods.flip.agent import DQNAgent, state_channels
from flipseg.methods.flip.config import FlipConfig
from flipseg.methods.flip.curriculum import episode_levels, level_for_epoch, scaled_level
from flipseg.methods.flip.env import (
    N_AUX,
    Episode,
    VecErasingEnv,
    coarse_priors,
    prepare_episode,
)
from flipseg.methods.flip.replay import PrioritizedReplay
from flipseg.methods.training import load_torch_checkpoint
from flipseg.resize import resize

__all__ = ["BoxCase", "FlipTrainer", "CHECKPOINT", "MODEL_FILE"]

CHECKPOINT = "flip_checkpoint.pt"
MODEL_FILE = "flip_model.safetensors"


@dataclass
class BoxCase:
    """One training/validation box with its eraser source (chosen once)."""

    case_id: str
    image: np.ndarray
    box: Any
    source: np.ndarray
    mask: np.ndarray | None = None
    episodes: dict[int, Episode] = field(default_factory=dict)


def jittered_box(case: BoxCase, cfg: FlipConfig) -> tuple[Box, np.ndarray, Box | None]:
    """The box an episode of ``case`` is trained on (``cfg.train_box_shift``).

    Returns the box, its eraser source (the case's, resized to a jittered box) and the
    box the prior reward uses (None: the box itself). The draw depends only on the seed
    and the case id, so every curriculum level (and a resumed run) sees the same box.
    """
    if cfg.train_box_shift <= 0 or cfg.train_box_shift_prob <= 0:
        return case.box, case.source, None
    rng = np.random.default_rng([cfg.seed, zlib.crc32(case.case_id.encode())])
    if rng.random() >= cfg.train_box_shift_prob:
        return case.box, case.source, None
    box = shift_box(case.box, case.image.shape, (0, cfg.train_box_shift), rng)
    if box == case.box:
        return case.box, case.source, None
    source = resize(np.asarray(case.source, np.float32), box.shape)
    return box, source, case.box


class FlipTrainer:
    """Trains the multi-agent DDQN on prepared box cases.

    Parameters
    ----------
    cfg : configuration (saved to ``run_dir/config.json``)
    scorer : classifier's normal-score function (tensor [B,1,*S] -> [B])
    run_dir : where checkpoints, logs and the final model go
    classifier_state : the classifier bundle stored inside the final model file
    """

    def __init__(
        self,
        cfg: FlipConfig,
        scorer: Callable[[torch.Tensor], torch.Tensor],
        run_dir: str | Path,
        *,
        classifier_state: dict | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.scorer = scorer
        self.run_dir = Path(run_dir)
        self.classifier_state = classifier_state
        self.progress = progress
        torch.set_num_threads(max(1, cfg.num_threads))
        self.agent = DQNAgent(cfg)
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.replay: PrioritizedReplay | None = None
        self.start_epoch = 0
        self.env_steps = 0
        self.total_env_steps_estimate = 1
        self.log_rows: list[dict[str, float]] = []

    # --------------------------------------------------------------- hooks
    def on_train_start(self, train: Sequence[BoxCase]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.save(self.run_dir / "config.json")
        ckpt = self.run_dir / CHECKPOINT
        if ckpt.exists():
            state = load_torch_checkpoint(ckpt)
            self.agent.load_state_dict(state["agent"])
            self.start_epoch = int(state["epoch"]) + 1
            self.env_steps = int(state["env_steps"])
            self.rng = np.random.default_rng([self.cfg.seed, self.start_epoch])
            self.log_rows = list(state.get("log", []))
        shape = (state_channels(self.cfg),) + (self.cfg.state_size,) * self.cfg.dims
        self.replay = PrioritizedReplay(
            self.cfg.replay_size,
            shape,
            N_AUX,
            self.cfg.agents,
            alpha=self.cfg.per_alpha,
            eps=self.cfg.per_eps,
            prioritized=self.cfg.prioritized,
        )
        # rough number of environment steps, for the epsilon and beta schedules
        per_epoch = 0.0
        for lv in self.cfg.levels:
            per_epoch += self.cfg.traversals * lv / self.cfg.agents
        per_epoch = per_epoch / len(self.cfg.levels) * len(train) / max(1, self.cfg.num_envs)
        self.total_env_steps_estimate = max(1.0, per_epoch * self.cfg.epochs)

    def epsilon(self) -> float:
        cfg = self.cfg
        frac = min(1.0, self.env_steps / (cfg.eps_decay_fraction * self.total_env_steps_estimate))
        return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)

    def beta(self) -> float:
        frac = min(1.0, self.env_steps / self.total_env_steps_estimate)
        return self.cfg.per_beta + frac * (1.0 - self.cfg.per_beta)

    def episode_for(self, case: BoxCase, n_segments: int) -> Episode:
        n = scaled_level(self.cfg, n_segments, case.box.shape)
        if n not in case.episodes:
            box, source, reward_box = jittered_box(case, self.cfg)
            case.episodes[n] = prepare_episode(
                case.image, box, source, self.cfg, n, case_id=case.case_id,
                gt_mask=case.mask, seed=self.cfg.seed, reward_box=reward_box,
            )
        return case.episodes[n]

    def collect_and_learn(
        self, episodes: Sequence[Episode], priors: Sequence[np.ndarray] | None = None
    ) -> dict[str, float]:
        """Run one chunk of episodes to the end, storing transitions and learning
        (``priors``: coarse-to-fine masks of the same boxes, see :func:`coarse_priors`)."""
        cfg = self.cfg
        assert self.replay is not None
        env = VecErasingEnv(episodes, cfg, self.scorer, compute_rewards=True, priors=priors)
        states, aux, active = env.observe()
        losses: list[float] = []
        reward_sum = 0.0
        while not env.all_done():
            actions = self.agent.act(states, aux, self.epsilon(), self.rng)
            rewards, done = env.step(actions)
            next_states, next_aux, next_active = env.observe()
            rows = active.any(1)
            dones = (done[:, None] | ~next_active).astype(np.float32)
            self.replay.add(
                states[rows], aux[rows], actions[rows], rewards[rows],
                next_states[rows], next_aux[rows], dones[rows], active[rows].astype(np.float32),
            )
            reward_sum += float(rewards[active].sum())
            self.env_steps += 1
            if len(self.replay) >= cfg.warmup and self.env_steps % cfg.learn_every == 0:
                batch = self.replay.sample(cfg.batch_size, self.beta(), self.rng)
                loss, td = self.agent.learn(batch)
                self.replay.update_priorities(batch.indices, td)
                losses.append(loss)
            states, aux, active = next_states, next_aux, next_active
        masks_area = float(np.mean(env._erased_area_fraction()))
        dice = env._dice()
        return {
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "reward": reward_sum / len(episodes),
            "erased_area": masks_area,
            "train_dice": float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan"),
        }

    def run_epoch(self, epoch: int, train: Sequence[BoxCase]) -> dict[str, float]:
        cfg = self.cfg
        order = self.rng.permutation(len(train))
        levels = episode_levels(cfg, epoch, len(train), self.rng)
        stats: list[dict[str, float]] = []
        bar = tqdm(
            total=len(train), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not self.progress,
            unit="box", leave=False,
        )
        for start in range(0, len(order), cfg.num_envs):
            chunk = order[start : start + cfg.num_envs]
            eps = [self.episode_for(train[i], int(levels[i])) for i in chunk]
            priors = None
            if cfg.curriculum == "c2f" and int(levels[chunk[0]]) != cfg.levels[0]:
                # coarse-to-fine: the current policy's coarse masks guide the fine level
                coarse = [self.episode_for(train[i], cfg.levels[0]) for i in chunk]
                priors = coarse_priors(coarse, cfg, self.scorer, self.agent.q_values)
            stats.append(self.collect_and_learn(eps, priors))
            bar.update(len(chunk))
            bar.set_postfix(eps=f"{self.epsilon():.2f}", loss=f"{stats[-1]['loss']:.3f}")
        bar.close()
        out = {}
        for k in stats[0]:
            vals = np.array([s[k] for s in stats], float)
            out[k] = float(np.mean(vals[np.isfinite(vals)])) if np.isfinite(vals).any() else float("nan")
        return out

    def on_epoch_end(self, epoch: int, row: dict[str, float]) -> None:
        self.log_rows.append(row)
        state = {
            "agent": self.agent.state_dict(),
            "epoch": epoch,
            "env_steps": self.env_steps,
            "config": self.cfg.to_dict(),
            "log": self.log_rows,
        }
        atomic_save(self.run_dir / CHECKPOINT, lambda p: torch.save(state, p))
        self.save_model(self.run_dir / MODEL_FILE)
        with open(self.run_dir / "train_log.csv.tmp", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(self.log_rows[0].keys()))
            w.writeheader()
            w.writerows(self.log_rows)
        Path(self.run_dir / "train_log.csv.tmp").replace(self.run_dir / "train_log.csv")

    def save_model(self, path: Path) -> None:
        """The inference bundle (``.safetensors``): config, Q-network weights and the classifier."""
        bundle = {
            "format": "flipseg-flip-1",
            # a model file runs on the CPU wherever it was trained (segment --device moves it)
            "config": {**self.cfg.to_dict(), "device": "cpu"},
            "q_network": {k: v.detach().cpu() for k, v in self.agent.q_network.state_dict().items()},
            "classifier": self.classifier_state,
        }
        save_bundle(path, bundle)

    # ---------------------------------------------------------------- main
    def fit(
        self,
        train: Sequence[BoxCase],
        *,
        validate: Callable[[int], dict[str, float]] | None = None,
    ) -> list[dict[str, float]]:
        """Train for ``cfg.epochs`` epochs (resuming when a checkpoint exists)."""
        self.on_train_start(train)
        for epoch in range(self.start_epoch, self.cfg.epochs):
            t0 = time.time()
            lv = level_for_epoch(self.cfg, epoch)
            # keep only the current level's episodes in memory (and, coarse-to-fine,
            # the coarse level's, which give the priors)
            keep = {self.cfg.levels[lv]}
            if self.cfg.curriculum == "c2f":
                keep.add(self.cfg.levels[0])
            for case in train:
                if self.cfg.curriculum != "mixed":
                    case.episodes = {
                        k: v for k, v in case.episodes.items()
                        if k in {scaled_level(self.cfg, n, case.box.shape) for n in keep}
                    }
            row = {"epoch": epoch + 1, "level": self.cfg.levels[lv]}
            row.update(self.run_epoch(epoch, train))
            row["epsilon"] = self.epsilon()
            if validate is not None:
                row.update(validate(epoch))
            row["seconds"] = time.time() - t0
            self.on_epoch_end(epoch, row)
            if self.progress:
                tqdm.write(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                       for k, v in row.items()}))
        atomic_write_text(self.run_dir / "done.json", json.dumps({"epochs": self.cfg.epochs}))
        return self.log_rows

"""Segmentation with a trained Flip Learning model (batched over many boxes)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from flipseg.boxes import Box
from flipseg.bundles import read_bundle
from flipseg.errors import FlipsegError
from flipseg.methods.flip.agent import DQNAgent, state_channels, to_tensor
from flipseg.methods.flip.config import FlipConfig
from flipseg.methods.flip.curriculum import scaled_level
from flipseg.methods.flip.env import N_AUX, coarse_priors, greedy_rollout, prepare_episode
from flipseg.methods.flip.eraser import choose_eraser_sources
from flipseg.networks.classifier import build_classifier
from flipseg.networks.traced import inference_graph
from flipseg.segmenters import Segmenter, case_seed

__all__ = ["FlipModel", "FlipResult", "FlipSegmenter", "default_model_path", "flip_grabcut", "make_scorer"]


def default_model_path(dims: int = 2) -> Path:
    """The model shipped inside the package (trained on BUS-BRA boxes / 3D phantoms)."""
    name = "flip2d.safetensors" if dims == 2 else "flip3d.safetensors"
    return Path(str(resources.files("flipseg") / "models" / name))


def make_scorer(net: torch.nn.Module, chunk: int = 512,
                forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
                ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap a 2-class classifier as tensor [B,1,*S] -> P(normal) [B], eval mode, chunked.
    ``forward`` replaces ``net``'s own call (an equal inference graph of it)."""
    net.eval()
    run = forward or net

    @torch.no_grad()
    def scorer(x: torch.Tensor) -> torch.Tensor:
        outs = [torch.softmax(run(x[i : i + chunk]), dim=1)[:, 1] for i in range(0, len(x), chunk)]
        return torch.cat(outs) if outs else torch.zeros(0)

    return scorer


@dataclass
class FlipResult:
    """Outputs of one segmentation."""

    mask: np.ndarray  # bool, image shape
    flipped: np.ndarray  # image with the erased region filled (normal-looking)
    curves: dict[str, np.ndarray]  # step, erased_area, normal_score, dice (nan w/o mask)
    eraser: str  # chosen eraser-source candidate
    initial_score: float
    final_score: float


class FlipModel:
    """A trained model: configuration, Q-network and classifier."""

    def __init__(self, cfg: FlipConfig, q_state: dict, classifier: dict) -> None:
        self.cfg = cfg
        self.agent = DQNAgent(cfg)
        self.agent.q_network.load_state_dict(q_state)
        self.agent.q_network.eval()
        ccfg = classifier["config"]
        self.classifier_net = build_classifier(
            ccfg.get("network", "compact"), spatial_dims=cfg.dims, in_channels=1, num_classes=2
        )
        self.classifier_net.load_state_dict(classifier["state_dict"])
        self.classifier_config = ccfg
        self._build_graphs()
        self.scorer = make_scorer(self.classifier_net, forward=self._cls_graph)

    def _build_graphs(self) -> None:
        """Inference graphs of both networks (used only where they equal the eager ones
        bitwise: :func:`flipseg.networks.traced.inference_graph`)."""
        cfg, nd = self.cfg, self.cfg.dims
        S, cs = (cfg.state_size,) * nd, (cfg.classifier_size,) * nd
        self.agent.q_network.eval()
        self._q_graph = inference_graph(
            self.agent.q_network,
            lambda b: [(b, cfg.agents, state_channels(cfg), *S), (b, cfg.agents, N_AUX)])
        self._cls_graph = inference_graph(self.classifier_net, lambda b: [(b, 1, *cs)])

    def q_values(self, states: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """[E, K, C, *S] uint8, [E, K, F] -> Q [E, K, 2] (eval mode, batched)."""
        dev = self.agent.device
        with torch.no_grad():
            q = self._q_graph(to_tensor(states, dev), torch.from_numpy(aux).to(dev))
        return q.cpu().numpy()

    def to_device(self, device: str) -> list[str]:
        """Move the Q-network and the classifier to ``device``; the classifier's scorer takes
        CPU tensors and returns CPU scores as before. Returns what stayed behind (nothing)."""
        self.cfg = self.cfg.with_overrides(device=str(device))
        self.agent.device = str(device)
        self.agent.q_network.to(device)
        self.classifier_net.to(device)
        self._build_graphs()
        on_device = make_scorer(self.classifier_net, forward=self._cls_graph)

        def scorer(x: torch.Tensor) -> torch.Tensor:
            return on_device(x.to(device)).cpu()

        self.scorer = scorer if str(device) != "cpu" else on_device
        return []

    @classmethod
    def load(cls, path: str | Path) -> "FlipModel":
        bundle = read_bundle(path, "flip_model.safetensors", "flipseg-flip-1", "Flip Learning model")
        if bundle.get("classifier") is None:
            raise FlipsegError(f"{path} has no classifier inside")
        return cls(FlipConfig.from_saved(bundle["config"]), bundle["q_network"], bundle["classifier"])

    def segment_many(
        self,
        images: Sequence[np.ndarray],
        boxes: Sequence[Box],
        *,
        gt_masks: Sequence[np.ndarray | None] | None = None,
        batch_size: int = 64,
        level: int | None = None,
        progress: bool = False,
        seed: int = 0,
        threads: int | None = None,
    ) -> list[FlipResult]:
        """Erase every box greedily with the learned policy.

        All boxes of a batch run in one vectorised environment, so every network
        call covers the whole batch.
        """
        cfg = self.cfg
        # threads: None keeps the run's num_threads (training); 0 leaves torch's own setting
        if threads is None:
            torch.set_num_threads(max(1, cfg.num_threads))
        elif threads > 0:
            torch.set_num_threads(threads)
        if level is None:
            level = cfg.inference_segments or cfg.levels[cfg.inference_level]
        results: list[FlipResult] = []
        gts = list(gt_masks) if gt_masks is not None else [None] * len(images)
        bar = tqdm(total=len(images), desc="flip", unit="box", disable=not progress, leave=False)
        for start in range(0, len(images), batch_size):
            ims = [np.asarray(im, np.float32) for im in images[start : start + batch_size]]
            bxs = [b.validate(im.shape) for b, im in zip(boxes[start : start + batch_size], ims)]
            for im in ims:
                if im.ndim != cfg.dims:
                    raise FlipsegError(
                        f"this model segments {cfg.dims}D images, got shape {im.shape}"
                    )
            sources = choose_eraser_sources(
                ims, bxs, self.scorer, mode=cfg.eraser, margin=cfg.margin,
                size=cfg.classifier_size,
            )
            episodes = [
                prepare_episode(
                    im, b, src[0], cfg, scaled_level(cfg, level, b.shape),
                    gt_mask=gts[start + i], seed=seed,
                )
                for i, (im, b, src) in enumerate(zip(ims, bxs, sources))
            ]
            priors = None
            if cfg.curriculum == "c2f" and level != cfg.levels[0]:
                coarse = [
                    prepare_episode(im, b, src[0], cfg, scaled_level(cfg, cfg.levels[0], b.shape),
                                    seed=seed)
                    for im, b, src in zip(ims, bxs, sources)
                ]
                priors = coarse_priors(coarse, cfg, self.scorer, self.q_values)
            env = greedy_rollout(episodes, cfg, self.scorer, self.q_values, priors=priors)
            masks = env.masks()
            for e, (im, ep, src) in enumerate(zip(ims, episodes, sources)):
                flipped = im.copy()
                region = flipped[ep.view.slices()]
                m_view = masks[e][ep.view.slices()]
                region[m_view] = ep.view_filled[m_view]
                results.append(
                    FlipResult(
                        mask=masks[e],
                        flipped=flipped,
                        curves=env.curves(e),
                        eraser=str(src[1]),
                        initial_score=float(env.initial_score[e]),
                        final_score=float(env.score[e]),
                    )
                )
            bar.update(len(ims))
        bar.close()
        return results


class FlipSegmenter(Segmenter):
    """``--method flip``: the shipped model unless ``model=`` names a run or file.

    ``refine="grabcut"`` (``--method flip-grabcut``, 2D) passes each Flip mask
    to GrabCut as its initialisation: inside the box the mask is probable
    foreground, the rest probable background, and the mask's core deeper than
    ``refine_core`` of its largest inscribed radius is certain foreground (see
    :func:`flipseg.baselines.grabcut.grabcut`). An addition of ours, not in
    the papers.
    """

    name = "flip"

    def __init__(self, model: str | Path | None = None, batch_size: int = 64, dims: int = 2,
                 refine: str | None = None, refine_core: float = 0.3,
                 prior_fusion: float | None = None, segments: int | None = None,
                 threads: int = 0):
        if refine not in (None, "grabcut"):
            raise FlipsegError(f"unknown Flip refinement {refine!r}; choose grabcut or none")
        if refine is not None and dims != 2:
            raise FlipsegError(f"the {refine} refinement of Flip masks is 2D only")
        self.refine, self.refine_core = refine, float(refine_core)
        if refine is not None:
            self.name = f"flip-{refine}"
        path = Path(model) if model else default_model_path(dims)
        if model is None and not path.exists():
            raise FlipsegError(
                f"no default Flip model shipped at {path}; train one with `flipseg train flip`"
            )
        self.model = FlipModel.load(path)
        if prior_fusion is not None:  # override the model's saved post-processing
            self.model.cfg = self.model.cfg.with_overrides(prior_fusion=float(prior_fusion))
        if segments is not None:  # override the model's superpixel count at inference
            self.model.cfg = self.model.cfg.with_overrides(inference_segments=int(segments))
        self.dims = (self.model.cfg.dims,)
        self.batch_size = batch_size
        self.threads = int(threads)

    def segment(self, image: np.ndarray, box: Box, *, seed: int = 0) -> np.ndarray:
        return self.segment_many([image], [box], seed=seed)[0]

    def segment_many(self, images, boxes, *, seed: int = 0) -> list[np.ndarray]:
        res = self.model.segment_many(images, boxes, batch_size=self.batch_size, seed=seed,
                                      threads=self.threads)
        masks = [r.mask for r in res]
        return masks if self.refine is None else self._grabcut(images, boxes, masks, seed)

    def _grabcut(self, images, boxes, masks, seed: int) -> list[np.ndarray]:
        from flipseg.baselines.grabcut import grabcut

        return [grabcut(im, b, rng=np.random.default_rng(case_seed(seed, b)), init=m,
                        init_core=self.refine_core)
                for im, b, m in zip(images, boxes, masks)]


def flip_grabcut(**opts: Any) -> FlipSegmenter:
    """``--method flip-grabcut``: Flip's masks refined by GrabCut (2D)."""
    return FlipSegmenter(**{"refine": "grabcut", "dims": 2, **opts})

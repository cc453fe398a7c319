"""Run folders of the training recipes: config, checkpoint (resume), log, model bundle.

Every recipe trains the same way round: write ``config.json``; when the run
folder holds a checkpoint, refuse it if it was made with another configuration,
else reload it and go on after its last finished epoch; after every epoch save
the checkpoint and the inference bundle atomically (an interrupted run loses at
most the epoch under way), rewrite ``train_log.csv`` and print the log row.
The checkpoints' and bundles' contents stay each recipe's own; this module only
moves them to and from disk: a checkpoint (only ever read back by its own run
folder to resume) with ``torch.save`` / :func:`load_torch_checkpoint`, the
bundle (the model file users pass around) as data, with
:func:`flipseg.bundles.save_bundle` (``.safetensors``).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence, TypeVar

import torch
from tqdm.auto import tqdm

from flipseg.bundles import save_bundle
from flipseg.errors import FlipsegError
from flipseg.io_utils import atomic_save, atomic_write_text

__all__ = [
    "LOG_FILE",
    "NetworkBundle",
    "Placement",
    "close_distributed",
    "init_distributed",
    "launched_world_size",
    "placement",
    "cpu_state",
    "device_of",
    "epoch_state",
    "final_model",
    "load_checkpoint",
    "load_torch_checkpoint",
    "load_states",
    "open_run",
    "resume_epochs",
    "save_epoch",
    "save_torch",
    "set_threads",
    "write_config",
    "write_log",
]

#: The per-epoch log of every run folder.
LOG_FILE = "train_log.csv"
T = TypeVar("T")


# ------------------------------------------------- device and processes
def launched_world_size() -> int:
    """How many processes ``torchrun`` started for this run (``WORLD_SIZE``; 1 without it)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise FlipsegError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def device_of(net: torch.nn.Module) -> torch.device:
    """The device of ``net``'s parameters (the CPU for a module without any)."""
    first = next(iter(net.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def init_distributed(device: str | None) -> int:
    """Join the ``torchrun`` process group (gloo on the CPU, nccl on GPUs) when this process
    is one of several; returns this process's rank (0 when started alone)."""
    import torch.distributed as dist

    from flipseg.devices import resolve_device

    if launched_world_size() == 1 or (dist.is_available() and dist.is_initialized()):
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if not dist.is_available():
        raise FlipsegError("this PyTorch build has no torch.distributed: run one process")
    cuda = resolve_device(device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank()


def close_distributed() -> None:
    """Wait for every process, then leave the process group (no-op when alone)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@dataclass(frozen=True)
class Placement:
    """Where one training process runs: its torch device and its place among the processes
    of a ``torchrun`` launch (rank 0 of 1 when it runs alone).

    With several processes every one holds the whole model (DistributedDataParallel
    averages the gradients), takes its share of each batch (:meth:`share`), and only rank 0
    (:attr:`main`) writes checkpoints, bundles and logs.
    """

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """True for the process that writes the run folder (rank 0)."""
        return self.rank == 0

    def wrap(self, net: torch.nn.Module, *, unused: bool = False) -> torch.nn.Module:
        """``net`` in :class:`~torch.nn.parallel.DistributedDataParallel` with several
        processes, else ``net`` itself. ``unused``: some steps leave parameters without a
        gradient (a decoder without targets in a batch). Save and load ``net``, not the
        wrapper."""
        if self.world == 1:
            return net
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index if self.device.index is not None else 0] \
            if self.device.type == "cuda" else None
        return DistributedDataParallel(net, device_ids=ids, find_unused_parameters=unused)

    def share(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's share of one global batch of sample indices ``[B]``: the positions
        a :class:`~torch.utils.data.DistributedSampler` over the batch gives this rank
        (``rank, rank + world, ...``, padded so every process gets as many). Together the
        processes take the batch one process would: the same steps, the same global batch."""
        if self.world == 1:
            return batch
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(range(len(batch)), num_replicas=self.world, rank=self.rank,
                                     shuffle=False)
        return batch[torch.as_tensor(list(sampler), dtype=torch.long)]

    def too_small(self, batch_len: int) -> bool:
        """A batch too small to train on with batch norm: fewer than two images per process."""
        return batch_len < 2 * self.world

    def mean(self, value: float) -> float:
        """``value`` averaged over the processes (for the log)."""
        if self.world == 1:
            return float(value)
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64,
                         device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def main_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0 first, then on the others (which find its files: caches of
        pseudo masks, a trained classifier) - one process does the work."""
        if self.world == 1:
            return fn()
        if self.main:
            out = fn()
            self.barrier()
            return out
        self.barrier()
        return fn()


def placement(device: str | None = None) -> Placement:
    """This process's :class:`Placement`: the device ``device`` names (``auto``/None: the GPU
    when there is one; :func:`flipseg.devices.resolve_device`) - with several processes on
    GPUs, GPU ``LOCAL_RANK`` - and its rank in the process group (:func:`init_distributed`)."""
    import torch.distributed as dist

    from flipseg.devices import resolve_device

    name = resolve_device(device)
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        if name.startswith("cuda") and world > 1:
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        return Placement(torch.device(name), rank, world)
    if launched_world_size() > 1:
        raise FlipsegError("started by torchrun but not joined to its process group: run "
                           "`torchrun ... -m flipseg.cli train RECIPE ...`")
    return Placement(torch.device(name))


def set_threads(n: int) -> None:
    """``torch.set_num_threads(n)``; 0 leaves torch's default."""
    if n:
        torch.set_num_threads(n)


def cpu_state(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached CPU copies of a state dict's tensors (what a bundle stores)."""
    return {k: v.detach().cpu().clone() for k, v in state_dict.items()}


def save_torch(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (a temporary file, then a rename)."""
    return atomic_save(path, lambda tmp: torch.save(obj, tmp))


def _numpy_scalar_globals() -> list[Any]:
    """What unpickling a numpy scalar takes (optimizer and scheduler states may hold
    ``np.float64`` learning rates, e.g. from a cosine schedule)."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar
    dtype_classes = {type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG"}  # numpy.dtypes.Float64DType, ...
    return [scalar, np.dtype, *sorted(dtype_classes, key=lambda c: c.__name__)]


def load_torch_checkpoint(path: str | Path) -> Any:
    """A training checkpoint (``torch.save``) on the CPU, read with ``weights_only=True``:
    tensors, plain containers and numpy scalars only, no code from the file runs.

    On torch < 2.5 (no ``torch.serialization.safe_globals`` to allow numpy scalars) it
    falls back to a full unpickling: a checkpoint is only ever read back by the run
    folder that wrote it.
    """
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:
        return torch.load(path, map_location="cpu", weights_only=False)
    with safe_globals(_numpy_scalar_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def write_config(run: Path, config: Mapping[str, Any]) -> None:
    """The run's configuration as ``config.json`` (what a re-run resumes with)."""
    atomic_write_text(run / "config.json", json.dumps(config, indent=2))


def _comparable(config: Mapping[str, Any], resumable: Collection[str] = ()) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "num_threads" and k not in resumable}


def load_checkpoint(path: Path, config: Mapping[str, Any] | None = None,
                    resumable: Collection[str] = ()) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none yet.

    Parameters
    ----------
    path
        Checkpoint file inside the run folder.
    config
        The configuration (``cfg.to_dict()``) of the run about to start; when
        given, it must equal the checkpoint's ``config`` but for ``num_threads``
        and the keys in ``resumable`` (e.g. ``epochs``: a run may be extended).
        A checkpoint saved without its ``config`` is not checked.

    Raises
    ------
    FlipsegError
        The run folder holds a run with another configuration.
    """
    if not path.exists():
        return None
    state = load_torch_checkpoint(path)
    if config is None or "config" not in state:
        return state
    saved, now = _comparable(state["config"], resumable), _comparable(config, resumable)
    if saved != now:
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise FlipsegError(f"run folder {path.parent} holds a run with another configuration "
                           f"(differs in: {', '.join(diff)}); use a new --out")
    return state


def open_run(
    run_dir: str | Path, checkpoint: str, config: Mapping[str, Any], *,
    resumable: Collection[str] = (),
) -> tuple[Path, dict[str, Any] | None]:
    """Start or resume a run: create the folder, read its checkpoint, write ``config.json``.

    Parameters
    ----------
    run_dir
        The run folder (created when missing).
    checkpoint
        File name of the recipe's checkpoint in it.
    config
        The run's configuration (``cfg.to_dict()``).
    resumable
        Configuration keys that may change on resume; any other difference from the
        checkpoint's ``config`` is refused (see :func:`load_checkpoint`).

    Returns
    -------
    (run folder, checkpoint contents or None when the run starts afresh)
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    state = load_checkpoint(run / checkpoint, config, resumable)
    write_config(run, config)
    return run, state


def load_states(state: Mapping[str, Any], parts: Mapping[str, Any]) -> None:
    """Resume: ``parts[key].load_state_dict(state[key])`` for every key (networks,
    optimizers, schedulers)."""
    for key, part in parts.items():
        part.load_state_dict(state[key])


def resume_epochs(state: Mapping[str, Any] | None, parts: Mapping[str, Any]) -> tuple[int, list]:
    """``(first epoch to run, log so far)`` of a run: ``(0, [])`` without a checkpoint, else
    the parts reloaded (:func:`load_states`) and the epoch after the checkpoint's."""
    if state is None:
        return 0, []
    load_states(state, parts)
    return int(state["epoch"]) + 1, list(state["log"])


def epoch_state(config: Mapping[str, Any], parts: Mapping[str, Any], epoch: int,
                log: Sequence[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """The checkpoint of a finished epoch: the configuration, every part's state dict, the
    epoch, the log and ``extra`` (what :func:`resume_epochs` and :func:`load_checkpoint` read)."""
    return {"config": dict(config), **{k: p.state_dict() for k, p in parts.items()},
            "epoch": epoch, "log": log, **extra}


def write_log(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """The log rows as CSV (columns: every key, in order of first appearance; blanks where a
    row has none), written atomically."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys, restval="")
            w.writeheader()
            w.writerows(rows)

    atomic_save(path, write)


def save_epoch(
    run: Path,
    checkpoint: tuple[str, dict[str, Any]],
    bundle: tuple[str, dict[str, Any]],
    log: Sequence[Mapping[str, Any]],
    *,
    progress: bool,
    label: str = "",
) -> None:
    """Everything a finished epoch leaves in the run folder.

    Parameters
    ----------
    run
        The run folder.
    checkpoint, bundle
        ``(file name, contents)`` of the checkpoint (``torch.save``) and of the inference
        bundle (:func:`~flipseg.bundles.save_bundle`).
    log
        Every epoch's log row so far (``train_log.csv``).
    progress
        Also print the last row, as JSON after ``label``.
    """
    save_torch(run / checkpoint[0], checkpoint[1])
    save_bundle(run / bundle[0], bundle[1])
    write_log(run / LOG_FILE, log)
    if progress:
        tqdm.write(label + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                       for k, v in log[-1].items()}))


def final_model(path: Path, make_bundle: Callable[[], dict[str, Any]]) -> Path:
    """``path``, after saving ``make_bundle()`` there (:func:`~flipseg.bundles.save_bundle`) if
    no epoch has (nothing left to train)."""
    if not path.exists():
        save_bundle(path, make_bundle())
    return path


class NetworkBundle:
    """A trained network with its configuration, saved as one bundle file.

    Subclasses set ``format`` (the bundle tag), ``file_name`` (the bundle's name in a
    run folder), ``what`` (words for messages), ``config_class`` and :meth:`build`
    (the untrained network of a configuration); ``load`` and ``bundle`` are shared.
    """

    format: str = ""
    file_name: str = ""
    what: str = "model"
    config_class: Any = None

    def __init__(self, cfg: Any, state_dict: Mapping[str, torch.Tensor] | None = None) -> None:
        self.cfg = cfg
        self.net = self.build(cfg)
        if state_dict is not None:
            self.net.load_state_dict(state_dict)
        self.net.eval()
        self.device = torch.device("cpu")

    def to_device(self, device: str | torch.device) -> list[str]:
        """Move the network to ``device``; predictions then run there (inputs are moved in,
        outputs back to the CPU). Returns the parts left behind: none."""
        self.device = torch.device(device)
        self.net.to(self.device)
        return []

    def build(self, cfg: Any) -> torch.nn.Module:
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """The bundle at ``path`` (a file, or a run folder holding ``file_name``)."""
        from flipseg.bundles import read_bundle

        bundle = read_bundle(path, cls.file_name, cls.format, cls.what)
        return cls(cls.config_class.from_saved(bundle["config"]), bundle["state_dict"])

    def bundle(self) -> dict[str, Any]:
        """What :meth:`load` reads back: format tag, configuration, CPU weights."""
        return {"format": self.format, "config": self.cfg.to_dict(),
                "state_dict": cpu_state(self.net.state_dict())}


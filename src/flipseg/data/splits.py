"""Patient-level splits: no patient (or near-duplicate group) in two parts."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import cv2
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from flipseg.errors import FlipsegError

__all__ = ["PARTS", "check_fold", "near_duplicate_groups", "split_by_patient"]

#: The parts a dataset with folds can be asked for.
PARTS = ("all", "train", "val", "test")


def check_fold(part: str, fold: int | None, k: int) -> int | None:
    """Check a request for ``part`` of fold ``fold`` of ``k`` folds: the fold as an int, or
    None when no fold is given (only ``part="all"`` needs none).

    Raises
    ------
    FlipsegError
        An unknown part, a part other than ``all`` without a fold, a fold outside 1..k.
    """
    if part not in PARTS:
        raise FlipsegError(f"part {part!r} must be one of {PARTS}")
    if fold is None:
        if part != "all":
            raise FlipsegError(f"part {part!r} needs a fold (1-{k})")
        return None
    if not 1 <= int(fold) <= k:
        raise FlipsegError(f"fold {fold} must be between 1 and {k} for {k}-fold cv")
    return int(fold)


def split_by_patient(
    samples: Sequence[dict[str, Any]],
    fractions: Sequence[float] = (0.8, 0.2),
    *,
    seed: int = 0,
) -> list[list[dict[str, Any]]]:
    """Split samples into parts of roughly ``fractions`` of the samples, by patient.

    Patients (``patient_id``, else ``case_id``) are sorted, shuffled with
    ``seed`` and dealt one at a time to the part furthest below its target
    sample count, so the result does not depend on the input order and the
    same seed gives the same split. Within a part, samples keep their input
    order.

    Parameters
    ----------
    samples : sample dicts.
    fractions : positive numbers summing to 1 (one per part).
    seed : shuffling seed.

    Returns
    -------
    list of ``len(fractions)`` lists of samples; every patient is in exactly
    one of them (a part may be empty when there are very few patients).

    Raises
    ------
    FlipsegError
        Fractions not positive or not summing to 1.
    """
    frac = np.asarray(list(fractions), dtype=float)
    if frac.ndim != 1 or frac.size == 0 or (frac <= 0).any() or abs(frac.sum() - 1.0) > 1e-6:
        raise FlipsegError(f"split fractions {tuple(fractions)} must be positive and sum to 1")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[str(s.get("patient_id", s.get("case_id")))].append(i)
    patients = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(patients))
    targets = frac * len(samples)
    counts = np.zeros(len(frac))
    assigned: list[list[int]] = [[] for _ in frac]
    for p in order:
        idx = groups[patients[p]]
        part = int(np.argmax(targets - counts))  # largest deficit; ties -> first part
        assigned[part].extend(idx)
        counts[part] += len(idx)
    return [[samples[i] for i in sorted(idx)] for idx in assigned]


def _thumbnail_signature(image: np.ndarray, size: int = 64) -> np.ndarray:
    """Unit-norm, zero-mean, high-passed ``size x size`` thumbnail of a 2D image."""
    img = np.asarray(image, dtype=np.float32)
    small = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    # remove the depth-dependent brightness every ultrasound image shares,
    # keep structure (lesion, layers, calipers) at a few pixels' scale
    small = small - cv2.GaussianBlur(small, (0, 0), size / 16)
    small = cv2.GaussianBlur(small, (0, 0), 1.0).ravel()
    small = small - small.mean()
    return small / (np.linalg.norm(small) + 1e-8)


def near_duplicate_groups(images: Sequence[np.ndarray], *, threshold: float = 0.5) -> np.ndarray:
    """Group 2D images that show the same scene (near-duplicates).

    Each image is reduced to a 64 x 64 thumbnail (area averaging, so size and
    aspect ratio do not matter), high-pass filtered (minus a Gaussian blur of
    sigma 4 thumbnail pixels) to drop the brightness-versus-depth profile that
    all ultrasound images share, lightly smoothed, and normalised. Two images
    are linked when the correlation of their thumbnails exceeds ``threshold``;
    groups are the connected components of that graph.

    The default 0.5 was chosen on BUSI: the nearest-neighbour correlation is
    bimodal there (unrelated images mostly 0.2-0.5, re-saved copies > 0.9,
    other frames of the same lesion 0.5-0.9), and groups barely change for
    thresholds between 0.5 and 0.6 while below 0.45 they start to chain into a
    large component.

    Returns
    -------
    int array (N,): group number per image, numbered by first appearance
    (deterministic for a given input order).
    """
    n = len(images)
    if n == 0:
        return np.zeros(0, dtype=int)
    sig = np.stack([_thumbnail_signature(im) for im in images])
    linked = (sig @ sig.T) > threshold
    _, labels = connected_components(csr_matrix(linked), directed=False)
    first: dict[int, int] = {}
    return np.array([first.setdefault(int(lab), len(first)) for lab in labels], dtype=int)

"""Patient-level splits and near-duplicate grouping."""

import numpy as np
import pytest

from flipseg.data.splits import near_duplicate_groups, split_by_patient
from flipseg.errors import FlipsegError


def _samples(n_patients=40, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for p in range(n_patients):
        for k in range(int(rng.integers(1, 4))):
            out.append({"case_id": f"c{p}_{k}", "patient_id": f"p{p}"})
    return out


def test_no_patient_in_two_parts():
    samples = _samples()
    parts = split_by_patient(samples, (0.6, 0.2, 0.2), seed=1)
    assert sum(len(p) for p in parts) == len(samples)
    seen = [{s["patient_id"] for s in part} for part in parts]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not seen[i] & seen[j]
    for part, f in zip(parts, (0.6, 0.2, 0.2), strict=True):
        assert abs(len(part) - f * len(samples)) <= 3


def test_deterministic_and_order_free():
    samples = _samples()
    a = split_by_patient(samples, seed=4)
    b = split_by_patient(list(reversed(samples)), seed=4)
    assert [{s["case_id"] for s in p} for p in a] == [{s["case_id"] for s in p} for p in b]
    c = split_by_patient(samples, seed=5)
    assert [s["case_id"] for s in a[1]] != [s["case_id"] for s in c[1]]
    assert [s["case_id"] for s in a[0]] == [s["case_id"] for s in samples if s in a[0]]


def test_case_id_when_no_patient_and_bad_fractions():
    samples = [{"case_id": str(i)} for i in range(10)]
    train, val = split_by_patient(samples, (0.7, 0.3))
    assert len(train) == 7 and len(val) == 3
    for bad in [(0.5, 0.6), (1.0, 0.0), ()]:
        with pytest.raises(FlipsegError, match="fractions"):
            split_by_patient(samples, bad)


def test_near_duplicate_groups():
    rng = np.random.default_rng(0)
    base = [rng.normal(100, 30, (80, 90)).astype(np.float32) for _ in range(3)]
    shifted = np.roll(base[0], 1, axis=1) + rng.normal(0, 5, (80, 90))  # near-copy of 0
    resized = np.kron(base[1], np.ones((2, 2)))  # same image at twice the size
    groups = near_duplicate_groups([base[0], base[1], base[2], shifted, resized])
    assert list(groups) == [0, 1, 2, 0, 1]
    assert near_duplicate_groups([]).size == 0

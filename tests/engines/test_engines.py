"""The engines on their own: sharding, the local engine, the process pool (errors per
chunk, a dying worker, setup errors) and the remote segmenter. The pool's workers get
standard-library callables (they must be importable by name in a spawned process)."""

import functools
import operator
import os

import numpy as np
import pytest
import torch

from flipseg.boxes import Box
from flipseg.engines.base import setup_worker, split, spread, threads_per_worker
from flipseg.engines.local import LocalEngine
from flipseg.engines.options import engine_settings
from flipseg.engines.pool import PoolEngine
from flipseg.engines.segmenters import RemoteSegmenter
from flipseg.engines.shard import check_part, shard
from flipseg.errors import FlipsegError


@pytest.mark.parametrize("k", [1, 2, 3, 7, 12])
def test_shards_are_disjoint_and_make_the_whole(k):
    items = list(range(10))
    parts = [shard(items, k, i) for i in range(k)]
    assert sorted(x for p in parts for x in p) == items
    assert all(p == sorted(p) for p in parts)  # input order kept


def test_shard_keeps_a_group_together():
    items = [("a", 1), ("a", 2), ("b", 1), ("c", 1), ("c", 2), ("d", 1)]
    parts = [shard(items, 2, i, key=lambda t: t[0]) for i in range(2)]
    assert parts == [[("a", 1), ("a", 2), ("c", 1), ("c", 2)], [("b", 1), ("d", 1)]]


@pytest.mark.parametrize("k, i, message", [
    (2, None, "together"), (None, 0, "together"), (0, 0, "must be >= 1"), (2, 2, "not in 0..1"),
    (3, -1, "not in 0..2")])
def test_bad_parts_are_one_line_errors(k, i, message):
    with pytest.raises(FlipsegError, match=message):
        check_part(k, i)
    assert check_part(None, None) is None


def test_engine_settings_and_chunks():
    import argparse

    ns = argparse.Namespace
    assert engine_settings(ns(engine="local", workers=None, address=None)) == ("local", 1)
    assert engine_settings(ns(engine="ray", workers=None, address="auto")) == ("ray", 2)
    for bad, message in [(ns(engine="dask", workers=1, address=None), "use local or ray"),
                         (ns(engine="local", workers=0, address=None), "must be >= 1"),
                         (ns(engine="local", workers=2, address="auto"), "for --engine ray")]:
        with pytest.raises(FlipsegError, match=message):
            engine_settings(bad)
    assert split(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert spread(list(range(5)), 2) == [[0, 1], [2, 3, 4]] and spread([1], 4) == [[1]]
    assert threads_per_worker(2, cores=16) == 8 and threads_per_worker(4, cores=2) == 1


def test_setup_worker_sets_threads_and_keeps_errors():
    before = torch.get_num_threads()
    try:
        state, err = setup_worker(functools.partial(dict, a=1), 1)
        assert state == {"a": 1} and err is None and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    state, err = setup_worker(functools.partial(int, "x"), None)
    assert state is None and isinstance(err, ValueError)


def test_local_engine_reports_a_failing_chunk_and_goes_on():
    with LocalEngine(functools.partial(dict, a=1, b=2)) as engine:
        res = engine.run(operator.getitem, ["a", "zz", "b"])
    assert [r.value for r in res] == [1, None, 2]
    assert isinstance(res[1].error, KeyError)


def test_pool_runs_chunks_in_workers_and_survives_errors_and_a_dying_worker():
    with PoolEngine(os.getpid, 2) as engine:
        assert engine.threads == threads_per_worker(2)
        res = engine.run(os.kill, [0, 0, 9, 0, 0])  # chunk 2 kills its worker (SIGKILL)
    assert [r.ok for r in res] == [True, True, False, True, True]
    assert "worker process died" in str(res[2].error)
    with PoolEngine(functools.partial(dict, a=1, b=2), 2) as engine:
        res = engine.run(operator.getitem, ["a", "zz", "b"])
        again = engine.run(operator.getitem, ["a"] * 4)
    assert [r.value for r in res] == [1, None, 2] and isinstance(res[1].error, KeyError)
    assert [r.value for r in again] == [1] * 4


def test_pool_setup_errors_are_raised_once():
    from flipseg.devices import resolve_device

    with pytest.raises(FlipsegError, match="use auto, cpu, cuda"):  # a user mistake: one line
        list(PoolEngine(functools.partial(resolve_device, "gpu"), 2).map(operator.getitem, ["a"]))


def test_remote_segmenter_puts_masks_back_in_order():
    import flipseg

    seg = flipseg.make_segmenter("ellipse")
    images = [np.zeros((20, 30), np.float32)] * 5
    boxes = [Box(i, 2, i + 10, 12) for i in range(5)]
    engine = LocalEngine(functools.partial(dict, ellipse=seg))
    engine.workers = 2  # two pieces, run one after the other
    remote = RemoteSegmenter(engine, "ellipse")
    got = remote.segment_many(images, boxes, seed=3)
    want = seg.segment_many(images, boxes, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    with pytest.raises(KeyError):
        RemoteSegmenter(engine, "missing").segment(images[0], boxes[0])

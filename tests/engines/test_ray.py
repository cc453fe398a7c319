"""``flipseg label --engine ray``: a local Ray cluster of two workers (``ray.init(num_cpus=2)``)
gives the masks, resume and errors.csv of a one-process run. Needs the ``ray`` extra."""

import functools
import operator
import time

import numpy as np
import pytest

from flipseg.cli import main
from flipseg.data.io import read_image
from flipseg.errors import FlipsegError

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module (the engine joins it instead of starting its own)."""
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield time.perf_counter() - t0
    ray.shutdown()


def test_ray_engine_reports_chunk_errors_and_setup_errors(cluster):
    from flipseg.devices import resolve_device
    from flipseg.engines.ray_engine import RayEngine

    engine = RayEngine(functools.partial(dict, a=1, b=2), 2)
    try:
        res = engine.run(operator.getitem, ["a", "zz", "b", "a"])
    finally:
        engine.close()
    assert [r.value for r in res] == [1, None, 2, 1] and isinstance(res[1].error, KeyError)
    assert ray.is_initialized()  # the module's cluster is left running
    with pytest.raises(FlipsegError, match="use auto, cpu, cuda"):
        list(RayEngine(functools.partial(resolve_device, "gpu"), 1).map(operator.getitem, ["a"]))


def test_label_on_ray_equals_a_local_run_with_resume_and_errors(cluster, folder, tmp_path, capsys):
    label = ["label", "--images", str(folder), "--method", "boxinst", "--format", "png,coco",
             "--no-progress"]
    assert main([*label, "--out", str(tmp_path / "local")]) == 3
    t0 = time.perf_counter()
    ray_run = [*label, "--out", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"]
    assert main([*ray_run, "--num-parts", "2", "--part-id", "0"]) == 3  # half, then resume
    capsys.readouterr()
    assert main(ray_run) == 3
    out = capsys.readouterr().out
    assert "2 Ray actors" in out and "done before" in out
    seconds = time.perf_counter() - t0
    local, remote = tmp_path / "local", tmp_path / "ray"
    names = sorted(p.name for p in (local / "png").glob("*.png"))
    assert names == sorted(p.name for p in (remote / "png").glob("*.png")) and len(names) == 8
    for n in names:
        assert np.array_equal(read_image(local / "png" / n), read_image(remote / "png" / n))
    for name in ("coco.json", "errors.csv", "qc.csv"):
        assert (local / name).read_bytes() == (remote / name).read_bytes(), name
    assert cluster + seconds < 60, f"Ray start {cluster:.1f} s + two runs {seconds:.1f} s"

"""``--device auto|cpu|cuda``: resolution, one-line errors without a GPU, and segmenters moved
(on the CPU here: no GPU run was possible where these tests were written)."""

import numpy as np
import pytest
import torch

from flipseg.cli import main
from flipseg.devices import resolve_device
from flipseg.errors import FlipsegError


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == "cpu"
    with pytest.raises(FlipsegError, match="no CUDA GPU is usable"):
        resolve_device("cuda")
    with pytest.raises(FlipsegError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == "cuda" and resolve_device("CUDA:0") == "cuda:0"
    with pytest.raises(FlipsegError, match="has 1 GPU"):
        resolve_device("cuda:1")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("argv", [
    ["segment", "--dataset", "phantom2d", "--method", "ellipse"],
    ["evaluate", "--dataset", "phantom2d", "--method", "ellipse"],
    ["label", "--dataset", "phantom2d", "--method", "ellipse"],
    ["train", "boxinst", "--dataset", "phantom2d"],
    ["train", "flip", "--dataset", "phantom2d"],
])
def test_cuda_without_a_gpu_is_a_one_line_error(argv, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda: no CUDA GPU is usable" in err[0], err
    assert not (tmp_path / "out" / "data.json").exists()  # nothing done


def test_segmenters_move_and_say_what_stays(capsys):
    """Trained networks move with ``to_device``; a composite moves its voters; a part that
    cannot move (the Flip voter of flip-vote) is named."""
    import flipseg

    seg = flipseg.make_segmenter("boxinst")
    assert seg.to_device("cpu") == [] and seg.model.device == torch.device("cpu")
    vote = flipseg.make_segmenter("flip-vote")
    stayed = vote.to_device("cpu")
    assert stayed in ([], ["flip.model"])  # [] once the Flip model can move itself
    assert flipseg.make_segmenter("ellipse").to_device("cpu") == []
    image = np.full((40, 48), 60, np.float32)
    image[10:30, 12:36] = 200
    assert flipseg.segment(image, [(12, 10, 36, 30)], method="boxinst", device="auto")[0].any()

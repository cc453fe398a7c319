"""Model files are data: safetensors + JSON, written by save_bundle, never unpickled on load."""

import argparse
import math
import pickle
import shutil
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from flipseg.bundles import (
    UnsafeLoadWarning,
    bundle_format,
    convert_model,
    load_bundle,
    load_torch_file,
    read_bundle,
    save_bundle,
)
from flipseg.errors import FlipsegError

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """The tensor's memory as bytes (NaN payloads and -0.0 included)."""
    return t.detach().contiguous().view(-1).view(torch.uint8)


def same(a, b) -> bool:
    """Equal trees: same types and keys, tensors/arrays bit-identical with the same dtype and
    shape (a numpy scalar may come back as the Python scalar)."""
    if isinstance(a, torch.Tensor):
        return (type(b) is torch.Tensor and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(_bytes(a), _bytes(b)))
    if isinstance(a, np.ndarray):
        return (type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
                and a.tobytes() == b.tobytes())
    if isinstance(a, np.generic):
        return type(b) is type(a.item()) and same(a.item(), b)
    if isinstance(a, dict):
        return type(a) is type(b) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b) or (a != a and b != b)
    return type(a) is type(b) and a == b


def one_line_error(match: str, call, *args, **kwargs) -> str:
    """``call(*args, **kwargs)`` raises a one-line FlipsegError matching ``match``; its message."""
    with pytest.raises(FlipsegError, match=match) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value), str(info.value)
    return str(info.value)


# ------------------------------------------------------------------- round trip
def test_a_nested_tree_round_trips(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tree = {
        "format": "flipseg-test-1",
        "config": {"levels": [50, 100], "size": (3, 4), "nested": ((1, None), []), "name": "x",
                   "flag": True, "off": False, "none": None, "lr": 1e-3, "nan": float("nan"),
                   "inf": float("-inf"), "zero": -0.0, "big": 2**70},
        "state_dict": OrderedDict(w=base, wt=base.t(), row=base[2], col=base[:, 1], again=base),
        "dtypes": [torch.ones(3, dtype=d) for d in (torch.bool, torch.uint8, torch.int8, torch.int16,
                                                    torch.int32, torch.int64, torch.float16,
                                                    torch.bfloat16, torch.float64)],
        "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.ones(2)),
        "arrays": {"f4": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3),
                   "u2": np.arange(5, dtype=np.uint16), "be": np.arange(3, dtype=">i4"),
                   "b": np.array([True, False]), "zero_d": np.array(7),
                   "strided": np.arange(20.0)[::3], "c": np.array([1 + 2j])},
        "numpy_scalars": [np.float32(0.5), np.int64(3), np.bool_(True)],
        "$": "a key that looks like a marker",
        "keys": {1: "int", (2, "b"): "tuple", None: "none", 2.5: "float"},
        "report": {"skipped_boxes": [], "history": [{"epoch": 1, "loss": 0.25}]},
    }
    path = save_bundle(tmp_path / "m.safetensors", tree)
    assert path == tmp_path / "m.safetensors"
    back = load_bundle(path)
    assert same(tree, back)
    assert isinstance(back["config"]["size"], tuple) and isinstance(back["state_dict"], OrderedDict)
    assert back["numpy_scalars"] == [0.5, 3, True] and type(back["numpy_scalars"][1]) is int
    assert back["arrays"]["be"].dtype == np.dtype(">i4") and back["arrays"]["zero_d"].shape == ()
    back["state_dict"]["w"][0, 0] = 100  # views and repeats were stored as separate tensors
    assert back["state_dict"]["again"][0, 0] == 0
    assert bundle_format(path) == "flipseg-test-1"
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left


def test_the_file_is_safetensors_with_the_tree_in_its_metadata(tmp_path):
    from safetensors import safe_open

    bundle = {"format": "flipseg-x-1", "net": {"a.weight": torch.ones(2)}}
    path = save_bundle(tmp_path / "m.safetensors", bundle)
    with safe_open(str(path), framework="pt") as f:
        assert list(f.keys()) == ["net/a.weight"]
        assert f.metadata()["format"] == "flipseg-x-1" and "flipseg" in f.metadata()


def test_what_json_cannot_hold_is_refused_when_saving(tmp_path):
    for bad in ({"p": Path("x")}, {"s": {1, 2}}, {"o": np.array([object()])}, {"k": {torch.ones(1): 1}}):
        with pytest.raises(TypeError, match="cannot store"):
            save_bundle(tmp_path / "bad.safetensors", bad)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------ hostile files
class _WritesAMarker:
    """Unpickling this object opens (creates) the marker file: code run from a model file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile_files(tmp_path: Path, marker: Path) -> list[Path]:
    payload = {"format": "flipseg-boxinst-1", "config": _WritesAMarker(marker), "state_dict": {}}
    files = []
    for name in ("x.pt", "x.safetensors", "run/boxinst_model.safetensors", "flip/flip_model.safetensors",
                 "classifier/classifier.safetensors"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, tmp_path / name)  # a zip
        files.append(tmp_path / name)
    with open(tmp_path / "bare.safetensors", "wb") as fh:  # a bare pickle
        pickle.dump(payload, fh, protocol=2)
    return files + [tmp_path / "bare.safetensors"]


def _segmenter(name: str, **opts):
    from flipseg.methods import get_segmenter

    return get_segmenter(name, **opts)


def test_a_pickle_model_file_is_refused_without_running_its_code(tmp_path):
    from flipseg.baselines.cam import load_cam_classifier
    from flipseg.methods.boxinst.model import BoxInstModel, BoxInstSegmenter
    from flipseg.methods.cam_mt.mean_teacher import CamMTModel
    from flipseg.methods.flip.classifier import load_classifier
    from flipseg.methods.flip.infer import FlipModel

    marker = tmp_path / "code_ran"
    files = _hostile_files(tmp_path, marker)
    loaders = [
        lambda p: read_bundle(p, "boxinst_model.safetensors", "flipseg-boxinst-1", "boxinst model"),
        load_bundle, bundle_format, lambda p: load_torch_file(p, "model file"),
        BoxInstModel.load, lambda p: BoxInstSegmenter(model=p),
        lambda p: _segmenter("boxinst", model=p), lambda p: _segmenter("flip", model=p),
        FlipModel.load, CamMTModel.load, load_cam_classifier, load_classifier,
    ]
    for path in files:
        for load in loaders:
            msg = one_line_error("old pickle model file", load, path)
            assert f"flipseg convert-model {path}" in msg and "trust" in msg
    for folder, load in ((tmp_path / "run", BoxInstModel.load), (tmp_path / "flip", FlipModel.load),
                         (tmp_path, load_cam_classifier), (tmp_path / "classifier", load_classifier)):
        one_line_error("old pickle model file", load, folder)
    assert not marker.exists()
    # the files are truly hostile: unpickling one runs its code
    with open(files[-1], "rb") as fh:
        pickle.load(fh)["config"].close()
    assert marker.exists()


@pytest.mark.skipif(not hasattr(torch.serialization, "safe_globals"), reason="torch < 2.5 unpickles")
def test_training_checkpoints_load_weights_only(tmp_path):
    """Checkpoints stay torch files (only their own run folder reads them), read with
    weights_only=True: numpy-scalar learning rates load, code does not run."""
    from flipseg.methods.training import load_torch_checkpoint

    net = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: np.float64(0.5))  # as a cosine schedule
    net(torch.ones(1, 2)).sum().backward()
    opt.step()
    sched.step()
    state = {"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": 1,
             "log": [{"epoch": 1, "loss": np.float32(0.5)}], "config": {"size": (1, 2)}}
    torch.save(state, tmp_path / "ckpt.pt")
    back = load_torch_checkpoint(tmp_path / "ckpt.pt")
    assert back["opt"]["param_groups"][0]["lr"] == 5e-4 and back["config"]["size"] == (1, 2)
    assert same(back["net"], state["net"]) and back["log"] == state["log"]
    marker = tmp_path / "code_ran"
    torch.save({"epoch": _WritesAMarker(marker)}, tmp_path / "hostile.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_torch_checkpoint(tmp_path / "hostile.pt")
    assert not marker.exists()


def test_an_old_run_folder_says_how_to_convert_its_model(tmp_path):
    from flipseg.methods.boxinst.model import BoxInstModel

    shutil.copy(LEGACY / "boxinst2d.pt", tmp_path / "boxinst_model.pt")
    msg = one_line_error("old pickle model file", BoxInstModel.load, tmp_path)
    assert str(tmp_path / "boxinst_model.pt") in msg


def test_corrupt_and_foreign_files_are_one_line_errors(tmp_path):
    from safetensors.torch import save_file

    good = save_bundle(tmp_path / "good.safetensors", {"format": "flipseg-x-1", "w": torch.ones(100)})
    data = good.read_bytes()
    cases = {
        "truncated": data[:-50],
        "bad_header": len(b"{not json").to_bytes(8, "little") + b"{not json",
        "random": bytes(range(256)) * 4,
        "empty": b"",
        "text": b"not a model",
    }
    for name, raw in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(raw)
        one_line_error("cannot read", load_bundle, path)
        one_line_error("cannot read", read_bundle, path, "m", "flipseg-x-1", "x model")
        one_line_error("cannot read", bundle_format, path)
    save_file({"w": torch.ones(2)}, str(tmp_path / "plain.safetensors"))  # not ours
    one_line_error("without flipseg metadata", load_bundle, tmp_path / "plain.safetensors")
    assert set(load_torch_file(tmp_path / "plain.safetensors", "weights", weights_only=True)) == {"w"}
    save_file({}, str(tmp_path / "dangling.safetensors"),
              metadata={"flipseg": '{"w": {"$": "tensor", "key": "gone"}}', "flipseg_encoding": "1"})
    one_line_error("missing", load_bundle, tmp_path / "dangling.safetensors")
    one_line_error("cannot read", load_bundle, tmp_path / "absent.safetensors")
    one_line_error("not a flipseg other model", read_bundle, good, "m", "flipseg-other-1", "other model")


# ------------------------------------------------------------------ conversion
def test_convert_model_writes_a_safetensors_file_once(tmp_path, capsys):
    from flipseg.convert import run_convert_model

    src = tmp_path / "flip2d.pt"
    shutil.copy(LEGACY / "flip2d.pt", src)
    with pytest.warns(UnsafeLoadWarning, match="only convert model files you trust"):
        dst = convert_model(src)
    assert dst == tmp_path / "flip2d.safetensors"
    assert same(torch.load(src, map_location="cpu", weights_only=True), load_bundle(dst))
    before = dst.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before anything is unpickled
        one_line_error("already exists", convert_model, src)
        one_line_error("already a safetensors", convert_model, dst, tmp_path / "again.safetensors")
    assert dst.read_bytes() == before

    # the command: warning on stderr, the new file on stdout; --out is refused when taken
    assert run_convert_model(argparse.Namespace(src=str(src), out=str(tmp_path / "o" / "m.safetensors"))) == 0
    out, err = capsys.readouterr()
    assert "trust" in err and "m.safetensors" in out
    assert read_bundle(tmp_path / "o" / "m.safetensors", "x", "flipseg-flip-1", "Flip model")["format"]
    with pytest.raises(FlipsegError, match="already exists"):
        run_convert_model(argparse.Namespace(src=str(src), out=str(tmp_path / "o" / "m.safetensors")))

    torch.save({"format": "something-else", "w": torch.ones(1)}, tmp_path / "foreign.pt")
    with pytest.warns(UnsafeLoadWarning):
        one_line_error("not a flipseg model", convert_model, tmp_path / "foreign.pt")
    assert not (tmp_path / "foreign.safetensors").exists()
    (tmp_path / "junk.pt").write_bytes(b"\x80\x02junk")
    with pytest.warns(UnsafeLoadWarning):
        one_line_error("cannot read", convert_model, tmp_path / "junk.pt")
    one_line_error("not found", convert_model, tmp_path / "missing.pt")


@pytest.fixture(scope="module")
def samples():
    from flipseg.data import load_dataset

    return load_dataset("samples")[:3]


def _converted(tmp_path: Path, name: str) -> Path:
    shutil.copy(LEGACY / f"{name}.pt", tmp_path / f"{name}.pt")
    with pytest.warns(UnsafeLoadWarning):
        return convert_model(tmp_path / f"{name}.pt")


def test_the_shipped_flip_model_segments_as_its_legacy_pickle(tmp_path, samples):
    from flipseg.methods.flip.config import FlipConfig
    from flipseg.methods.flip.infer import FlipModel, default_model_path

    shipped = default_model_path(2)
    assert shipped.name == "flip2d.safetensors"
    assert same(load_bundle(_converted(tmp_path, "flip2d")), load_bundle(shipped))
    old = torch.load(LEGACY / "flip2d.pt", map_location="cpu", weights_only=True)  # as flipseg read it
    models = [FlipModel(FlipConfig.from_saved(old["config"]), old["q_network"], old["classifier"]),
              FlipModel.load(tmp_path / "flip2d.safetensors"), FlipModel.load(shipped)]
    ims, bxs = [s["image"] for s in samples], [s["box"] for s in samples]
    legacy, converted, ours = ([r.mask for r in m.segment_many(ims, bxs)] for m in models)
    assert all(m.any() for m in legacy)
    assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(legacy, converted, ours))


def test_the_shipped_boxinst_model_segments_as_its_legacy_pickle(tmp_path, samples):
    from flipseg.methods.boxinst.model import BoxInstConfig, BoxInstModel, default_model_path

    shipped = default_model_path()
    assert shipped.name == "boxinst2d.safetensors"
    assert same(load_bundle(_converted(tmp_path, "boxinst2d")), load_bundle(shipped))
    old = torch.load(LEGACY / "boxinst2d.pt", map_location="cpu", weights_only=True)  # as flipseg read it
    models = [BoxInstModel(BoxInstConfig.from_dict(old["config"]), old["state_dict"]),
              BoxInstModel.load(tmp_path / "boxinst2d.safetensors"), BoxInstModel.load(shipped)]
    ims, bxs = [s["image"] for s in samples], [s["box"] for s in samples]
    legacy, converted, ours = (m.segment_many(ims, bxs) for m in models)
    assert all(m.any() for m in legacy)
    assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(legacy, converted, ours))


def test_every_shipped_model_is_a_safetensors_bundle():
    from flipseg.methods.boxrefine.model import default_model_path as refiner_path
    from flipseg.methods.flip.infer import default_model_path as flip_path

    for path, fmt in ((flip_path(2), "flipseg-flip-1"), (flip_path(3), "flipseg-flip-1"),
                      (refiner_path(), "flipseg-boxrefine-1")):
        assert path.suffix == ".safetensors" and bundle_format(path) == fmt

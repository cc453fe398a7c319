"""One registration per method: a new package under ``flipseg/methods`` (here a toy one,
written into a temporary folder) is found by ``flipseg methods``, ``evaluate``, ``segment``,
``train`` and the Python API, with nothing else changed."""

import json
import textwrap

import numpy as np
import pytest

import flipseg
from flipseg.cli import main
from flipseg.data.io import write_png
from flipseg.registry import METHODS, MethodSpec, register_method

TOY_SPEC = '''
from dataclasses import dataclass

from flipseg.registry import MethodSpec, register_method


@dataclass
class ToyOptions:
    keep: float = 0.5
    """Fraction of the box's width kept, from its left edge."""


def add_toy_args(p):
    p.add_argument("--out", required=True)
    p.add_argument("--width", type=float, default=0.5)


register_method(MethodSpec(
    name="toy-left", kind="box", dims=(2,), help="the left part of the box",
    factory="flipseg.methods.toy.model:ToySegmenter",
    config="flipseg.methods.toy.spec:ToyOptions",
    recipe="toy", recipe_help="learns nothing, writes its width",
    add_train_args="flipseg.methods.toy.spec:add_toy_args",
    train="flipseg.methods.toy.model:train_toy", source=__name__,
))
'''

TOY_MODEL = '''
import json
from pathlib import Path

import numpy as np

from flipseg.segmenters import Segmenter


class ToySegmenter(Segmenter):
    name = "toy-left"
    dims = (2,)

    def __init__(self, keep=0.5):
        self.keep = float(keep)

    def segment(self, image, box, *, seed=0):
        m = np.zeros(np.shape(image), bool)
        m[box.y0:box.y1, box.x0:box.x0 + int(round(self.keep * (box.x1 - box.x0)))] = True
        return m


def train_toy(args):
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "toy.json").write_text(json.dumps({"width": args.width}))
    return 0
'''


@pytest.fixture()
def toy_method(tmp_path, monkeypatch):
    import flipseg.methods as methods

    pkg = tmp_path / "extra" / "toy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "spec.py").write_text(textwrap.dedent(TOY_SPEC))
    (pkg / "model.py").write_text(textwrap.dedent(TOY_MODEL))
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(tmp_path / "extra")])
    monkeypatch.setattr(methods, "_LOADED", set())
    yield "toy-left"
    METHODS._items.pop("toy-left", None)
    import sys

    for name in [m for m in sys.modules if m.startswith("flipseg.methods.toy")]:
        del sys.modules[name]


def test_a_new_method_package_is_found_everywhere(toy_method, tmp_path, capsys):
    assert main(["methods", "--options"]) == 0
    listed = capsys.readouterr().out
    assert "| toy-left | box | 2 | none | toy | the left part of the box |" in listed
    assert "toy-left: --set keep=0.5 (float)" in listed

    img = np.zeros((40, 60), np.uint8)
    write_png(tmp_path / "im.png", img)
    assert main(["segment", "--method", "toy-left", "--set", "keep=0.25", "--image",
                 str(tmp_path / "im.png"), "--box", "10,5,50,25", "--out", str(tmp_path / "s")]) == 0
    from flipseg.data.io import read_image

    mask = read_image(tmp_path / "s" / "im_mask.png") > 0
    assert mask.sum() == 10 * 20 and mask[5:25, 10:20].all()

    assert main(["evaluate", "--dataset", "samples", "--limit", "2", "--method", "toy-left",
                 "--out", str(tmp_path / "e"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "e" / "summary.json").read_text())

    assert main(["train", "toy", "--out", str(tmp_path / "t"), "--width", "0.7"]) == 0
    assert json.loads((tmp_path / "t" / "toy.json").read_text()) == {"width": 0.7}

    masks = flipseg.segment(img, [(10, 5, 50, 25)], method="toy-left", keep=0.5)
    assert masks[0].sum() == 20 * 20


def test_unknown_method_and_bad_option_are_one_line(toy_method, tmp_path, capsys):
    write_png(tmp_path / "im.png", np.zeros((40, 60), np.uint8))
    for argv, words in (
        (["--method", "toy-lft"], "unknown method 'toy-lft'; choose one of:"),
        (["--method", "toy-left", "--set", "kep=1"], "no option 'kep' in toy-left"),
        (["--method", "toy-left", "--set", "keep=lots"], "not a valid float"),
        (["--method", "toy-left", "--model", "x"], "take(s) no trained model"),
    ):
        capsys.readouterr()
        assert main(["segment", *argv, "--image", str(tmp_path / "im.png"), "--box", "1,1,9,9",
                     "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err


def test_a_spec_is_checked_when_registered():
    with pytest.raises(ValueError, match="kind"):
        MethodSpec(name="x", kind="magic", dims=(2,), help="")
    with pytest.raises(ValueError, match="recipe and train"):
        MethodSpec(name="x", kind="box", dims=(2,), help="", recipe="x")
    spec = MethodSpec(name="flip", kind="box", dims=(2,), help="another flip")
    with pytest.raises(KeyError, match="registered twice"):
        flipseg.methods.load_methods()
        register_method(spec)


def test_every_trained_method_has_a_consistent_spec():
    from flipseg.methods import default_method, load_methods, recipes
    from flipseg.registry import resolve

    load_methods()
    assert default_method(2) == "flip-vote" and default_method(3) == "flip"
    for name in METHODS.names():
        spec = METHODS.get(name)
        if spec.factory is not None:
            assert callable(resolve(spec.factory)), name
        if spec.config is not None:
            resolve(spec.config)()  # defaults construct
        if spec.model_formats:
            assert spec.model != "none" and spec.model_files, name
    assert set(recipes()) == {"flip", "boxinst", "box-refiner", "pseudo", "hybrid", "lanet", "cam-mt",
                              "backbone"}

"""CAM baselines on a tiny random-weight classifier and a synthetic dark disc."""

import numpy as np
import pytest
import torch

from flipseg.baselines import BASELINES
from flipseg.baselines import cam as cam_mod
from flipseg.boxes import Box
from flipseg.bundles import save_bundle
from flipseg.errors import FlipsegError
from flipseg.methods import get_segmenter
from flipseg.networks.classifier import build_classifier

NAMES = ["cam", "gradcam", "gradcam++", "layercam", "eigengradcam", "ablationcam"]
BOX = Box(28, 30, 70, 66)


def _state_dict(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    net = build_classifier("compact", spatial_dims=2)
    for m in net.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    with torch.no_grad():  # nodule weights of mixed sign, mostly positive: Grad-CAM is not all zero
        w = net.fc.weight[0].abs()
        w[::4] *= -1
        net.fc.weight[0] = w
    return net.state_dict()


def _classifier_config() -> dict:
    return {"network": "compact", "input_size": 64, "margin": 0.25, "dims": 2}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny networks: threads only add overhead (and contention on shared CI machines)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("cam") / "flip_model.safetensors"
    bundle = {
        "format": "flipseg-flip-1",
        "config": {"dims": 2},
        "q_network": {},
        "classifier": {"config": _classifier_config(), "state_dict": _state_dict()},
    }
    save_bundle(path, bundle)
    return str(path)


def _disc_image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:100, :96]
    image = 150.0 + 20.0 * rng.standard_normal((100, 96))
    image[(yy - 48) ** 2 + (xx - 49) ** 2 <= 14**2] = 40.0
    return np.clip(image, 0, 255).astype(np.float32)


def test_all_six_registered_as_2d_baselines():
    assert sorted(cam_mod.CAM_METHODS) == sorted(NAMES)
    for name in NAMES:
        assert BASELINES.get(name).dims == (2,)


@pytest.mark.parametrize("name", NAMES)
def test_mask_inside_box_and_not_empty(name, model_path):
    image = _disc_image()
    seg = get_segmenter(name, model=model_path)
    mask = seg.segment(image, BOX, seed=0)
    assert mask.dtype == bool and mask.shape == image.shape
    assert mask.any()
    cam = cam_mod.cam_maps([image], [BOX], method=name, model=model_path)[0]
    assert cam_mod.mask_from_cam(cam) is not None  # the threshold rule ran, not the fallback
    assert not (mask & ~BOX.to_mask(image.shape)).any()
    again = get_segmenter(name, model=model_path).segment(image, BOX, seed=1)
    np.testing.assert_array_equal(mask, again)  # deterministic, rng unused


@pytest.mark.parametrize("name", [n for n in NAMES if n != "gradcam"])
def test_each_variant_differs_from_gradcam(name, model_path):
    images = [_disc_image(0), _disc_image(1)]
    boxes = [BOX, Box(10, 12, 40, 50)]
    ref = cam_mod.cam_maps(images, boxes, method="gradcam", model=model_path)
    got = cam_mod.cam_maps(images, boxes, method=name, model=model_path)
    for r, g in zip(ref, got):
        assert r.shape == g.shape
        assert not np.allclose(r, g, rtol=1e-3, atol=1e-6)


def test_base_with_pooled_gradient_weights_reproduces_monai_gradcam(model_path):
    """The override structure: Grad-CAM is our base plus a one-line cam_weights."""

    class PooledGradCAM(cam_mod._CamBase):
        def cam_weights(self, x, acts, grads):
            return grads.mean((2, 3), keepdim=True)

    net, _ = cam_mod.load_cam_classifier(model_path)
    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    ours = PooledGradCAM(net, net.cam_layer).feature_maps(x)
    monai = cam_mod._explainer("gradcam", model_path).feature_maps(x)
    torch.testing.assert_close(ours, monai, rtol=1e-4, atol=1e-6)


def test_ablation_weights_are_logit_drops(model_path):
    net, _ = cam_mod.load_cam_classifier(model_path)
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    explainer = cam_mod.CAM_METHODS.get("ablationcam")(net, net.cam_layer)
    acts, _ = explainer.activations_and_gradients(x)
    weights = explainer.cam_weights(x, acts, None)
    with torch.no_grad():
        base = net(x)[:, 0]
        k = 5
        ablated = acts.clone()
        ablated[:, k] = 0
        tail = net.fc(net.pool(ablated).flatten(1))[:, 0]  # the compact net after cam_layer
    torch.testing.assert_close(weights[:, k, 0, 0], base - tail, rtol=1e-4, atol=1e-5)


def test_batched_maps_equal_one_at_a_time(model_path):
    images = [_disc_image(s) for s in range(3)]
    boxes = [BOX, Box(5, 5, 30, 40), Box(60, 0, 96, 100)]
    for name in ("gradcam", "layercam"):
        batched = cam_mod.cam_maps(images, boxes, method=name, model=model_path)
        single = [cam_mod.cam_maps([im], [b], method=name, model=model_path)[0]
                  for im, b in zip(images, boxes)]
        for a, b in zip(batched, single):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_mask_from_cam_rule():
    cam = np.zeros((20, 30), np.float32)
    cam[2:8, 2:8] = 1.0  # small blob
    cam[10:19, 10:25] = 2.0  # larger blob with a hole
    cam[13:15, 15:18] = 0.0
    mask = cam_mod.mask_from_cam(cam)
    expected = np.zeros_like(mask)
    expected[10:19, 10:25] = True
    np.testing.assert_array_equal(mask, expected)
    assert cam_mod.mask_from_cam(np.ones((5, 5))) is None


def test_constant_map_gives_inscribed_ellipse(model_path, monkeypatch):
    image = _disc_image()
    monkeypatch.setattr(cam_mod, "cam_maps", lambda ims, bxs, **kw: [np.zeros(b.shape) for b in bxs])
    mask = get_segmenter("layercam", model=model_path).segment(image, BOX)
    np.testing.assert_array_equal(mask, BASELINES.get("ellipse")(image, BOX))


def test_raw_classifier_checkpoint_and_folder(tmp_path, model_path):
    folder = tmp_path / "classifier"
    folder.mkdir()
    save_bundle(folder / "classifier.safetensors", {"format": "flipseg-classifier-1",
                                                    "config": _classifier_config(),
                                                    "state_dict": _state_dict(), "epoch": 1})
    net, config = cam_mod.load_cam_classifier(tmp_path)  # a run folder
    assert config["path"].endswith("classifier.safetensors") and config["input_size"] == 64
    a = cam_mod.cam_maps([_disc_image()], [BOX], model=tmp_path)[0]
    b = cam_mod.cam_maps([_disc_image()], [BOX], model=model_path)[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # same weights, same map


def test_networks_are_cached_per_path(model_path):
    assert cam_mod.load_cam_classifier(model_path)[0] is cam_mod.load_cam_classifier(model_path)[0]


def test_missing_or_bad_model_is_a_user_error(tmp_path, monkeypatch):
    image = _disc_image()
    with pytest.raises(FlipsegError, match="model not found"):
        get_segmenter("gradcam", model=tmp_path / "nope.pt").segment(image, BOX)
    with pytest.raises(FlipsegError, match="no flip_model.safetensors"):
        get_segmenter("gradcam", model=tmp_path).segment(image, BOX)
    monkeypatch.setattr(cam_mod, "default_cam_model_path", lambda: tmp_path / "absent.pt")
    with pytest.raises(FlipsegError, match="flipseg train flip"):
        get_segmenter("gradcam").segment(image, BOX)
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(FlipsegError, match="cannot read"):
        get_segmenter("gradcam", model=tmp_path / "junk.pt").segment(image, BOX)
    save_bundle(tmp_path / "mismatch.safetensors", {"format": "flipseg-classifier-1",
                                                    "config": {"network": "resnet18", "dims": 2},
                                                    "state_dict": _state_dict()})
    with pytest.raises(FlipsegError, match="do not fit network 'resnet18'"):
        get_segmenter("gradcam", model=tmp_path / "mismatch.safetensors").segment(image, BOX)


def test_bad_inputs_are_user_errors(model_path):
    seg = get_segmenter("gradcam", model=model_path)
    with pytest.raises(FlipsegError, match="2D images"):
        seg.segment(np.zeros((4, 20, 20), np.float32), Box(2, 2, 10, 10, 0, 3))
    with pytest.raises(FlipsegError, match="outside the image"):
        seg.segment(_disc_image(), Box(200, 200, 220, 220))
    with pytest.raises(FlipsegError, match="unknown CAM method"):
        cam_mod.cam_maps([_disc_image()], [BOX], method="scorecam", model=model_path)


def test_forward_hooks_removed_after_use(model_path):
    net, _ = cam_mod.load_cam_classifier(model_path)
    for name in NAMES:
        cam_mod.cam_maps([_disc_image()], [BOX], method=name, model=model_path)
    layer = net.get_submodule(net.cam_layer)
    assert not layer._forward_hooks and not layer._backward_hooks


class _SkipAround(torch.nn.Module):
    """A classifier whose head also reads features from before ``cam_layer``."""

    cam_layer = "block"

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.block = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        return self.fc((self.block(h) + h).mean((2, 3)))


@pytest.mark.parametrize("name", ["compact", "resnet18"])
def test_network_tail_reproduces_the_classifier(name):
    torch.manual_seed(0)
    net = build_classifier(name, spatial_dims=2).eval()
    x = torch.rand(2, 1, 64, 64)
    tail = cam_mod.network_tail(net, net.cam_layer)
    acts, _ = cam_mod._CamBase(net, net.cam_layer).activations_and_gradients(x)
    with torch.no_grad():
        torch.testing.assert_close(tail(acts), net(x))


def test_ablation_without_a_separable_tail_reruns_the_network():
    torch.manual_seed(0)
    net = _SkipAround().eval()
    assert cam_mod.network_tail(net, "block") is None
    explainer = cam_mod.CAM_METHODS.get("ablationcam")(net, "block")
    x = torch.rand(2, 1, 16, 16)
    acts, _ = explainer.activations_and_gradients(x)
    weights = explainer.cam_weights(x, acts, None)[:, :, 0, 0]  # [B, C]
    with torch.no_grad():
        h = torch.relu(net.stem(x))
        for k in range(4):
            ablated = acts.clone()
            ablated[:, k] = 0
            drop = net(x)[:, 0] - net.fc((ablated + h).mean((2, 3)))[:, 0]
            torch.testing.assert_close(weights[:, k], drop)

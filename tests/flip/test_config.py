"""Flip configuration: presets, overrides from the command line, validation."""

import pytest

from flipseg.errors import FlipsegError
from flipseg.methods.flip.classifier import ClassifierConfig
from flipseg.methods.flip.config import PAPER_2D_LEVELS, PAPER_3D_LEVELS, FlipConfig, default_config
from flipseg.runs import parse_overrides


def test_paper_preset_is_the_papers_reward_and_curriculum():
    cfg = default_config(2, "paper")
    assert (cfg.use_csr, cfg.use_idr1, cfg.use_idr2, cfg.use_prior) == (True, True, True, False)
    assert cfg.csr_tolerance == 0 and cfg.smooth == 0 and not cfg.global_view
    assert cfg.prior_fusion == 0 and default_config(3, "paper").prior_fusion == 0
    assert default_config(2).prior_fusion == default_config(3).prior_fusion == 0.4
    assert cfg.levels == PAPER_2D_LEVELS and cfg.q_network == "resnet18"
    cfg3 = default_config(3, "paper")
    assert cfg3.dims == 3 and cfg3.levels == PAPER_3D_LEVELS and not cfg3.use_prior


def test_unknown_preset_and_bad_values_are_user_errors():
    with pytest.raises(FlipsegError, match="magic"):
        default_config(2, "magic")
    with pytest.raises(FlipsegError, match="csr_tolerance"):
        FlipConfig(csr_tolerance=-1)
    with pytest.raises(FlipsegError, match="smooth"):
        FlipConfig(smooth=0.9)
    with pytest.raises(FlipsegError, match="prior_fusion"):
        FlipConfig(prior_fusion=1.0)
    with pytest.raises(FlipsegError, match="prior_fusion_sigma"):
        FlipConfig(prior_fusion_sigma=0)


def test_parse_overrides_types_and_errors():
    out = parse_overrides(["levels=50,100", "use_prior=true", "csr_tolerance=0.03", "agents=3"],
                          FlipConfig, "flip")
    assert out == {"levels": (50, 100), "use_prior": True, "csr_tolerance": 0.03, "agents": 3}
    assert parse_overrides(["fill_scheme=residual"], ClassifierConfig, "classifier") == {
        "fill_scheme": "residual"}
    with pytest.raises(FlipsegError, match="unknown classifier option"):
        parse_overrides(["nope=1"], ClassifierConfig, "classifier")
    with pytest.raises(FlipsegError, match="not a valid"):
        parse_overrides(["agents=two"], FlipConfig, "flip")


def test_configs_saved_before_new_options_keep_their_behaviour(tmp_path):
    from flipseg.methods.flip.config import LEGACY_VALUES

    old = FlipConfig().to_dict()
    for k in LEGACY_VALUES:
        old.pop(k)
    path = tmp_path / "config.json"
    path.write_text(__import__("json").dumps(old))
    cfg = FlipConfig.load(path)
    for k, v in LEGACY_VALUES.items():
        assert getattr(cfg, k) == v
    new = FlipConfig()
    new.save(path)
    assert FlipConfig.load(path) == new  # a complete file round-trips unchanged


def test_inference_segments_is_checked_and_off_by_default():
    assert FlipConfig().inference_segments == 0
    assert FlipConfig.from_saved({"levels": [50, 100]}).inference_segments == 0
    with pytest.raises(FlipsegError, match="inference_segments"):
        FlipConfig(inference_segments=1)

"""Run plumbing: typed overrides, the one configuration resolution, versioned configs, a run's
record of its data."""

import argparse
import json
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from flipseg.errors import FlipsegError
from flipseg.runs import (
    parse_overrides,
    parse_value,
    read_config,
    record_run_data,
    resolve_config,
    start_afresh,
    write_config,
)


@dataclass
class Toy:
    n: int = 1
    rate: float = 0.5
    name: str = "a"
    flag: bool = False
    maybe: Optional[int] = 3
    pair: tuple[int, int] = (1, 2)
    many: tuple[float, ...] = (0.1,)
    mode: Literal["fast", "slow"] = "fast"
    notes: dict = field(default_factory=dict)


def test_parse_overrides_types_every_kind_of_field():
    got = parse_overrides(["n=4", "rate=1e-3", "name=b", "flag=yes", "maybe=none", "pair=5,6",
                           "many=1,2.5", "mode=slow", "notes={\"k\": 1}"], Toy, "toy")
    assert got == {"n": 4, "rate": 1e-3, "name": "b", "flag": True, "maybe": None,
                   "pair": (5, 6), "many": (1.0, 2.5), "mode": "slow", "notes": {"k": 1}}
    assert parse_overrides(["maybe=7"], Toy) == {"maybe": 7}
    assert parse_overrides(["many="], Toy) == {"many": ()}


@pytest.mark.parametrize("item, words", [
    ("n=four", "--set 'n=four': not a valid int"),
    ("flag=maybe", "not a valid bool"),
    ("pair=1,2,3", "needs 2 comma-separated values"),
    ("mode=medium", "not one of fast, slow"),
    ("nope=1", "unknown toy option 'nope'; known: flag, many"),
    ("n", "must look like KEY=VALUE"),
])
def test_parse_overrides_errors_name_field_and_value(item, words):
    with pytest.raises(FlipsegError) as err:
        parse_overrides([item], Toy, "toy")
    assert words in str(err.value) and "\n" not in str(err.value)


def test_parse_value_optional_tuple_and_bool():
    assert parse_value("none", Optional[float]) is None
    assert parse_value("0.25", Optional[float]) == 0.25
    assert parse_value("off", bool) is False
    with pytest.raises(ValueError):
        parse_value("x", Optional[int])


@dataclass
class Versioned:
    a: int = 1
    b: int = 2
    config_version = 2  # a class attribute, not a field

    @classmethod
    def migrate(cls, d, version):
        if version == 0:  # version 0 had no b; it behaved as b=0
            return {**d, "b": d.get("b", 0)}
        if version == 1:  # version 1 called a "alpha"
            d = dict(d)
            if "alpha" in d:
                d["a"] = d.pop("alpha")
            return d
        raise AssertionError(version)


def test_read_config_migrates_step_by_step():
    assert read_config(Versioned, {"a": 5}) == Versioned(a=5, b=0)
    assert read_config(Versioned, {"alpha": 5, "b": 9, "config_version": 1}) == Versioned(5, 9)
    assert read_config(Versioned, {"a": 5, "config_version": 2}) == Versioned(5, 2)
    with pytest.raises(FlipsegError, match="newer flipseg"):
        read_config(Versioned, {"a": 1, "config_version": 3})


def test_resolve_config_precedence(tmp_path):
    """preset < saved run config < config file < --set."""
    saved, file = tmp_path / "config.json", tmp_path / "mine.json"
    preset = {"n": 10, "rate": 0.1, "name": "preset"}
    assert resolve_config(Toy, preset=preset) == Toy(n=10, rate=0.1, name="preset")
    write_config(saved, Toy(n=20, rate=0.2, name="saved"))
    assert json.loads(saved.read_text())["config_version"] == 1
    assert resolve_config(Toy, preset=preset, saved=saved).n == 20
    file.write_text(json.dumps({"n": 30}))
    got = resolve_config(Toy, preset=preset, saved=saved, file=file, overrides=["rate=0.4"])
    assert (got.n, got.rate, got.name) == (30, 0.4, "a")  # the file is a whole configuration
    got = resolve_config(Toy, preset=preset, saved=saved, overrides=["rate=0.4"])
    assert (got.n, got.rate, got.name) == (20, 0.4, "saved")
    assert resolve_config(Toy, saved=tmp_path / "none.json").n == 1  # no saved run yet
    with pytest.raises(FlipsegError, match="not found"):
        resolve_config(Toy, file=tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FlipsegError, match="cannot read"):
        resolve_config(Toy, file=tmp_path / "bad.json")


def test_flip_config_migration_is_explicit():
    from flipseg.methods.flip.config import LEGACY_VALUES, FlipConfig

    old = FlipConfig().to_dict()
    for k in LEGACY_VALUES:
        old.pop(k)
    cfg = FlipConfig.from_saved(old)  # version 0: the old behaviour for the missing options
    assert all(getattr(cfg, k) == v for k, v in LEGACY_VALUES.items())
    new = {**FlipConfig().to_dict(), "config_version": 1}
    assert FlipConfig.from_saved(new) == FlipConfig()
    assert FlipConfig.migrate(old, 0)["prior_fusion"] == LEGACY_VALUES["prior_fusion"]


def _args(out, **kw):
    base = dict(out=str(out), data_root=None, fold=None, limit=None, data_opt=[])
    return argparse.Namespace(**{**base, **kw})


def test_a_run_remembers_its_data(tmp_path):
    cases = [{"case_id": f"c{i}"} for i in range(5)]
    rec = record_run_data(_args(tmp_path / "r", limit=5), "bus-bra", cases, part="all", n_train=4)
    assert rec["case_ids_sha256"] and rec["limit"] == 5 and rec["n_train"] == 4
    path = tmp_path / "r" / "data.json"
    before = path.stat().st_mtime_ns
    again = record_run_data(_args(tmp_path / "r", limit=5), "bus-bra", cases, part="all", n_train=99)
    assert again["n_train"] == 4 and path.stat().st_mtime_ns == before  # not rewritten
    with pytest.raises(FlipsegError) as err:
        record_run_data(_args(tmp_path / "r", limit=5), "busi", cases, part="all")
    msg = str(err.value)
    assert "trained on dataset 'bus-bra'" in msg and "'busi'" in msg and "--fresh" in msg
    with pytest.raises(FlipsegError):  # same dataset, other cases
        record_run_data(_args(tmp_path / "r", limit=5), "bus-bra", cases[::-1], part="all")


def test_start_afresh_moves_the_old_run_aside(tmp_path):
    run = tmp_path / "r"
    assert start_afresh(run) is None
    run.mkdir()
    (run / "config.json").write_text("{}")
    moved = start_afresh(run)
    assert not run.exists() and (moved / "config.json").read_text() == "{}"
    assert moved.name.startswith("r.replaced-")

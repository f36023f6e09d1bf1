"""Tests for :mod:`mbrl.config`: defaults, presets, overrides, validation, serialisation and resume checks."""

from __future__ import annotations

import dataclasses
import json

import pytest

from envs.errors import ConfigError
from mbrl.config import (
    ALGOS,
    SIZES,
    Config,
    allowed_keys,
    build_config,
    from_dict,
    incompatible_keys,
    model_hash,
    parse_overrides,
    to_dict,
)


def test_defaults():
    cfg = build_config()
    assert isinstance(cfg, Config)
    assert cfg.size == "S" and cfg.algo == "dreamerv3" and cfg.encoder == "cnn"
    assert cfg.image_size == 64 and cfg.steps == 100_000
    # size S (Hafner et al. 2023, Table B.1): 512 GRU units, CNN multiplier 32, 512 dense units, 2 layers
    assert (cfg.model.deter, cfg.model.hidden, cfg.model.units, cfg.model.cnn_depth) == (512, 512, 512, 32)
    assert cfg.model.stoch == 32 and cfg.model.classes == 32
    assert cfg.model.head_layers == cfg.model.ac_layers == 2
    # dreamerv3 (reference code): LaProp lr 4e-5, agc 0.3, KL dyn 1.0 / rep 0.1, free nats 1
    assert cfg.optim.name == "laprop" and cfg.optim.lr == 4e-5 and cfg.optim.agc == 0.3
    assert cfg.loss.dyn == 1.0 and cfg.loss.rep == 0.1 and cfg.loss.free_nats == 1.0
    assert cfg.loss.lam == 0.95 and cfg.loss.horizon == 333.0 and cfg.loss.imag_horizon == 15
    assert cfg.model.unimix == 0.01 and cfg.model.bins == 255
    assert build_config(None) == build_config({}) == build_config([]) == cfg


def test_size_presets():
    xs = build_config({"size": "XS"})
    assert xs.model.deter == 256 and xs.model.units == 256 and xs.model.cnn_depth == 24
    assert xs.model.head_layers == 1
    xl = build_config({"size": "XL"})
    assert xl.model.deter == 4096 and xl.model.units == 1024 and xl.model.ac_layers == 5
    big = build_config({"size": "size200m"})
    assert big.model.deter == 8192 and big.model.classes == 64 and big.model.hidden == 1024
    assert big.model.cnn_mults == (2, 3, 4, 4) and big.model.ac_layers == 3
    for size in SIZES:
        cfg = build_config({"size": size})
        assert cfg.model.deter % cfg.model.blocks == 0


def test_algo_presets():
    paper = build_config({"algo": "dreamerv3_2023"})
    assert paper.loss.dyn == 0.5 and paper.loss.rep == 0.1
    assert paper.optim.name == "adam" and paper.optim.lr == 1e-4 and paper.optim.actor_lr == 3e-5
    assert paper.optim.agc == 0.0 and paper.optim.clip == 1000.0 and paper.loss.actor_grad == "backprop"
    code = build_config({"algo": "dreamerv3"})
    assert code.loss.dyn == 1.0 and code.optim.name == "laprop"
    assert set(ALGOS) == {"dreamerv3", "dreamerv3_2023"}


def test_explicit_override_beats_preset():
    cfg = build_config({"size": "XS", "model.deter": "128"})
    assert cfg.model.deter == 128
    assert cfg.model.units == 256  # the rest of the preset still applies
    cfg = build_config(["algo=dreamerv3_2023", "loss.dyn=0.7", "optim.name=laprop"])
    assert cfg.loss.dyn == 0.7 and cfg.optim.name == "laprop" and cfg.optim.lr == 1e-4
    # order of the overrides does not matter: section keys always win over presets
    assert build_config({"model.deter": "128", "size": "XS"}).model.deter == 128


def test_type_conversion():
    cfg = build_config({"steps": "1e5", "progress": "false", "loss.lam": "0.9", "model.cnn_mults": "1,2,3",
                        "env": "dmc:walker_walk"})
    assert cfg.steps == 100_000 and isinstance(cfg.steps, int)
    assert cfg.progress is False
    assert cfg.loss.lam == 0.9
    assert cfg.model.cnn_mults == (1, 2, 3)
    assert cfg.env == "dmc:walker_walk"


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError) as err:
        build_config({"stepz": "10"})
    msg = str(err.value)
    assert "stepz" in msg
    for key in ("steps", "env", "image_size", "model.*", "optim.*"):
        assert key in msg
    with pytest.raises(ConfigError, match="model.nope"):
        build_config({"model.nope": "1"})
    assert "model.deter" in allowed_keys() and "steps" in allowed_keys()


@pytest.mark.parametrize("key,value", [("steps", "abc"), ("steps", "1.5"), ("progress", "maybe"),
                                       ("model.deter", "big"), ("loss.lam", "x")])
def test_wrong_type_names_key(key, value):
    with pytest.raises(ConfigError, match=key):
        build_config({key: value})


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError) as err:
        build_config({"size": "XXL"})
    msg = str(err.value)
    assert "XXL" in msg and "XS" in msg and "size200m" in msg
    with pytest.raises(ConfigError, match="dreamerv3_2023"):
        build_config({"algo": "dreamerv4"})
    with pytest.raises(ConfigError, match="rms"):
        build_config({"model.norm": "batch"})


@pytest.mark.parametrize("overrides,key", [
    ({"model.deter": "100", "model.blocks": "8"}, "model.blocks"),
    ({"steps": "0"}, "steps"),
    ({"image_size": "40"}, "image_size"),
    ({"model.unimix": "1.0"}, "model.unimix"),
    ({"loss.lam": "1.5"}, "loss.lam"),
    ({"prefill": "-1"}, "prefill"),
    ({"replay_capacity": "10", "batch_length": "64"}, "replay_capacity"),
])
def test_invalid_values_raise(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_config(overrides)


def test_config_error_is_value_error():
    with pytest.raises(ValueError):
        build_config({"size": "XXL"})


def test_parse_overrides():
    assert parse_overrides(["a=1", "b.c=x=y"]) == {"a": "1", "b.c": "x=y"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["steps"])
    with pytest.raises(ConfigError):
        parse_overrides(["=5"])


def test_to_dict_from_dict_round_trip():
    cfg = build_config({"size": "size1m", "algo": "dreamerv3_2023", "steps": "5000", "model.cnn_mults": "1,2"})
    data = to_dict(cfg)
    assert data["model"]["deter"] == 512 and data["steps"] == 5000
    assert from_dict(data) == cfg
    via_json = from_dict(json.loads(json.dumps(data)))  # tuples become lists in JSON
    assert via_json == cfg
    assert via_json.model.cnn_mults == (1, 2) and isinstance(via_json.model.cnn_mults, tuple)
    assert dataclasses.asdict(via_json) == data


def test_incompatible_keys_and_model_hash():
    old = build_config({"size": "XS"})
    assert incompatible_keys(old, build_config({"size": "XS"})) == []
    resumed = build_config({"size": "XS", "steps": "500000", "log_every": "10", "device": "cpu"})
    assert incompatible_keys(old, resumed) == []
    assert model_hash(old) == model_hash(resumed)
    changed = build_config({"size": "XS", "model.deter": "128", "steps": "500000"})
    assert incompatible_keys(old, changed) == ["model.deter"]
    assert model_hash(old) != model_hash(changed)
    other = build_config({"size": "XS", "env": "dmc:walker_walk", "optim.lr": "1e-3"})
    assert set(incompatible_keys(old, other)) == {"env", "optim.lr"}

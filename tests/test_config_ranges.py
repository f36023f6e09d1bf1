"""Every numeric config key has a declared range (:data:`mbrl.config.RANGES`) that :func:`mbrl.config.validate`
enforces (NaN and +-inf refused for every float), the cross-field rules, and the name checks of
:func:`mbrl.runtime.check_env_encoder` that ``dreamshift config`` shares with ``train``."""

from __future__ import annotations

import math

import pytest
from conftest import assert_user_error

from envs.errors import ConfigError
from mbrl.config import (
    MAX_SEED,
    RANGES,
    Config,
    Range,
    build_config,
    numeric_keys,
    validate,
)
from mbrl.runtime import check_env_encoder


def test_every_numeric_field_has_a_range():
    keys = numeric_keys()
    # the new fields are numeric keys too, so a field added without a range fails here
    assert {"model.mlp_layers", "model.actor_outscale", "loss.repval", "optim.lr", "seed", "train_ratio",
            "model.cnn_mults"} <= set(keys)
    assert sorted(set(keys) - set(RANGES)) == []
    assert sorted(set(RANGES) - set(keys)) == []  # no stale entries
    assert all(isinstance(r, Range) for r in RANGES.values())


def test_defaults_and_every_preset_are_in_range():
    for overrides in ({}, {"algo": "dreamerv3_2023"}, {"size": "XS"}, {"size": "size400m"}):
        validate(build_config(overrides))


# the values the issue found accepted (or crashing later), then one bad value per kind of range
BAD = [
    ("optim.lr", "-1", "optim.lr=-1.0 must be > 0"),
    ("model.units", "-1", "model.units=-1 must be >= 1"),
    ("seed", "-1", f"seed=-1 must be in [0, {MAX_SEED}]"),
    ("optim.lr", "nan", "optim.lr=nan must be a finite number > 0"),
    ("optim.eps", "-1", "optim.eps=-1.0 must be > 0"),
    ("optim.warmup", "-5", "optim.warmup=-5 must be >= 0"),
    ("model.hidden", "0", "model.hidden=0 must be >= 1"),
    ("model.head_layers", "-1", "model.head_layers=-1 must be >= 0"),
    ("model.minstd", "5", "model.minstd=5.0 must be < model.maxstd=1.0"),
    ("loss.horizon", "0", "loss.horizon=0.0 must be > 1"),
    ("train_ratio", "nan", "train_ratio=nan must be a finite number > 0"),
    # more
    ("train_ratio", "0", "train_ratio=0.0 must be > 0"),
    ("train_ratio", "inf", "train_ratio=inf must be a finite number > 0"),
    ("optim.lr", "0", "optim.lr=0.0 must be > 0"),
    ("optim.actor_lr", "-inf", "optim.actor_lr=-inf must be a finite number > 0"),
    ("optim.critic_lr", "1e400", "optim.critic_lr=inf must be a finite number > 0"),
    ("optim.encoder_lr", "nan", "optim.encoder_lr=nan must be a finite number"),
    ("optim.ac_eps", "0", "optim.ac_eps=0.0 must be > 0"),
    ("optim.beta1", "1", "optim.beta1=1.0 must be in [0, 1)"),
    ("optim.beta2", "-0.1", "optim.beta2=-0.1 must be in [0, 1)"),
    ("optim.agc", "-0.3", "optim.agc=-0.3 must be >= 0"),
    ("optim.clip", "nan", "optim.clip=nan must be a finite number >= 0"),
    ("optim.ac_clip", "-1", "optim.ac_clip=-1.0 must be >= 0"),
    ("model.minstd", "0", "model.minstd=0.0 must be > 0"),
    ("model.maxstd", "inf", "model.maxstd=inf must be a finite number > 0"),
    ("model.unimix", "1", "model.unimix=1.0 must be in [0, 1)"),
    ("model.actor_outscale", "-0.01", "model.actor_outscale=-0.01 must be >= 0"),
    ("model.mlp_layers", "-1", "model.mlp_layers=-1 must be >= 0"),
    ("model.ac_layers", "-2", "model.ac_layers=-2 must be >= 0"),
    ("model.bins", "1", "model.bins=1 must be >= 2"),
    ("model.cnn_mults", "1,0,4", "model.cnn_mults=(1, 0, 4) must be >= 1"),
    ("model.cnn_mults", "", "model.cnn_mults=() must hold at least one value"),
    ("model.classes", "0", "model.classes=0 must be >= 1"),
    ("loss.horizon", "1", "loss.horizon=1.0 must be > 1"),
    ("loss.horizon", "inf", "loss.horizon=inf must be a finite number > 1"),
    ("loss.lam", "nan", "loss.lam=nan must be a finite number in [0, 1]"),
    ("loss.lam", "1.01", "loss.lam=1.01 must be in [0, 1]"),
    ("loss.rec", "-1", "loss.rec=-1.0 must be >= 0"),
    ("loss.dyn", "nan", "loss.dyn=nan must be a finite number >= 0"),
    ("loss.repval", "-0.3", "loss.repval=-0.3 must be >= 0"),
    ("loss.actent", "-1e-4", "loss.actent=-0.0001 must be >= 0"),
    ("loss.free_nats", "-1", "loss.free_nats=-1.0 must be >= 0"),
    ("loss.slow_rate", "1.5", "loss.slow_rate=1.5 must be in [0, 1]"),
    ("loss.retnorm_rate", "-0.01", "loss.retnorm_rate=-0.01 must be in [0, 1]"),
    ("loss.retnorm_limit", "0", "loss.retnorm_limit=0.0 must be > 0"),
    ("loss.perclo", "-5", "loss.perclo=-5.0 must be in [0, 100]"),
    ("loss.perchi", "101", "loss.perchi=101.0 must be in [0, 100]"),
    ("loss.perclo", "95", "loss.perclo=95.0 must be < loss.perchi=95.0"),
    ("loss.imag_horizon", "0", "loss.imag_horizon=0 must be >= 1"),
    ("seed", "4294967296", f"seed=4294967296 must be in [0, {MAX_SEED}]"),
    ("steps", "-100", "steps=-100 must be >= 1"),
    ("batch_length", "1", "batch_length=1 must be >= 2"),
    ("camera", "-2", "camera=-2 must be >= -1"),
    ("time_limit", "-1", "time_limit=-1 must be >= 0"),
    ("threads", "-1", "threads=-1 must be in [0, 1024]"),
    ("encoder_input_size", "0", "encoder_input_size=0 must be >= 8"),
    ("encoder_token_dim", "0", "encoder_token_dim=0 must be >= 1"),
    ("image_size", "4", "image_size=4 must be >= 8"),
]


@pytest.mark.parametrize("key,value,message", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_out_of_range_value_is_refused_naming_key_and_range(key, value, message):
    with pytest.raises(ConfigError) as err:
        build_config({key: value})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("key,value", [("seed", "nan"), ("steps", "inf"), ("model.deter", "1e400")])
def test_non_finite_int_is_a_type_error(key, value):
    with pytest.raises(ConfigError, match=rf"override {key}='{value}': expected int"):
        build_config({key: value})


def test_every_float_key_refuses_nan_and_infinities():
    floats = [k for k in RANGES if isinstance(_get(Config(), k), float)]
    assert "optim.lr" in floats and "train_ratio" in floats and "loss.repval" in floats
    for key in floats:
        for bad in ("nan", "inf", "-inf"):
            with pytest.raises(ConfigError, match=rf"^{key}=.* must be a finite number"):
                build_config({key: bad})


def test_every_range_is_enforced_just_outside_its_bounds():
    """One value just past each finite bound of every range is refused (generated from the table)."""
    for key, rng in RANGES.items():
        is_int = not isinstance(_get(Config(), key), float)
        for bound, open_, step in ((rng.lo, rng.lo_open, -1), (rng.hi, rng.hi_open, 1)):
            if math.isinf(bound):
                continue
            bad = bound if open_ else bound + step * (1 if is_int else 1e-6)
            text = str(int(bad)) if is_int else repr(float(bad))
            if key == "model.cnn_mults":
                text = f"1,{text}"
            with pytest.raises(ConfigError, match=rf"^{key}="):
                build_config({key: text})


GOOD = [
    {"seed": "0"}, {"seed": str(MAX_SEED)}, {"optim.lr": "1e-30"}, {"optim.beta1": "0", "optim.beta2": "0.999999"},
    {"loss.lam": "0"}, {"loss.lam": "1"}, {"loss.horizon": "1.0001"}, {"model.unimix": "0"},
    {"model.head_layers": "0", "model.ac_layers": "0", "model.mlp_layers": "0"}, {"model.bins": "2"},
    {"model.minstd": "1e-6", "model.maxstd": "1e-5"}, {"loss.perclo": "0", "loss.perchi": "100"},
    {"loss.perclo": "49.9", "loss.perchi": "50"}, {"loss.slow_rate": "0", "loss.retnorm_rate": "1"},
    {"optim.encoder_lr": "-1"}, {"optim.encoder_lr": "0"}, {"optim.warmup": "0", "optim.agc": "0", "optim.clip": "0"},
    {"loss.rec": "0", "loss.rew": "0", "loss.con": "0", "loss.dyn": "0", "loss.rep": "0", "loss.actent": "0",
     "loss.slowreg": "0", "loss.repval": "0", "loss.free_nats": "0"},
    {"model.actor_outscale": "0"}, {"train_ratio": "1e-3"}, {"camera": "-1"}, {"time_limit": "0", "threads": "0"},
    {"prefill": "0", "save_every": "0", "eval_every": "0"}, {"batch_length": "2"}, {"image_size": "8"},
    {"model.cnn_mults": "1"}, {"encoder_input_size": "8"},
]


@pytest.mark.parametrize("overrides", GOOD, ids=[" ".join(f"{k}={v}" for k, v in g.items()) for g in GOOD])
def test_boundary_values_are_accepted(overrides):
    build_config(overrides)


def test_large_int_is_parsed_exactly():
    assert build_config({"steps": str(2**53 + 1)}).steps == 2**53 + 1  # not rounded through float
    assert build_config({"steps": "1e5"}).steps == 100_000


def test_seed_leaves_room_for_the_sub_env_seeds():
    build_config({"seed": str(MAX_SEED - 1), "num_envs": "2"})
    with pytest.raises(ConfigError, match=r"seed \+ num_envs - 1 must be <="):
        build_config({"seed": str(MAX_SEED), "num_envs": "2"})


def test_validate_refuses_a_non_number_set_directly():
    cfg = build_config()
    cfg.optim.lr = None
    with pytest.raises(ConfigError, match=r"optim\.lr=None must be a number > 0"):
        validate(cfg)
    cfg = build_config()
    cfg.loss.horizon = float("nan")
    with pytest.raises(ConfigError, match=r"loss\.horizon=nan"):
        validate(cfg)


@pytest.mark.parametrize("overrides,needle", [
    ({"env": "dmc:nope"}, "unknown env 'dmc:nope'"),
    ({"env": "walker"}, "suite:task"),
    ({"encoder": "resnet"}, "unknown encoder 'resnet'"),
    ({"encoder_mode": "sometimes"}, "unknown encoder_mode 'sometimes'"),
    ({"encoder_mode": "lora:4"}, "encoder cnn supports encoder_mode full or frozen"),
    ({"encoder_path": "/nonexistent/weights"}, "encoder_path='/nonexistent/weights' does not exist"),
])
def test_check_env_encoder_refuses_bad_names(overrides, needle):
    cfg = build_config(overrides)  # names are not validate's job ...
    with pytest.raises(ValueError) as err:  # ConfigError or envs.EnvError (both ValueErrors)
        check_env_encoder(cfg)  # ... but check_env_encoder's, as train's
    assert needle in str(err.value)


def test_check_env_encoder_accepts_good_names(tmp_path):
    check_env_encoder(build_config())
    check_env_encoder(build_config({"env": "dmc:walker_walk", "encoder_mode": "frozen",
                                    "encoder_path": str(tmp_path)}))


def test_cli_config_refuses_nan_with_one_error_line(cli, tmp_path):
    res = cli("config", "optim.lr=nan")
    assert_user_error(res, "optim.lr=nan", "must be a finite number > 0")
    assert res.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("override,needle", [("model.units=-1", "model.units=-1 must be >= 1"),
                                             ("seed=-1", "seed=-1 must be in"),
                                             ("loss.horizon=0", "loss.horizon=0.0 must be > 1")])
def test_cli_config_refuses_out_of_range(cli, override, needle):
    assert_user_error(cli("config", override), needle)


def _get(cfg, key):
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize(("override", "needle"), [
    ("env=dmc:nope", "dmc:nope"),
    ("encoder=resnet", "unknown encoder 'resnet'"),
    ("encoder_path=/nonexistent/weights", "does not exist"),
    ("obs=state env=driving:carracing", "metaworld"),
])
def test_config_command_checks_names_as_train_does(cli, override, needle):
    assert_user_error(cli("config", *override.split()), needle)

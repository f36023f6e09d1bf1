"""Pretrained encoders inside the agent: end-to-end dm_control training with tiny random DINOv2 / CLIP
backbones loaded through the real ``from_pretrained`` path, the frozen-feature cache, and weight merging."""

from __future__ import annotations

import pytest
import torch
from conftest import override

from mbrl.config import build_config
from mbrl.replay import Replay
from mbrl.runs import checkpoint
from mbrl.runs.merge import merge_run, merged_agent

TINY_RUN = ["env=dmc:cartpole_balance", "size=XS", "model.deter=64", "model.hidden=32", "model.units=32",
            "model.blocks=4", "model.stoch=4", "model.classes=4", "model.cnn_depth=4", "model.bins=31",
            "image_size=32", "batch_size=2", "batch_length=8", "train_ratio=16", "prefill=100", "steps=300",
            "time_limit=200", "log_every=100", "save_every=0", "replay_capacity=2000", "wandb_mode=disabled",
            "progress=false", "threads=1"]


@pytest.fixture(scope="module")
def tiny_backbones(tmp_path_factory):
    """Tiny random DINOv2 and CLIP vision models saved with ``save_pretrained`` (no network)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model

    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                             image_size=28, patch_size=14)).save_pretrained(root / "dinov2")
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                     intermediate_size=64, image_size=32, patch_size=16)).save_pretrained(root / "clip")
    return root


def _train(tmp_path, *extra):
    from mbrl.runs.train import train

    old = torch.get_num_threads()
    try:
        return train(build_config(override(TINY_RUN, f"run_dir={tmp_path / 'run'}", *extra)))
    finally:
        torch.set_num_threads(old)


def _backbone_state(agent):
    return {k: v.clone() for k, v in agent.wm.encoder.backbone.state_dict().items()}


@pytest.mark.slow
def test_frozen_dinov2_trains_end_to_end_with_feature_cache(tmp_path, tiny_backbones):
    run = _train(tmp_path, "encoder=dinov2", f"encoder_path={tiny_backbones / 'dinov2'}", "encoder_mode=frozen",
                 "encoder_feature=patch", "encoder_input_size=28")
    state = checkpoint.load_state(run)
    cfg = checkpoint.config_of(state)
    assert state["counters"]["updates"] > 0 and state["counters"]["env_steps"] >= 300
    from mbrl.agent import Agent

    agent = Agent(cfg, state["action_dim"])
    agent.load_state_dict(state["agent"])
    pretrained = agent.wm.encoder.pretrained_state_dict()
    # frozen: the trained backbone is bit-identical to the pretrained weights
    for key, value in agent.wm.encoder.backbone.state_dict().items():
        assert torch.equal(value, pretrained[key]), key
    # the cache holds the backbone features of the stored frames: cached == recomputed (float16 storage)
    assert agent.caches_features
    replay = Replay(cfg.replay_capacity, cfg.num_envs, (32, 32, 3), state["action_dim"],
                    feature_dim=agent.wm.encoder.feature_dim)
    checkpoint.restore(run, state, agent, replay)
    batch = replay.sample(2, 8)
    assert "features" in batch and batch["features"].dtype == torch.float16
    recomputed = agent.encode_features(batch["image"].flatten(0, 1)).view(2, 8, -1)
    torch.testing.assert_close(batch["features"].float(), recomputed, atol=2e-3, rtol=2e-3)
    assert recomputed.abs().max() > 0


@pytest.mark.slow
def test_clip_partial_trains_end_to_end_and_changes_only_last_blocks(tmp_path, tiny_backbones):
    run = _train(tmp_path, "encoder=clip", f"encoder_path={tiny_backbones / 'clip'}", "encoder_mode=partial:2",
                 "encoder_input_size=32", "optim.encoder_lr=1e-3", "optim.warmup=0")
    state = checkpoint.load_state(run)
    from mbrl.agent import Agent

    agent = Agent(checkpoint.config_of(state), state["action_dim"])
    agent.load_state_dict(state["agent"])
    pretrained = agent.wm.encoder.pretrained_state_dict()
    changed = {k for k, v in agent.wm.encoder.backbone.state_dict().items() if not torch.equal(v, pretrained[k])}
    assert changed, "partial fine-tuning changed no backbone weight"
    assert all(".layers.2." in k or ".layers.3." in k or "post_layernorm" in k for k in changed), changed
    assert not any(".layers.0." in k or ".layers.1." in k or "embeddings" in k for k in changed)


@pytest.mark.slow
def test_merge_endpoints_are_bit_exact(tmp_path, tiny_backbones):
    run = _train(tmp_path, "encoder=dinov2", f"encoder_path={tiny_backbones / 'dinov2'}", "encoder_mode=full",
                 "encoder_feature=cls", "encoder_input_size=28", "optim.encoder_lr=1e-3", "optim.warmup=0")
    state = checkpoint.load_state(run)
    from mbrl.agent import Agent

    finetuned = Agent(checkpoint.config_of(state), state["action_dim"])
    finetuned.load_state_dict(state["agent"])
    ft = _backbone_state(finetuned)
    pre = finetuned.wm.encoder.pretrained_state_dict()
    assert any(not torch.equal(ft[k], pre[k]) for k in ft), "full fine-tuning left the backbone unchanged"
    at0, at1, half = (_backbone_state(merged_agent(run, a)) for a in (0.0, 1.0, 0.5))
    for key in ft:
        assert torch.equal(at0[key], pre[key]), key
        assert torch.equal(at1[key], ft[key]), key
        if torch.is_floating_point(ft[key]):
            torch.testing.assert_close(half[key], 0.5 * (pre[key] + ft[key]))
    # merge writes a loadable run; world model and actor-critic are the fine-tuned ones
    out = merge_run(run, 0.0, tmp_path / "merged")
    merged_state = checkpoint.load_state(out)
    for key, value in merged_state["agent"].items():
        if not key.startswith("wm.encoder."):
            assert torch.equal(value, state["agent"][key]), key
    from envs.errors import ConfigError

    with pytest.raises(ConfigError, match="alpha"):
        merged_agent(run, 1.5)


@pytest.mark.slow
def test_merge_needs_a_pretrained_encoder(tmp_path):
    from envs.errors import ConfigError

    run = _train(tmp_path, "steps=220", "prefill=200")
    with pytest.raises(ConfigError, match="pretrained"):
        merged_agent(run, 0.5)


def test_cache_memory_guard():
    from envs.errors import ConfigError
    from mbrl.runs.train import _check_cache_memory

    cfg = build_config(["steps=1e9", "replay_capacity=1e9"])
    with pytest.raises(ConfigError, match="encoder_feature=cls"):
        _check_cache_memory(cfg, 98_304)
    _check_cache_memory(cfg, 0)  # no cache, nothing to check

"""``encoder=random-cnn``: the scratch CNN at its random initialisation, frozen, its features cached; the control
of "does pretraining matter for a frozen encoder?"."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders.registry import build_encoder
from envs.errors import ConfigError
from mbrl.agent import Agent
from mbrl.replay import Replay


def test_frozen_cacheable_and_seeded(tiny_cfg):
    cfg = tiny_cfg(encoder="random-cnn", decoder="features")
    torch.manual_seed(0)
    a = build_encoder("random-cnn", image_size=32, cfg=cfg)
    torch.manual_seed(1)
    b = build_encoder("random-cnn", image_size=32, cfg=cfg)
    assert a.cacheable and a.encoder_parameters() == [] and not any(p.requires_grad for p in a.parameters())
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    feats = a.features(images)
    assert feats.shape == (3, a.feature_dim) and torch.equal(a.head(feats), a(images))
    assert not torch.equal(feats, b.features(images))  # its weights come from the seed


@pytest.mark.parametrize("mode", ["full", "partial:1"])
def test_only_frozen(tiny_cfg, mode):
    with pytest.raises(ConfigError, match="random-cnn"):
        build_encoder("random-cnn", image_size=32, cfg=tiny_cfg(encoder="random-cnn", encoder_mode=mode))


def test_feature_decoder_update_leaves_the_encoder_alone(tiny_cfg, single_thread):
    cfg = tiny_cfg(encoder="random-cnn", decoder="features", batch_size="2", batch_length="8", optim__warmup="0")
    agent = Agent(cfg, 2)
    assert agent.caches_features and agent.wm.feature_decoder is not None
    enc = {k: v.clone() for k, v in agent.wm.encoder.state_dict().items()}
    rng = np.random.default_rng(0)
    replay = Replay(100, 1, (32, 32, 3), 2, seed=0, feature_dim=agent.wm.encoder.feature_dim)
    for t in range(100):
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        feats = agent.encode_features(torch.from_numpy(image[None]))[0].numpy().astype(np.float16)
        replay.add(0, {"image": image, "features": feats, "action": rng.uniform(-1, 1, 2).astype(np.float32),
                       "reward": np.float32(0.1), "is_first": t == 0, "is_terminal": False})
    metrics = agent.train_step(replay.sample(2, 8, "cpu"))
    assert torch.isfinite(metrics["wm/rec_features"])
    assert all(torch.equal(v, agent.wm.encoder.state_dict()[k]) for k, v in enc.items())

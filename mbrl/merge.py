"""Weight merging of a fine-tuned encoder with its pretrained weights (WiSE-FT, Wortsman et al. 2022, Eq. 1;
RETAIN, Yadav et al. 2025): ``theta = (1 - alpha) * theta_pretrained + alpha * theta_finetuned``.

Only the encoder is interpolated; the world model and actor-critic are kept from the fine-tuned run. The
pretrained end point of each part of the encoder:

- backbone weights: the pretrained weights (reloaded from their source with ``pretrained_state_dict()``);
- adapters and LoRA: the identity update they start from (adapter up-projection and LoRA ``B`` at zero);
- the trainable head (token projection): unchanged, it has no pretrained counterpart.

``alpha = 0`` therefore gives the pretrained encoder and ``alpha = 1`` the fine-tuned one, bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import torch

from encoders.finetune import merge_weights
from mbrl import checkpoint, io
from mbrl.agent import Agent
from mbrl.config import model_hash, to_dict
from mbrl.errors import ConfigError


def pretrained_encoder_state(agent: Agent) -> dict[str, torch.Tensor]:
    """The encoder's state dict at its pretrained end point (see the module docstring).

    Raises:
        ConfigError: the encoder has no pretrained weights (``cnn``).
    """
    enc = agent.wm.encoder
    if not hasattr(enc, "pretrained_state_dict"):
        raise ConfigError(f"encoder {agent.cfg.encoder!r} has no pretrained weights to merge with; merging needs a "
                          f"pretrained encoder (dinov2, clip, efficientnet-lite0, hf:...)")
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    for key, value in enc.pretrained_state_dict().items():
        full = f"backbone.{key}"
        if full in state and state[full].shape == value.shape:
            state[full] = value.to(state[full].dtype)
    for key in state:
        if "lora_B" in key or (key.startswith("adapters.") and ".up." in key):
            state[key] = torch.zeros_like(state[key])
    return state


def merged_agent(run_dir: Path | str, alpha: float) -> Agent:
    """Load the run's agent and replace its encoder by the ``alpha`` interpolation.

    Raises:
        CheckpointError: no checkpoint; ConfigError: ``alpha`` outside ``[0, 1]`` or no pretrained encoder.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"--alpha must be in [0, 1], got {alpha}")
    state = checkpoint.load_state(run_dir)
    agent = Agent(checkpoint.config_of(state), state["action_dim"])
    agent.load_state_dict(state["agent"])
    pre = pretrained_encoder_state(agent)
    agent.wm.encoder.load_state_dict(merge_weights(pre, agent.wm.encoder.state_dict(), alpha))
    return agent


def merge_run(run_dir: Path | str, alpha: float, out_dir: Path | str) -> Path:
    """Write a new run directory whose checkpoint holds the merged agent (no replay, no optimiser history
    beyond the fine-tuned run's); returns ``out_dir``.

    Raises:
        ConfigError: ``out_dir`` already holds a checkpoint, or see :func:`merged_agent`.
    """
    out_dir = Path(out_dir)
    if checkpoint.checkpoint_path(out_dir).exists():
        raise ConfigError(f"{str(out_dir)!r} already holds a checkpoint; choose another --out")
    agent = merged_agent(run_dir, alpha)
    counters = dict(checkpoint.load_state(run_dir)["counters"])
    agent.cfg.run_dir = str(out_dir)
    io.write_json(out_dir / "config.json", {"config": to_dict(agent.cfg), "config_hash": model_hash(agent.cfg),
                                            "merged_from": str(run_dir), "alpha": alpha})
    checkpoint.save(out_dir, agent, None, counters)
    return out_dir

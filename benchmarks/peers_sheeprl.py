"""Time sheeprl's DreamerV3 update on synthetic data: the sheeprl side of ``benchmarks/peers.py``.

Runs with sheeprl's own interpreter (``.peers/sheeprl/bin/python``, made by ``python benchmarks/peers.py setup``),
never with dreamshift's: it imports nothing from this repository.

    .peers/sheeprl/bin/python benchmarks/peers_sheeprl.py --size S --precision bf16 --updates 5 --warmup 2 --threads 2

The agent is the one of ``sheeprl exp=dreamer_v3_dmc_walker_walk algo=dreamer_v3_<SIZE>``: the hydra configuration
is composed from the installed package's ``sheeprl/configs`` and converted and checked as ``sheeprl/cli.py`` does
(``dotdict``, ``check_configs``, the metric aggregator's keys, ``Distribution`` argument validation, the float32
matmul precision), with only these overrides:

- ``fabric.accelerator=cpu`` and ``fabric.precision=32-true|bf16-mixed`` (the experiment asks for CUDA and bf16);
- ``algo.per_rank_batch_size=16 algo.per_rank_sequence_length=64 env.screen_size=64`` (already its defaults; set
  so a change of the defaults can't silently change the work).

No logger is made (no ``get_logger``); the metric aggregator stays on, as in a real run (``metric.log_level=1``).

The models, optimisers (hydra-instantiated from ``algo.*.optimizer``, then ``fabric.setup_optimizers``) and
``Moments`` are built as ``sheeprl.algos.dreamer_v3.dreamer_v3.main`` builds them, for walker_walk's 64 x 64 RGB
observations (key ``rgb``, channels first) and 6 continuous actions; the observation space is built by hand, so no
environment is made. Each update is what ``main`` does per gradient step: the soft update of the target critic, then
``train(...)`` (world model, imagination, actor, critic) on one ``[T, B, ...]`` float batch as ``sample_batches``
yields it (keys ``rgb``, ``actions``, ``rewards``, ``terminated``, ``truncated``, ``is_first``). The batch is made
before the timer starts. The first update (which copies the critic into the target) is untimed, then ``--warmup``
untimed ones, then ``--updates`` timed ones.

Prints one JSON line: ``{"impl": "sheeprl", "size", "precision", "s_per_update", "s_per_update_min", "updates",
"first_update_s", "params", "threads", "torch", "sheeprl"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}
ACTION_DIM = 6  # walker_walk
CNN_KEY = "rgb"  # sheeprl.envs.dmc.DMCWrapper's pixel key (exp dreamer_v3_dmc_walker_walk: cnn_keys.encoder [rgb])


def overrides(size: str, precision: str, batch: int, length: int, image_size: int) -> list[str]:
    """The hydra overrides of the timed agent (see the module docstring)."""
    return ["exp=dreamer_v3_dmc_walker_walk", f"algo=dreamer_v3_{size}", "fabric.accelerator=cpu",
            f"fabric.precision={PRECISIONS[precision]}", f"algo.per_rank_batch_size={batch}",
            f"algo.per_rank_sequence_length={length}", f"env.screen_size={image_size}"]


def compose(over: list[str]):
    """sheeprl's configuration for ``over``, composed and converted as ``sheeprl.cli.run`` does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf
    from sheeprl.cli import check_configs
    from sheeprl.utils.utils import dotdict

    with initialize_config_module(config_module="sheeprl.configs", version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=over)
    cfg = dotdict(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "MLFlow is not installed" and the like
        check_configs(cfg)
    return cfg


def synthetic_batch(cfg, generator, image_size: int):
    """One batch as ``sample_batches`` yields it: ``[T, B, ...]`` float32 tensors."""
    import torch

    t, b = cfg.algo.per_rank_sequence_length, cfg.algo.per_rank_batch_size
    g = generator
    zeros = torch.zeros(t, b, 1)
    is_first = zeros.clone()
    is_first[0] = 1.0
    return {
        CNN_KEY: torch.randint(0, 256, (t, b, 3, image_size, image_size), generator=g, dtype=torch.uint8).float(),
        "actions": torch.rand(t, b, ACTION_DIM, generator=g) * 2 - 1,
        "rewards": torch.rand(t, b, 1, generator=g),
        "terminated": zeros.clone(),
        "truncated": zeros.clone(),
        "is_first": is_first,
    }


def measure(args: argparse.Namespace) -> dict:
    import gymnasium as gym
    import hydra
    import numpy as np
    import sheeprl
    import torch
    from lightning.fabric import Fabric
    from sheeprl.algos.dreamer_v3 import utils as dv3_utils
    from sheeprl.algos.dreamer_v3.agent import build_agent
    from sheeprl.algos.dreamer_v3.dreamer_v3 import train
    from sheeprl.algos.dreamer_v3.utils import Moments
    from sheeprl.utils.metric import MetricAggregator
    from sheeprl.utils.timer import timer
    from torch.distributions import Distribution

    torch.set_num_threads(args.threads)
    cfg = compose(overrides(args.size, args.precision, args.batch, args.length, args.image_size))
    # sheeprl.cli.run_algorithm
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    Distribution.set_default_validate_args(cfg.distribution.validate_args)
    timer.disabled = cfg.metric.log_level == 0 or cfg.metric.disable_timer
    for k in set(cfg.metric.aggregator.metrics.keys()) - dv3_utils.AGGREGATOR_KEYS:
        cfg.metric.aggregator.metrics.pop(k, None)
    MetricAggregator.disabled = cfg.metric.log_level == 0 or len(cfg.metric.aggregator.metrics) == 0
    fabric = Fabric(accelerator="cpu", devices=1, precision=PRECISIONS[args.precision])
    fabric.seed_everything(args.seed)
    # sheeprl.algos.dreamer_v3.dreamer_v3.main
    cfg.env.frame_stack = -1
    obs_space = gym.spaces.Dict({CNN_KEY: gym.spaces.Box(0, 255, (3, args.image_size, args.image_size), np.uint8)})
    actions_dim = (ACTION_DIM,)
    start = time.perf_counter()
    world_model, actor, critic, target_critic, _player = build_agent(fabric, actions_dim, True, cfg, obs_space)
    world_optimizer = hydra.utils.instantiate(cfg.algo.world_model.optimizer, params=world_model.parameters(),
                                              _convert_="all")
    actor_optimizer = hydra.utils.instantiate(cfg.algo.actor.optimizer, params=actor.parameters(), _convert_="all")
    critic_optimizer = hydra.utils.instantiate(cfg.algo.critic.optimizer, params=critic.parameters(),
                                               _convert_="all")
    world_optimizer, actor_optimizer, critic_optimizer = fabric.setup_optimizers(
        world_optimizer, actor_optimizer, critic_optimizer)
    moments = Moments(cfg.algo.actor.moments.decay, cfg.algo.actor.moments.max,
                      cfg.algo.actor.moments.percentile.low, cfg.algo.actor.moments.percentile.high)
    aggregator = None
    if not MetricAggregator.disabled:
        aggregator = hydra.utils.instantiate(cfg.metric.aggregator, _convert_="all").to(fabric.device)
    params = sum(p.numel() for m in (world_model, actor, critic) for p in m.parameters())
    generator = torch.Generator().manual_seed(args.seed)
    steps = 0

    def update(batch) -> None:
        nonlocal steps
        if steps % cfg.algo.critic.per_rank_target_network_update_freq == 0:
            tau = 1 if steps == 0 else cfg.algo.critic.tau
            for cp, tcp in zip(critic.module.parameters(), target_critic.parameters(), strict=True):
                tcp.data.copy_(tau * cp.data + (1 - tau) * tcp.data)
        train(fabric, world_model, actor, critic, target_critic, world_optimizer, actor_optimizer,
              critic_optimizer, batch, aggregator, cfg, True, actions_dim, moments)
        steps += 1

    update(synthetic_batch(cfg, generator, args.image_size))
    first = time.perf_counter() - start
    for _ in range(args.warmup):
        update(synthetic_batch(cfg, generator, args.image_size))
    times = []
    for _ in range(args.updates):
        batch = synthetic_batch(cfg, generator, args.image_size)
        t0 = time.perf_counter()
        update(batch)
        times.append(time.perf_counter() - t0)
    if aggregator is not None:
        loss = aggregator.compute().get("Loss/world_model_loss")
        loss = float(loss) if loss is not None else float("nan")
    else:
        loss = float("nan")
    return {"impl": "sheeprl", "size": args.size, "precision": args.precision,
            "s_per_update": float(np.mean(times)), "s_per_update_min": float(np.min(times)),
            "updates": args.updates, "first_update_s": first, "params": int(params), "wm_loss": loss,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "sheeprl": sheeprl.__version__}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="S", choices=("XS", "S", "M", "L", "XL"))
    p.add_argument("--precision", default="fp32", choices=tuple(PRECISIONS))
    p.add_argument("--updates", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=5)  # exp=dreamer_v3_dmc_walker_walk's seed
    args = p.parse_args(argv)
    if args.updates < 1 or args.warmup < 0 or args.threads < 1:
        sys.exit("error: --updates and --threads must be >= 1 and --warmup >= 0")
    print(json.dumps(measure(args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

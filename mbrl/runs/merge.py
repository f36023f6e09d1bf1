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
from envs import files
from envs.errors import ConfigError
from mbrl.agent import Agent
from mbrl.config import model_hash, to_dict
from mbrl.runs import checkpoint


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


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"--alpha must be in [0, 1], got {alpha}")


def merged_agent(run: Path | str | checkpoint.LoadedRun, alpha: float) -> Agent:
    """The run's agent with its encoder replaced by the ``alpha`` interpolation, on the CPU.

    Args:
        run: a run directory, or a run already loaded (:func:`mbrl.runs.checkpoint.load_run`, agent on the CPU),
            whose agent is then merged in place.

    Raises:
        CheckpointError: no checkpoint; ConfigError: ``alpha`` outside ``[0, 1]`` or no pretrained encoder.
    """
    _check_alpha(alpha)
    if not isinstance(run, checkpoint.LoadedRun):
        run = checkpoint.load_run(run)
    agent = run.agent if run.agent is not None else run.build_agent()
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
    _check_alpha(alpha)
    run = checkpoint.load_run(run_dir)
    agent = merged_agent(run, alpha)
    counters = dict(run.counters)
    agent.cfg.run_dir = str(out_dir)
    files.write_json(out_dir / "config.json", {"config": to_dict(agent.cfg), "config_hash": model_hash(agent.cfg),
                                            "merged_from": str(run_dir), "alpha": alpha})
    checkpoint.save(out_dir, agent, None, counters)
    return out_dir


# --- Merging two whole agents (RETAIN, Yadav et al. 2025): a base run and a run adapted from it ---

#: Parts of an agent with their own merge coefficient; ``module_of`` maps every state-dict key to one.
MODULES = ("encoder", "world_model", "actor_critic")
# Config keys that fix the shapes and meaning of the weights; two runs can be merged only if they agree.
_ARCH_KEYS = ("env", "encoder", "encoder_mode", "encoder_feature", "encoder_path", "encoder_input_size",
              "encoder_token_dim", "encoder_adapter_dim", "image_size", "model")


def module_of(key: str) -> str:
    """The module (:data:`MODULES`) of an :class:`~mbrl.agent.Agent` state-dict key: ``wm.encoder.*`` ->
    ``encoder``, other ``wm.*`` (RSSM, decoder, reward and continue heads) -> ``world_model``, ``ac.*`` (actor,
    critic, slow critic, return normaliser) -> ``actor_critic``.

    Raises:
        ValueError: a key outside these prefixes.
    """
    if key.startswith("wm.encoder."):
        return "encoder"
    if key.startswith("wm."):
        return "world_model"
    if key.startswith("ac."):
        return "actor_critic"
    raise ValueError(f"state-dict key {key!r} belongs to no merge module ({', '.join(MODULES)})")


def parse_alpha(text: str | float | dict[str, float]) -> dict[str, float]:
    """``"0.5"`` (or ``0.5``) -> the same alpha for every module; ``"encoder=0.2,world_model=1"`` (or a dict) ->
    per module, modules not named keep ``1.0`` (the adapted weights).

    Returns:
        ``{module: alpha}`` for every module of :data:`MODULES`.

    Raises:
        ConfigError: an unknown module, a value that is not a number, a module given twice, or an alpha outside
            ``[0, 1]``.
    """
    if isinstance(text, dict):
        unknown = sorted(set(text) - set(MODULES))
        if unknown:
            raise ConfigError(f"unknown merge module(s) {', '.join(unknown)}; modules: {', '.join(MODULES)}")
        values = {m: float(text.get(m, 1.0)) for m in MODULES}
    elif isinstance(text, int | float):
        values = {m: float(text) for m in MODULES}
    else:
        text = text.strip()
        values = {}
        if "=" not in text:
            try:
                values = {m: float(text) for m in MODULES}
            except ValueError:
                raise ConfigError(f"--alpha {text!r}: expected a number in [0, 1] or "
                                  f"MODULE=A,... with modules {', '.join(MODULES)}") from None
        else:
            values = {m: 1.0 for m in MODULES}
            seen: set[str] = set()
            for item in (t.strip() for t in text.split(",") if t.strip()):
                name, sep, raw = item.partition("=")
                name = name.strip()
                if not sep or name not in MODULES:
                    raise ConfigError(f"--alpha item {item!r}: expected MODULE=A with MODULE one of "
                                      f"{', '.join(MODULES)}")
                if name in seen:
                    raise ConfigError(f"--alpha names module {name!r} twice")
                seen.add(name)
                try:
                    values[name] = float(raw)
                except ValueError:
                    raise ConfigError(f"--alpha {item!r}: {raw!r} is not a number") from None
    for name, a in values.items():
        if not 0.0 <= a <= 1.0:  # also rejects NaN
            raise ConfigError(f"--alpha for {name} must be in [0, 1], got {a}")
    return values


def format_alpha(alphas: dict[str, float]) -> str:
    """``"0.5"`` when every module has the same alpha, else ``"encoder=0.2,world_model=1,actor_critic=1"``."""
    if len(set(alphas.values())) == 1:
        return f"{next(iter(alphas.values())):g}"
    return ",".join(f"{m}={alphas[m]:g}" for m in MODULES)


@torch.no_grad()
def merge_agent_states(base: dict[str, torch.Tensor], adapted: dict[str, torch.Tensor],
                       alphas: dict[str, float]) -> dict[str, torch.Tensor]:
    """Per-module interpolation ``theta = (1 - alpha_m) * theta_base + alpha_m * theta_adapted`` of two agent
    state dicts (RETAIN, Yadav et al. 2025, Eq. 2 with one alpha per module; WiSE-FT, Wortsman et al. 2022,
    Eq. 1 when all alphas are equal).

    ``alpha_m = 0`` copies the base tensors and ``alpha_m = 1`` the adapted ones bit for bit; non-float tensors
    (flags) come from the adapted state unless ``alpha_m = 0``.

    Args:
        base, adapted: :meth:`Agent.state_dict` outputs with the same keys and shapes.
        alphas: ``{module: alpha}`` for every module of :data:`MODULES` (see :func:`parse_alpha`).

    Raises:
        ConfigError: different keys or shapes (the runs have different model configurations).
    """
    if base.keys() != adapted.keys():
        diff = sorted(set(base) ^ set(adapted))
        raise ConfigError(f"cannot merge agents with different parameters: {', '.join(diff[:5])}")
    out = {}
    for key, ad in adapted.items():
        b = base[key]
        if b.shape != ad.shape:
            raise ConfigError(f"cannot merge {key}: shapes {tuple(b.shape)} vs {tuple(ad.shape)}")
        a = alphas[module_of(key)]
        if a == 0.0:
            out[key] = b.clone()
        elif a == 1.0 or not torch.is_floating_point(ad):
            out[key] = ad.clone()
        else:
            out[key] = torch.lerp(b, ad.to(b.dtype), a)
    return out


def check_mergeable(base: checkpoint.LoadedRun, adapted: checkpoint.LoadedRun, base_name: str = "BASE",
                    adapted_name: str = "ADAPTED") -> None:
    """Refuse to merge runs whose model configurations differ.

    Args:
        base, adapted: loaded runs (:func:`mbrl.runs.checkpoint.load_run`).

    Raises:
        ConfigError: the configs differ in a key that fixes the weights' shapes or meaning (env, encoder,
            encoder settings, image size, ``model.*``) or in the action dimension; the message names them.
    """
    a, b = to_dict(base.config), to_dict(adapted.config)
    diff = []
    for key in _ARCH_KEYS:
        if isinstance(a.get(key), dict):
            diff += [f"{key}.{k} ({a[key][k]!r} vs {b.get(key, {}).get(k)!r})" for k in a[key]
                     if a[key][k] != b.get(key, {}).get(k)]
        elif a.get(key) != b.get(key):
            diff.append(f"{key} ({a.get(key)!r} vs {b.get(key)!r})")
    if base.action_dim != adapted.action_dim:
        diff.append(f"action_dim ({base.action_dim} vs {adapted.action_dim})")
    if diff:
        raise ConfigError(f"cannot merge {base_name} and {adapted_name}: their model configs differ in "
                          f"{', '.join(diff[:5])}")


def check_adapted_from(base: checkpoint.LoadedRun, adapted: checkpoint.LoadedRun, base_name: str = "BASE",
                       adapted_name: str = "ADAPTED") -> None:
    """Refuse to merge an adapted run (:mod:`mbrl.runs.adapt`: ``adapted_from`` in its ``config.json``) with a BASE it
    was not adapted from: BASE must be a stage of its lineage (the run it was adapted from, or an earlier one),
    at the checkpoint it was adapted from. A stage is recognised by its ``checkpoint`` (the weights file name,
    new at every save, so a moved or copied run still matches and one trained on since does not); stages written
    before lineages recorded it, by the run directory and its env steps. Runs without ``adapted_from`` (two runs
    merged by hand) are not checked.

    Raises:
        ConfigError: one line naming the lineage and what to give as BASE.
    """
    meta = adapted.meta
    if "adapted_from" not in meta:
        return
    stages = [s for s in meta.get("lineage", []) if isinstance(s, dict) and "run" in s] or \
        [{"run": str(meta["adapted_from"])}]
    mine = checkpoint.read_doc(base.run_dir)["weights_file"]
    here = _resolved(base.run_dir)
    moved_on = None
    for stage in stages:
        same_dir = _resolved(stage["run"]) == here
        if stage.get("checkpoint"):
            if stage["checkpoint"] == mine:
                return
        elif same_dir and stage.get("env_steps", base.env_steps) == base.env_steps:
            return
        if same_dir:
            moved_on = stage
    runs = " <- ".join(repr(str(s["run"])) for s in reversed(stages))
    if moved_on is not None:
        raise ConfigError(f"cannot merge {base_name} and {adapted_name}: {adapted_name} was adapted from "
                          f"{base_name} at {moved_on.get('env_steps', '?')} env steps (checkpoint "
                          f"{moved_on.get('checkpoint', '?')}), but {base_name} holds another checkpoint now "
                          f"({base.env_steps} env steps, {mine}): it was trained on since; merge with a copy of the "
                          f"run as it was adapted from")
    raise ConfigError(f"cannot merge {base_name} and {adapted_name}: {adapted_name} was not adapted from "
                      f"{base_name} (its lineage: {runs}); merging unrelated weights gives a meaningless agent: give "
                      f"the run it was adapted from ({str(meta['adapted_from'])!r}) as BASE")


def _resolved(path: Path | str) -> str:
    """``path`` made absolute with symbolic links resolved, for comparing run directories (as given if that
    fails)."""
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):
        return str(path)


def merged_agents(base_run: Path | str, adapted_run: Path | str, alphas: dict[str, float] | str | float) -> Agent:
    """The agent ``(1 - alpha_m) * base + alpha_m * adapted`` per module, with the adapted run's config (so it
    is evaluated where the adapted run acts).

    Raises:
        CheckpointError: a run without checkpoint. ConfigError: bad alpha, incompatible configs, or an adapted
            run merged with a BASE it was not adapted from (:func:`check_adapted_from`).
    """
    alphas = parse_alpha(alphas)
    base = checkpoint.load_run(base_run, agent=False)
    return _merged(base, checkpoint.load_run(adapted_run, agent=False), alphas)


def _merged(base: checkpoint.LoadedRun, adapted: checkpoint.LoadedRun, alphas: dict[str, float],
            device: str = "cpu") -> Agent:
    """The per-module merge of two loaded runs as a new agent of ``adapted``'s config on ``device``."""
    check_mergeable(base, adapted, str(base.run_dir), str(adapted.run_dir))
    check_adapted_from(base, adapted, str(base.run_dir), str(adapted.run_dir))
    return adapted.build_agent(merge_agent_states(base.weights, adapted.weights, alphas), device)


def merge_runs(base_run: Path | str, adapted_run: Path | str, alphas: dict[str, float] | str | float,
               out_dir: Path | str) -> Path:
    """Write a run directory holding the per-module merge of two runs (config.json with ``merged_from``,
    ``alpha``; checkpoint without replay); returns ``out_dir``. Everything is checked before anything is
    written; each file is written atomically.

    Raises:
        ConfigError: ``out_dir`` already exists and is not empty, bad alpha, incompatible configs, a BASE the
            adapted run was not adapted from (:func:`check_adapted_from`).
        CheckpointError: a run without checkpoint.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{str(out_dir)!r} already exists and is not empty; choose another --out")
    alphas = parse_alpha(alphas)
    base = checkpoint.load_run(base_run, agent=False)
    adapted = checkpoint.load_run(adapted_run, agent=False)
    agent = _merged(base, adapted, alphas)
    meta = adapted.meta
    agent.cfg.run_dir = str(out_dir)
    # the adapted run's lineage (mbrl.runs.adapt), so the merged run is evaluated and continued like it
    extra = {k: meta[k] for k in ("adapted_from", "target", "conditions", "lineage", "base_env_steps",
                                  "lineage_target_env_steps", "mix", "lr_scale", "shift_seed", "replay_sources")
             if k in meta}
    files.write_json(out_dir / "config.json", {"config": to_dict(agent.cfg), "config_hash": model_hash(agent.cfg),
                                            **extra, "merged_from": [str(base_run), str(adapted_run)],
                                            "alpha": alphas})
    checkpoint.save(out_dir, agent, None, dict(adapted.counters))
    return out_dir

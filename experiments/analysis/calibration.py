"""Severity calibration: how far each ``(env, shift kind, severity)`` moves the frames, measured on the same
physical states, so that severities can be compared across kinds and envs (a ``fog:3`` and a ``color:3`` are
not the same amount of change).

Protocol. Per env, ``episodes`` episodes (episode ``i`` reset with seed ``seed + i``) are played with a fixed
random action sequence (uniform in ``[-1, 1]``, ``numpy.random.default_rng(seed)``), keeping a frame every
``stride`` agent steps from the reset frame on (``frames`` in all). Each condition replays exactly the same
seeds and actions in the same env wrapped by :class:`shifts.base.ShiftWrapper` (shift seed ``seed``): shifts
never change physics, so frame ``j`` shows the same state clean and shifted (checked: ``state_diff``, the
largest ``|qpos|``/``|qvel|`` difference at the kept frames, is reported and is 0 for MuJoCo envs). Every kind
is measured at severity 0 too (the clean env through the wrapper: all distances 0, which also checks that the
previous kind's :meth:`~shifts.base.Shift.remove` restored the scene).

Distances per frame pair (clean ``a``, shifted ``b``, ``(H, W, 3) uint8``), averaged over the frames:

- ``ssim_distance`` = 1 - SSIM (Wang et al. 2004, Eq. 13; ``skimage.metrics.structural_similarity`` with its
  defaults: 7x7 uniform window (smaller for images under 7 px), ``data_range=255``, mean over channels):
  0 identical, up to 2 (SSIM can be negative).
- ``rmse``: root mean squared pixel difference in intensity units (0-255).
- ``l2``: Euclidean norm of the whole difference image in ``[0, 1]`` units (grows with the image size:
  ``l2 = rmse / 255 * sqrt(3 H W)``).
- ``feature_distance``: 1 - cosine similarity of the pooled features of a fixed reference encoder, the frozen
  ImageNet ``efficientnet-lite0`` (offline weights; global average pool of its 1280-channel head, input
  ``reference_input_size``): an encoder-independent yardstick of *semantic* change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

import envs
from encoders.efficientnet import EfficientNetLiteEncoder
from encoders.finetune import FinetuneMode
from envs.driver import Driver, Episode, Step
from envs.errors import ConfigError
from experiments.analysis.forgetting import pooled_features
from shifts.base import ShiftWrapper, make_shift
from shifts.suites import for_env, parse_suite

REFERENCE_ENCODER = "efficientnet-lite0"
CSV_COLUMNS = ["env", "kind", "level", "severity", "n", "ssim_distance", "ssim_distance_std", "rmse", "rmse_std",
               "l2", "feature_distance", "feature_distance_std", "state_diff"]
METRICS = ("ssim_distance", "rmse", "l2", "feature_distance")


def frame_distances(clean: np.ndarray, shifted: np.ndarray) -> dict[str, np.ndarray]:
    """Pixel distances of aligned frames.

    Args:
        clean, shifted: ``(N, H, W, 3)`` uint8.

    Returns:
        ``{"ssim_distance", "rmse", "l2"}``, each ``(N,)`` float64 (definitions in the module docstring).

    Raises:
        ValueError: shapes differ.
    """
    from skimage.metrics import structural_similarity

    if clean.shape != shifted.shape:
        raise ValueError(f"frame shapes differ: {clean.shape} vs {shifted.shape}")
    a, b = clean.astype(np.float64), shifted.astype(np.float64)
    diff = (a - b).reshape(len(a), -1)
    rmse = np.sqrt((diff ** 2).mean(1))
    l2 = np.linalg.norm(diff / 255.0, axis=1)
    win = min(7, min(clean.shape[1:3]) // 2 * 2 - 1)  # odd, <= the image side
    ssim = np.array([structural_similarity(x, y, channel_axis=-1, data_range=255, win_size=win)
                     for x, y in zip(clean, shifted, strict=True)])
    return {"ssim_distance": 1.0 - ssim, "rmse": rmse, "l2": l2}


def reference_encoder(input_size: int = 224) -> Any:
    """The frozen ImageNet ``efficientnet-lite0`` reference encoder (eval mode, no gradients).

    Raises:
        ConfigError: its weight package is not installed.
    """
    enc = EfficientNetLiteEncoder(FinetuneMode("frozen"), "mean", input_size)
    enc.requires_grad_(False)
    return enc.eval()


def feature_distance(encoder: Any, clean: np.ndarray, shifted: np.ndarray, clean_features: Any = None,
                     ) -> np.ndarray:
    """``(N,)`` 1 - cosine similarity of ``encoder``'s pooled features of ``(N, H, W, 3)`` uint8 frame pairs.
    ``clean_features``: the clean frames' pooled features when already computed (one env, many conditions)."""
    import torch


    fa = (pooled_features(encoder, clean) if clean_features is None else clean_features).double()
    fb = pooled_features(encoder, shifted).double()
    return (1.0 - torch.nn.functional.cosine_similarity(fa, fb, dim=1)).clamp_min(0.0).numpy()


def _state(env: Any) -> np.ndarray | None:
    physics = getattr(env.unwrapped, "physics", None)
    if physics is None:
        return None
    return np.concatenate([np.asarray(physics.data.qpos), np.asarray(physics.data.qvel)]).copy()


def rollout(env: Any, actions: list[np.ndarray], seed: int, stride: int,
            per_episode: int) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Frames (and physics states) of a replayed rollout.

    Args:
        env: the (possibly shift-wrapped) env.
        actions: per episode, ``(steps, A)`` actions; episode ``i`` is reset with seed ``seed + i``.
        stride: agent steps between kept frames; per_episode: frames kept per episode.

    Returns:
        ``((N, H, W, 3) uint8 frames, [state at each kept frame])``.
    """

    frames, states = [], []

    def keep(image: np.ndarray, t: int) -> None:  # the simulator shows this frame: its state is read here
        if t % stride == 0:
            frames.append(image)
            states.append(_state(env))

    def on_step(step: Step) -> None:
        keep(step.obs["image"][0], int(step.t[0]))

    def on_episode(episode: Episode) -> None:
        if episode.record["cut"]:  # the last kept frame is the observation after the last step
            keep(episode.last_obs["image"], episode.record["steps"])

    for i, acts in enumerate(actions):
        replayed = iter(acts)
        driver = Driver(env, lambda obs, is_first, it=replayed: (next(it)[None], {}), on_step=[on_step],
                        on_episode=[on_episode])
        driver.episode(seed + i, max_steps=(per_episode - 1) * stride)
    return np.stack(frames), states


def calibrate(env_names: list[str], suite: str = "standard", *, frames: int = 16, episodes: int = 2,
              stride: int = 4, size: int = 64, seed: int = 0, reference: bool = True, reference_input_size: int = 224,
              progress: Callable[[str], None] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Measure every ``(env, kind, severity)`` of ``suite`` (severity 0 added per kind).

    Args:
        env_names: envs (``suite:task``); suite: a suite name or ``KIND[:SEVERITIES],...`` list.
        frames: frames per condition, split over ``episodes`` (``ceil(frames / episodes)`` per episode).
        stride: agent steps between kept frames; size: image side (pixels).
        reference: also compute ``feature_distance`` with the reference encoder.
        progress: called with one line per finished condition.

    Returns:
        ``(summary, records)``: ``summary["rows"]`` has one row per condition (:data:`CSV_COLUMNS`);
        ``records`` one per ``(condition, metric)``.

    Raises:
        ShiftError: unknown suite/kind, a kind that does not apply to an env (non-``standard`` suites).
        ConfigError: ``frames``, ``episodes`` or ``stride`` < 1; missing reference weights.
        EnvError: unknown env.
    """
    if frames < 1 or episodes < 1 or stride < 1:
        raise ConfigError(f"--frames, --episodes and --stride must be >= 1, got {frames}, {episodes}, {stride}")
    name, conditions = parse_suite(suite)
    per_env = {e: for_env(name, conditions, e) for e in env_names}  # fail before rendering anything
    encoder = reference_encoder(reference_input_size) if reference else None
    episodes = min(episodes, frames)
    per_episode = -(-frames // episodes)
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    t0 = time.time()
    for env_name in env_names:
        kinds: dict[str, list[int]] = {}
        for kind, severity in per_env[env_name]:
            if kind != "none":
                kinds.setdefault(kind, [0]).append(severity)
        env = envs.make_env(env_name, size=size, seed=seed)
        try:
            rng = np.random.default_rng(seed)
            shape = env.action_space.shape
            actions = [rng.uniform(-1.0, 1.0, (per_episode * stride, *shape)) for _ in range(episodes)]
            clean, clean_states = rollout(env, actions, seed, stride, per_episode)
            clean_features = None
            if encoder is not None:
                clean_features = pooled_features(encoder, clean)  # once per env, not per condition
            for kind, severities in kinds.items():
                level = make_shift(kind, 0).level
                for severity in sorted(set(severities)):
                    wrapped = ShiftWrapper(env, [make_shift(kind, severity, seed)])
                    try:
                        shifted, states = rollout(wrapped, actions, seed, stride, per_episode)
                    finally:
                        wrapped.remove_shifts()
                    dist = frame_distances(clean, shifted)
                    if encoder is not None:
                        dist["feature_distance"] = feature_distance(encoder, clean, shifted, clean_features)
                    diffs = [float(np.abs(a - b).max()) for a, b in zip(clean_states, states, strict=True)
                             if a is not None and b is not None]
                    row: dict[str, Any] = {"env": env_name, "kind": kind, "level": level, "severity": severity,
                                           "n": len(clean), "state_diff": max(diffs) if diffs else None}
                    for metric in METRICS:
                        values = dist.get(metric)
                        row[metric] = None if values is None else float(values.mean())
                        if metric != "l2":
                            row[f"{metric}_std"] = None if values is None else float(values.std())
                        if values is not None:
                            records.append({"analysis": "calibration", "env": env_name, "encoder": None,
                                            "encoder_mode": None, "config_hash": None, "kind": kind,
                                            "level": level, "severity": severity, "metric": metric,
                                            "value": float(values.mean()), "n": len(values),
                                            "reference": REFERENCE_ENCODER if metric == "feature_distance" else None})
                    rows.append(row)
                    if progress is not None:
                        progress(f"{env_name} {kind}:{severity} 1-SSIM {row['ssim_distance']:.3f} "
                                 f"RMSE {row['rmse']:.1f} feat {row['feature_distance'] or 0:.3f} "
                                 f"({time.time() - t0:.0f} s)")
        finally:
            env.close()
    summary = {"analysis": "calibration", "suite": name, "envs": list(env_names), "frames": frames,
               "episodes": episodes, "stride": stride, "size": size, "seed": seed,
               "reference_encoder": REFERENCE_ENCODER if reference else None,
               "reference_input_size": reference_input_size if reference else None, "rows": rows}
    return summary, records


def format_calibration(rows: list[dict[str, Any]], metric: str = "ssim_distance") -> str:
    """Text table: one line per (env, kind), one column per severity, cells = ``metric``."""
    severities = sorted({r["severity"] for r in rows})
    keys = list(dict.fromkeys((r["env"], r["kind"]) for r in rows))
    cell = {(r["env"], r["kind"], r["severity"]): r.get(metric) for r in rows}
    width = max([len("env kind")] + [len(f"{e} {k}") for e, k in keys])
    lines = [f"{metric}:", f"{'env kind':<{width}}  " + "  ".join(f"{'sev ' + str(s):>7}" for s in severities)]
    for e, k in keys:
        vals = [cell.get((e, k, s)) for s in severities]
        lines.append(f"{e + ' ' + k:<{width}}  " + "  ".join("      -" if v is None else f"{v:7.3f}" for v in vals))
    return "\n".join(lines)

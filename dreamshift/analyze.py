"""``dreamshift analyze``: analyses that explain why an encoder mode is (or is not) robust.

    dreamshift analyze jaccard     RUN_DIR | encoder=NAME [key=value ...]  [--env E] [--frames 16] [--mass 0.6]
    dreamshift analyze forgetting  RUN_DIR | encoder=NAME ...  [--dataset DIR|hf:NAME] [--k 5]
    dreamshift analyze drift       RUN_DIR | encoder=NAME ...  [--env E] [--frames 32]
    dreamshift analyze calibration [RUN_DIR] [--env E1,E2] [--suite standard] [--frames 16] [--no-reference]
    dreamshift analyze wm          RUN_DIR [--suite quick] [--episodes 2] [--max-steps 100] [--device cpu]

Every analysis takes ``--threads N`` (torch CPU threads; default: the run's ``threads`` setting).

Each writes ``<analysis>.json`` (summary + records) and ``<analysis>.jsonl`` (one measurement a line: analysis,
env, encoder, encoder_mode, metric, value, n, config_hash, and what locates it) atomically into
``RUN_DIR/analysis/`` (without a run: ``./analysis/``), or ``--out DIR``; ``jaccard`` also writes
``jaccard.png`` (or ``--png PATH``), ``calibration`` also ``calibration.csv``.

With RUN_DIR the encoders compared are the run's pretrained end point
(:func:`mbrl.runs.merge.pretrained_encoder_state`), its fine-tuned encoder, and a random-init control; without a
run, ``encoder=NAME`` (plus any ``dreamshift train`` settings, e.g. ``encoder_input_size=224 encoder_path=DIR``)
builds the pretrained encoder, compared with its random-init control. See :mod:`experiments.analysis`
(calibration: :mod:`experiments.analysis.calibration`,
world-model errors: :mod:`experiments.analysis.diagnostics`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dreamshift.common import add_threads, check_device
from envs import files
from envs.errors import ConfigError
from experiments.analysis.attention import require_vit
from experiments.analysis.calibration import CSV_COLUMNS, calibrate, format_calibration
from experiments.analysis.diagnostics import diagnose
from experiments.analysis.drift import cka_by_layer, layer_features
from experiments.analysis.forgetting import knn_forgetting, load_images
from experiments.analysis.frames import collect_frames
from experiments.analysis.jaccard import attention_jaccard, overlay_png
from experiments.analysis.report import record, write_csv, write_report
from experiments.analysis.sources import from_run, from_settings
from mbrl.config import parse_overrides
from mbrl.runs import checkpoint
from mbrl.runs.checkpoint import checkpoint_path

ANALYSES = {
    "jaccard": "CLS-attention mask vs ground-truth foreground mask (Jaccard), ViT encoders",
    "forgetting": "k-NN accuracy of pooled features on a labelled image set, pretrained vs fine-tuned",
    "drift": "linear CKA per block between pretrained and fine-tuned features on env frames",
    "calibration": "encoder-independent distance of each shift severity (1-SSIM, RMSE, reference features)",
    "wm": "world-model reconstruction, reward and posterior-prior KL errors under each shift",
}
ROLE_ORDER = ("pretrained", "finetuned", "random")
# What each analysis reads (the message of `dreamshift analyze` without an analysis).
REQUIRES = ("jaccard, forgetting and drift take RUN_DIR or encoder=NAME, calibration an optional RUN_DIR, "
            "wm a RUN_DIR")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``analyze`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    p = sub.add_parser("analyze", help="encoder and world-model analyses (jaccard, forgetting, drift, calibration, "
                       "wm)", description="\n".join(f"{k}: {v}" for k, v in ANALYSES.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("analysis", nargs="?", help=f"one of: {', '.join(ANALYSES)}")
    p.add_argument("targets", nargs="*", default=[], metavar="RUN_DIR|key=value",
                   help="a trained run directory, or encoder=NAME and other train settings (no run)")
    p.add_argument("--out", help="output directory (default RUN_DIR/analysis, or ./analysis without a run)")
    p.add_argument("--env", help="env(s) whose frames are used (calibration: comma-separated list); default: the "
                   "run's env (calibration without a run: dmc:cartpole_balance,dmc:walker_walk)")
    p.add_argument("--frames", type=int, default=0, help="frames (default: jaccard 16, drift 32, calibration 16)")
    p.add_argument("--size", type=int, default=0, help="frame side in pixels (default: the run's image_size)")
    p.add_argument("--stride", type=int, default=5, help="agent steps between kept frames (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mass", type=float, default=0.6, help="jaccard: attention mass kept (DINO threshold, 0.6)")
    p.add_argument("--png", help="jaccard: overlay PNG path (default OUT/jaccard.png)")
    p.add_argument("--png-frame", type=int, default=0, help="jaccard: which frame the PNG shows (default 0)")
    p.add_argument("--dataset", help="forgetting: ImageFolder directory or hf:<datasets name> (default: frames of "
                   "8 dm_control tasks labelled by task)")
    p.add_argument("--k", type=int, default=5, help="forgetting: neighbours of the k-NN classifier (default 5)")
    p.add_argument("--suite", help="calibration (default standard) / wm (default quick): suite or KIND:SEV list")
    p.add_argument("--episodes", type=int, default=2, help="calibration / wm: episodes per condition (default 2)")
    p.add_argument("--max-steps", type=int, default=100, help="wm: agent steps per episode at most (default 100)")
    p.add_argument("--no-reference", action="store_true", help="calibration: skip the reference-encoder distance")
    p.add_argument("--reference-size", type=int, default=224, help="calibration: reference encoder input side")
    p.add_argument("--device", default="cpu", help="wm: cpu | cuda | auto")
    add_threads(p)
    p.set_defaults(handler=handle)


def _split_targets(targets: list[str]) -> tuple[Path | None, dict[str, str]]:
    """``RUN_DIR`` (at most one argument without ``=``) and ``key=value`` settings."""

    runs = [t for t in targets if "=" not in t]
    if len(runs) > 1:
        raise ConfigError(f"at most one RUN_DIR, got {runs}")
    overrides = parse_overrides([t for t in targets if "=" in t])
    run = Path(runs[0]) if runs else None
    if run is not None:

        if not run.exists():
            raise ConfigError(f"run directory {str(run)!r} does not exist; pass a trained run or encoder=NAME")
        files.check_run_dir(run)  # a file: say so
        if not checkpoint_path(run).is_file():
            raise ConfigError(f"run directory {str(run)!r} has no checkpoint; train it first")
        if overrides:
            raise ConfigError(f"settings {', '.join(overrides)} apply only without RUN_DIR (the run's config is used)")
    return run, overrides


def _encoders(analysis: str, run: Path | None, overrides: dict[str, str], seed: int) -> Any:

    if run is not None:
        return from_run(run, analysis, with_random=True, seed=seed)
    return from_settings(overrides, analysis, seed=seed)


def _roles(encoders: dict[str, Any]) -> list[str]:
    return [r for r in ROLE_ORDER if r in encoders]


def _set_threads(cfg: Any, threads: int | None = None) -> None:
    """torch CPU threads: ``threads`` (``--threads``) if given, else the run's ``threads`` setting."""
    threads = threads or getattr(cfg, "threads", 0)
    if threads:
        import torch

        torch.set_num_threads(threads)


def run_jaccard(eset: Any, env: str, frames: int, size: int, seed: int, stride: int, mass: float, png: Path,
                png_frame: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Jaccard of each encoder's thresholded CLS attention with the foreground (:mod:`experiments.analysis.jaccard`)
    on ``frames`` frames of ``env``, and the overlay PNG of frame ``png_frame``.

    Raises:
        ConfigError: a non-ViT encoder, ``mass`` outside (0, 1], ``png_frame`` out of range, an env without
            segmentation.
    """

    require_vit(eset.encoders["pretrained"], eset.cfg.encoder)
    if not 0.0 < mass <= 1.0:
        raise ConfigError(f"--mass must be in (0, 1] (DINO uses 0.6), got {mass}")
    if not 0 <= png_frame < frames:
        raise ConfigError(f"--png-frame must be in [0, {frames}), got {png_frame}")
    data = collect_frames(env, frames, size=size, seed=seed, stride=stride, segmentation=True)
    base = {**eset.base, "env": env}
    results, records, rows = {}, [], []
    fg_fraction = float(data.masks.mean())
    for role in _roles(eset.encoders):
        res = attention_jaccard(eset.encoders[role], data.images, data.masks, mass)
        heat = res.heat / np.maximum(res.heat.sum((1, 2), keepdims=True), 1e-30)
        on_fg = (heat * data.masks).sum((1, 2))
        results[role] = {"jaccard": res.mean, "jaccard_std": float(res.scores.std()),
                         "jaccard_per_frame": res.scores.tolist(), "attention_on_foreground": float(on_fg.mean()),
                         "kept_fraction": float(res.mask.mean()), "heads": int(res.attention.shape[1]),
                         "patches": int(res.attention.shape[2])}
        for metric in ("jaccard", "attention_on_foreground", "kept_fraction"):
            records.append(record("jaccard", metric, results[role][metric], frames, base, weights=role, mass=mass))
        rows.append((f"{role}: J = {res.scores[png_frame]:.2f} on this frame, mean {res.mean:.2f} over {frames}",
                     res.heat[png_frame], res.mask[png_frame]))
    records.append(record("jaccard", "foreground_fraction", fg_fraction, frames, base))
    title = f"{eset.cfg.encoder} ({eset.base['encoder_mode']}) on {env}, frame {png_frame}, mass {mass:g}"
    overlay_png(png, data.images[png_frame], data.masks[png_frame], rows, scale=max(1, 192 // size), title=title)
    summary = {"analysis": "jaccard", **base, "frames": frames, "size": size, "seed": seed, "stride": stride,
               "mass": mass, "foreground_fraction": fg_fraction, "png": str(png), "png_frame": png_frame,
               "results": results}
    return summary, records


def run_forgetting(eset: Any, dataset: str | None, size: int, seed: int, k: int,
                   envs: list[str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """k-NN accuracy of each encoder's pooled features (:mod:`experiments.analysis.forgetting`)."""

    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")
    data = load_images(dataset, size=size, seed=seed, envs=envs)
    acc = knn_forgetting(eset.encoders, data, k)
    n = len(data.test_labels)
    records = [record("forgetting", "knn_accuracy", acc[r], n, eset.base, weights=r, k=k, dataset=data.name)
               for r in _roles(acc)]
    summary = {"analysis": "forgetting", **eset.base, "dataset": data.name, "classes": data.classes, "k": k,
               "train_images": int(len(data.train_labels)), "test_images": n, "chance": 1.0 / len(data.classes),
               "knn_accuracy": acc}
    if "finetuned" in acc and acc["pretrained"] > 0:
        summary["retention"] = acc["finetuned"] / acc["pretrained"]
    return summary, records


def run_drift(eset: Any, env: str, frames: int, size: int, seed: int,
              stride: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Linear CKA per block of the pretrained encoder vs each other encoder (:mod:`experiments.analysis.drift`)."""

    if frames < 2:
        raise ConfigError(f"drift needs --frames >= 2, got {frames}")
    images = collect_frames(env, frames, size=size, seed=seed, stride=stride).images
    base = {**eset.base, "env": env}
    pre = eset.encoders["pretrained"]
    pre_features = layer_features(pre, images)  # the reference's layers, computed once for every comparison
    cka: dict[str, dict[str, float]] = {}
    records = []
    for role in _roles(eset.encoders):
        if role == "pretrained":
            continue
        cka[role] = cka_by_layer(pre, eset.encoders[role], images, pre_features)
        for layer, value in cka[role].items():
            records.append(record("drift", "linear_cka", value, frames, base, weights=role, reference="pretrained",
                                  layer=layer))
    layers = list(next(iter(cka.values()))) if cka else []
    summary = {"analysis": "drift", **base, "frames": frames, "size": size, "seed": seed, "stride": stride,
               "layers": layers, "cka_vs_pretrained": cka}
    return summary, records


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift analyze``; prints a short summary and the output paths.

    Raises:
        ConfigError: unknown analysis (the message lists them), bad targets or options, an encoder the analysis
            does not support, a missing run.
    """

    analysis = args.analysis
    if analysis is None:
        raise ConfigError(f"analyze needs ANALYSIS [RUN_DIR|key=value ...]: {REQUIRES}")
    if analysis not in ANALYSES:
        raise ConfigError(f"unknown analysis {analysis!r}; allowed: {', '.join(ANALYSES)}")
    run, overrides = _split_targets(args.targets)
    out = Path(args.out) if args.out else (run / "analysis" if run is not None else Path("analysis"))
    if args.frames < 0 or args.size < 0 or args.stride < 1:
        raise ConfigError("--frames and --size must be >= 0 (0 = default) and --stride >= 1")
    files.check_output_dir(out, "--out" if args.out else "output directory")
    if analysis == "jaccard" and args.png:
        files.check_output_file(args.png, "--png")
    if analysis == "wm":
        check_device(args.device)
    _set_threads(None, args.threads)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    extra: list[Path] = []
    if analysis == "calibration":

        if overrides:
            raise ConfigError("calibration takes no key=value settings; use --env, --suite, --frames, --size")
        cfg = None
        if run is not None:

            cfg = checkpoint.load_run(run, agent=False).config
        env_list = args.env or (cfg.env if cfg else "dmc:cartpole_balance,dmc:walker_walk")
        envs_ = [e.strip() for e in env_list.split(",") if e.strip()]
        summary, records = calibrate(envs_, args.suite or "standard", frames=args.frames or 16,
                                     episodes=args.episodes, stride=args.stride,
                                     size=args.size or (cfg.image_size if cfg else 64), seed=args.seed,
                                     reference=not args.no_reference, reference_input_size=args.reference_size,
                                     progress=say)
        extra.append(write_csv(out / "calibration.csv", summary["rows"], CSV_COLUMNS))
        print(format_calibration(summary["rows"], "ssim_distance"))
        if not args.no_reference:
            print(format_calibration(summary["rows"], "feature_distance"))
    elif analysis == "wm":

        if run is None:
            raise ConfigError("analysis 'wm' needs RUN_DIR (a trained run with a checkpoint)")
        summary, records = diagnose(run, args.suite or "quick", episodes=args.episodes, seed=args.seed,
                                    max_steps=args.max_steps, device=args.device, progress=say)
        for row in summary["results"]:
            print(f"{row['shift']}:{row['severity']}  recon_mse {row['recon_mse']:.4f}  kl {row['kl']:.2f}  "
                  f"reward_mae {row['reward_mae']:.3f}  return {row['return_mean']:.1f}")
    else:
        eset = _encoders(analysis, run, overrides, args.seed)
        _set_threads(eset.cfg, args.threads)
        env = args.env or eset.cfg.env
        size = args.size or eset.cfg.image_size
        if analysis == "jaccard":
            png = Path(args.png) if args.png else out / "jaccard.png"
            summary, records = run_jaccard(eset, env, args.frames or 16, size, args.seed, args.stride, args.mass,
                                           png, args.png_frame)
            extra.append(png)
            for role, r in summary["results"].items():
                print(f"{role:<10} Jaccard {r['jaccard']:.3f} +- {r['jaccard_std']:.3f}  attention on foreground "
                      f"{r['attention_on_foreground']:.3f} (foreground {summary['foreground_fraction']:.3f})")
        elif analysis == "forgetting":
            summary, records = run_forgetting(eset, args.dataset, size, args.seed, args.k,
                                              [e.strip() for e in args.env.split(",")] if args.env else None)
            for role, acc in summary["knn_accuracy"].items():
                print(f"{role:<10} {args.k}-NN accuracy {100 * acc:.1f} % (chance {100 * summary['chance']:.1f} %)")
        else:
            summary, records = run_drift(eset, env, args.frames or 32, size, args.seed, args.stride)
            for role, layers in summary["cka_vs_pretrained"].items():
                print(f"CKA pretrained vs {role}: " + " ".join(f"{k} {v:.3f}" for k, v in layers.items()))
    json_path, jsonl_path = write_report(out, analysis, summary, records)
    for path in (json_path, jsonl_path, *extra):
        print(f"wrote {path}")

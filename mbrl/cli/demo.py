"""``dreamshift demo [key=value ...]``: train + evaluate the embedded default in a few minutes."""

from __future__ import annotations

import argparse
import time

from envs import files
from mbrl.cli.evaluate import run_suite as _evaluate_suite
from mbrl.cli.train import run_train as _train
from mbrl.config import build_config, parse_overrides

# The embedded default of `dreamshift demo`: scratch CNN vs two pretrained encoders that exist offline, the
# ImageNet efficientnet-lite0 and the bundled in-domain self-supervised dreamshift-vit (both frozen, features
# cached), each trained briefly on clean pixels and evaluated under the `quick` shift suite. Minutes
# on 2 CPU cores; it shows the pipeline, it is not a learning budget (see benchmarks/learning.py).
DEMO_OVERRIDES = {
    "env": "dmc:cartpole_balance", "size": "XS", "steps": "3000", "prefill": "1000", "batch_size": "8",
    "batch_length": "32", "train_ratio": "16", "log_every": "1000", "save_every": "0", "eval_episodes": "1",
    "replay_capacity": "100000",
}
DEMO_ENCODERS = ({"encoder": "cnn"},
                 {"encoder": "efficientnet-lite0", "encoder_mode": "frozen", "encoder_input_size": "128"},
                 {"encoder": "dreamshift-vit", "encoder_mode": "frozen"})
DEMO_SUITE = "quick"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    d = sub.add_parser("demo", help="train + evaluate the embedded default in a few minutes")
    d.add_argument("overrides", nargs="*")
    d.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift demo``; raises ``DreamshiftError`` on bad overrides before anything is trained."""
    _demo(parse_overrides(args.overrides))


def _demo(given: dict[str, str]) -> None:
    """Train and evaluate each demo encoder; ``given`` overrides apply to all (``encoder=`` runs only that one)."""
    build_config({**DEMO_OVERRIDES, **given})  # bad overrides fail before anything is trained
    files.check_output_dir(given.get("run_dir") or "runs", "run_dir")
    variants = [{}] if "encoder" in given else DEMO_ENCODERS
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = []
    for variant in variants:
        merged = {**DEMO_OVERRIDES, **variant, **given}
        if "run_dir" not in given:
            merged["run_dir"] = f"runs/demo-{stamp}/{merged['encoder']}"
        run_dir = _train([f"{k}={v}" for k, v in merged.items()], None)
        _evaluate_suite(str(run_dir), DEMO_SUITE, int(merged["eval_episodes"]), 0, "auto")
        runs.append(run_dir)
    print("demo runs: " + ", ".join(str(r) for r in runs))

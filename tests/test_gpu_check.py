"""``benchmarks/gpu_check.sh`` dry-runs on the CPU with tiny budgets: every part runs and its files come back
(at most 8, the device tool's limit)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    tiny = ("size=XS image_size=32 batch_size=2 batch_length=8 prefill=50 train_ratio=4 model.deter=64 "
            "model.hidden=32 model.stoch=4 model.classes=4 model.blocks=4 model.units=32 model.cnn_depth=4 "
            "model.bins=31 time_limit=100")
    env = {**os.environ, "DEVICE": "cpu", "BUDGET": "400", "SPEED_BUDGET": "150", "SPEED_UPDATES": "1",
           "SPEED_ARGS": "--batch 2 --length 8 --image-size 32 --warmup 0 --threads 1",
           "SPEED_VARIANTS": "XS:pixels:fp32:off", "GRAPH_VARIANTS": "XS:pixels:fp32:off", "SEED_VARIANT": "XS:pixels",
           "SEED_MEMBERS": "1,2", "SEED_UPDATES": "1", "SEEDS": "[0,1]", "STEPS": "120", "PIXEL_SETS": tiny,
           "OUT": str(out), "RUNS": str(runs), "THREADS": "1", "PY": str(Path(os.sys.executable)),
           "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl"}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    names = {p.name for p in out.iterdir()}
    assert {"speed.json", "speed-graphs-cold.json", "speed-graphs-warm.json", "seeds.json", "speed.txt",
            "runs.tgz"} <= names and len(names) <= 8
    assert "per-member cost" in (out / "speed.txt").read_text()
    members = runs / "gpu-pixels" / "dmc_walker_stand-seeds"
    assert (members / "seed-0" / "metrics.jsonl").is_file() and (members / "seed-1" / "metrics.jsonl").is_file()

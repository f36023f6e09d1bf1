"""Tests for ``dreamshift plot`` (:mod:`experiments.plot`): a figure from hand-written run directories over a
tiny synthetic reference file, bad input (status 2, one ``error:`` line, nothing written), and the smoothing and
reference helpers that :mod:`benchmarks.learning` shares."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, tree

from experiments import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(path: Path, env: str = "dmc:walker_stand", seed: int = 0, steps: int = 30_000, slope: float = 0.01,
              obs: str | None = "state", diagnostics: bool = True, evals: bool = False) -> Path:
    """A fake run directory: an episode every 1000 env steps (return ``slope * env_steps``), a train record with
    diagnostics every 1000, an eval every 10k (``evals``), and a last line cut short as by a killed run."""
    path.mkdir(parents=True)
    config = {"env": env, "encoder": "cnn", "encoder_mode": "auto", "seed": seed}
    if obs is not None:
        config["obs"] = obs
    (path / "config.json").write_text(json.dumps({"config": config, "config_hash": "abc"}))
    lines = []
    for s in range(1000, steps + 1, 1000):
        lines.append({"kind": "episode", "env_steps": s, "agent_steps": s // 2, "return": slope * s, "length": 1000})
        rec = {"kind": "train", "env_steps": s, "agent_steps": s // 2, "updates": s // 4, "fps": 100.0}
        if diagnostics and s > 2000:  # no learner metrics during the prefill, as in mbrl.runs.train
            rec.update({"wm/loss": 50.0 - s / 1000, "wm/rec": 30.0, "wm/kl": 1.5, "wm/dyn": 1.5, "wm/rep": 1.5,
                        "ac/return": s / 1e4, "ac/entropy": 1.0 - s / 1e5, "ac/critic_mean": s / 2e4,
                        "ac/adv_mean": 0.0, "ac/adv_std": 1.0, "wm/grad_norm": 10.0, "ac/actor_grad_norm": 0.1,
                        "ac/retnorm_scale": 1.0, "ac/imag_reward": 0.3, "ac/policy_std": 0.5})
        lines.append(rec)
        if evals and s % 10_000 == 0:
            lines.append({"kind": "eval", "env_steps": s, "agent_steps": s // 2, "return_mean": slope * s + 5,
                          "return_std": 1.0, "episodes": 5})
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"kind": "episode", "env_st'
    (path / "metrics.jsonl").write_text(text)
    return path


def write_reference(path: Path, records: list[dict]) -> Path:
    with gzip.open(path, "wt") as f:
        json.dump(records, f)
    return path


def seed_curves(task: str, values: list[float], xs=(10_000, 20_000, 30_000, 40_000, 50_000)) -> list[dict]:
    """One record per seed: the seed's curve is ``value * x / 50000`` at ``xs``."""
    return [{"task": task, "method": "dreamerv3", "seed": i, "xs": list(xs), "ys": [v * x / 50_000 for x in xs]}
            for i, v in enumerate(values)]


@pytest.fixture
def runs(tmp_path) -> Path:
    write_run(tmp_path / "a", seed=0, evals=True)
    write_run(tmp_path / "b", env="dmc:cartpole_swingup", seed=1, obs=None, slope=0.02)
    write_reference(tmp_path / "ref.json.gz", seed_curves("dmc_walker_stand", [300, 400, 500])
                    + seed_curves("dmc_cartpole_swingup", [200, 300]))
    return tmp_path


@pytest.mark.slow
def test_plot_two_runs_with_reference(cli, runs):
    before = tree(runs)
    res = cli("plot", "a", "b", "--out", "figs/p.png", "--reference", "ref.json.gz")
    assert res.returncode == 0, res.stderr
    out = runs / "figs" / "p.png"
    assert res.stdout.strip() == f"plot: {Path('figs') / 'p.png'}"
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    after = tree(runs)
    assert set(after) - set(before) == {"figs", "figs/p.png"}  # no temp file left behind


def test_plot_svg_without_reference_or_diagnostics(cli, tmp_path):
    write_run(tmp_path / "r", diagnostics=False, obs=None)
    res = cli("plot", "r", "--out", "p.svg")
    assert res.returncode == 0, res.stderr
    assert b"<svg" in (tmp_path / "p.svg").read_bytes()


@pytest.mark.slow
def test_plot_reference_without_the_task_is_a_note(cli, runs):
    write_reference(runs / "other.json.gz", seed_curves("dmc_finger_spin", [100]))
    res = cli("plot", "a", "--out", "p.png", "--reference", "other.json.gz")
    assert res.returncode == 0, res.stderr
    assert "no reference curve for dmc_walker_stand" in res.stderr and "error:" not in res.stderr


@pytest.mark.parametrize(("args", "needles"), [
    pytest.param(["missing"], ("'missing'", "does not exist"), id="missing-run-dir"),
    pytest.param(["empty"], ("'empty'", "no metrics.jsonl"), id="no-metrics"),
    pytest.param(["a", "--out", "p.jpg"], ("p.jpg", ".png", ".svg", ".pdf"), id="bad-suffix"),
    pytest.param(["a", "--out", "p"], ("'p'", ".png"), id="no-suffix"),
    pytest.param(["a", "--out", "a.txt/p.png"], ("a.txt/p.png", "is a file, not a directory"), id="parent-is-a-file"),
    pytest.param(["a", "--out", "outdir.png"], ("outdir.png", "is a directory"), id="out-is-a-dir"),
    pytest.param(["a", "--reference", "nope.json.gz"], ("nope.json.gz", "does not exist"), id="missing-reference"),
    pytest.param(["a", "--reference", "bad.json.gz"], ("bad.json.gz", "not a gzipped JSON list"), id="bad-reference"),
    pytest.param(["a", "--window", "0"], ("--window", "> 0"), id="bad-window"),
])
def test_plot_bad_input_exits_2_and_writes_nothing(cli, runs, args, needles):
    (runs / "empty").mkdir()
    (runs / "a.txt").write_text("x")
    (runs / "outdir.png").mkdir()
    (runs / "bad.json.gz").write_bytes(b"not gzip")
    if "--out" not in args:
        args = [*args, "--out", "figs/p.png"]
    before = tree(runs)
    assert_user_error(cli("plot", *args), *needles)
    assert tree(runs) == before


def test_plot_requires_out(cli, runs):
    assert cli("plot", "a").returncode == 2  # argparse usage error


# --- helpers shared with benchmarks/learning.py ---

def test_window_mean_is_the_mean_over_the_half_open_window():
    xs = np.array([1000, 2000, 3000, 12_000])
    ys = np.array([1.0, 2.0, 3.0, 10.0])
    got = plot.window_mean(xs, ys, [500, 1000, 3000, 11_000, 12_000, 30_000], window=10_000)
    np.testing.assert_allclose(got, [np.nan, 1.0, 2.0, 2.5, 6.5, np.nan])
    # unsorted input gives the same
    np.testing.assert_allclose(plot.window_mean(xs[::-1], ys[::-1], [12_000], 10_000), [6.5])


def test_reference_band_smooths_each_seed_then_takes_mean_min_max():
    curves = [(np.array([10_000.0, 20_000.0]), np.array([1.0, 3.0])),
              (np.array([10_000.0, 20_000.0]), np.array([5.0, 7.0])),
              (np.array([10_000.0]), np.array([9.0]))]  # a seed that stops early
    mean, lo, hi = plot.reference_band(curves, [5_000, 10_000, 20_000], window=10_000)
    np.testing.assert_allclose(mean, [np.nan, 5.0, 5.0])
    np.testing.assert_allclose(lo, [np.nan, 1.0, 3.0])
    np.testing.assert_allclose(hi, [np.nan, 9.0, 7.0])


def test_reference_task_names_and_loading(tmp_path):
    assert plot.reference_task("dmc:walker_stand") == "dmc_walker_stand"
    assert plot.reference_task("walker_stand") is None and plot.reference_task(None) is None
    ref = plot.load_reference(write_reference(tmp_path / "r.json.gz", [
        {"task": "dmc_walker_stand", "method": "m", "seed": 0, "xs": [20, 10], "ys": [2, 1]}]))
    (xs, ys), = ref["dmc_walker_stand"]
    assert xs.tolist() == [10, 20] and ys.tolist() == [1, 2]


def test_load_run_series_and_label(tmp_path):
    run = plot.load_run(write_run(tmp_path / "r", steps=5000))
    assert run.label == "dmc:walker_stand state s0"  # a state run has no encoder
    assert run.furthest == 5000  # the cut-short last line is skipped
    xs, ys = run.series("episode", "return")
    assert xs.tolist() == [1000, 2000, 3000, 4000, 5000]
    xs, _ = run.series("train", "wm/loss")
    assert xs.tolist() == [3000, 4000, 5000]
    xs, ys = run.series("train", "updates_per_env_step")  # derived from the updates counter
    np.testing.assert_allclose(ys, 0.25)
    assert [p.title for p in plot.panels_present([run])][:2] == ["critic mean", "λ-return mean"]

"""Issue 7: metrics on hand-computed cases, the results schema, sweeps on the local and submitit backends
(resume, retry, no lost records), the leaderboard and its HTML in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_RUN

from envs.errors import ConfigError
from experiments import metrics, results, spec
from experiments.leaderboard import build
from experiments.normalisation import constants
from experiments.sweep import SweepError, run
from experiments.trial import is_complete, paths
from mbrl.runs import checkpoint

# --- metrics -------------------------------------------------------------------------------------------------


def test_normalised_return_uses_the_env_constants():
    c = constants("dmc:walker_walk")
    assert metrics.normalised_return(c.r_random, "dmc:walker_walk") == pytest.approx(0.0)
    assert metrics.normalised_return(c.r_max, "dmc:walker_walk") == pytest.approx(1.0)
    # CARLA: Jones et al. 2025's constants, (R - (-37.41)) / (2780 + 37.41)
    assert metrics.normalised_return(1371.295, "carla:Town04") == pytest.approx(0.5)
    with pytest.raises(KeyError, match="no normalisation constants"):
        metrics.normalised_return(1.0, "dmc:not_a_task")


def test_drop_retention_success_and_mean_se():
    assert metrics.drop_pct(200.0, 50.0) == pytest.approx(75.0)
    assert metrics.drop_pct(-100.0, -150.0) == pytest.approx(50.0)  # a worse shifted score is a positive drop
    assert metrics.drop_pct(0.0, 5.0) is None
    assert metrics.retention(200.0, 50.0) == pytest.approx(0.25)
    assert metrics.success_rate([True, False, True, None]) == pytest.approx(2 / 3)
    assert metrics.success_rate([None, None]) is None
    m, se = metrics.mean_se([1.0, 2.0, 3.0, 4.0])
    assert m == pytest.approx(2.5)
    assert se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert metrics.mean_se([7.0]) == (7.0, 0.0)


def test_severity_auc_is_the_mean_score_over_the_severity_range():
    assert metrics.severity_auc([0, 5], [1.0, 1.0]) == pytest.approx(1.0)
    # linear decay 1 -> 0 over 0..5: area 2.5 over a range of 5
    assert metrics.severity_auc([5, 0, 1], [0.0, 1.0, 0.8]) == pytest.approx((0.9 * 1 + 0.4 * 4) / 5)
    with pytest.raises(ValueError, match="two distinct"):
        metrics.severity_auc([3], [1.0])


def test_iqm_and_optimality_gap_by_hand():
    x = np.array([[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 100.0]])  # 8 scores: IQM = mean of 2, 3, 4, 5
    assert metrics.iqm(x) == pytest.approx(3.5)
    assert metrics.optimality_gap(np.array([[0.5, 1.5], [1.0, 0.0]])) == pytest.approx(1 - (0.5 + 1 + 1 + 0) / 4)


def test_probability_of_improvement_by_hand():
    x = np.array([[2.0], [3.0]])
    y = np.array([[1.0], [3.0]])
    # pairs (2,1) win, (2,3) lose, (3,1) win, (3,3) tie -> (2 + 0.5) / 4
    point, lo, hi = metrics.probability_of_improvement(x, y, reps=500)
    assert point == pytest.approx(0.625)
    assert 0.0 <= lo <= point <= hi <= 1.0
    assert metrics.probability_of_improvement(y + 10, y, reps=100) == (1.0, 1.0, 1.0)


def test_bootstrap_ci_covers_the_truth_on_synthetic_data():
    """Across 60 synthetic experiments (10 seeds x 5 tasks, normal scores around a known mean), the 95 % CI of
    the mean covers the true value in at least ~85 % of them (binomial slack for 60 draws)."""
    rng = np.random.default_rng(0)
    truth, covered = 0.5, 0
    for i in range(60):
        x = rng.normal(truth, 0.2, size=(10, 5))
        _, lo, hi = metrics.interval_estimates({"m": x}, reps=1000, seed=i)["m"]["mean"]
        covered += lo <= truth <= hi
    assert covered >= 51
    # and the interval shrinks with more seeds
    small = metrics.interval_estimates({"m": rng.normal(0, 1, (3, 5))}, reps=1000)["m"]["iqm"]
    large = metrics.interval_estimates({"m": rng.normal(0, 1, (30, 5))}, reps=1000)["m"]["iqm"]
    assert large[2] - large[1] < small[2] - small[1]


# --- results schema ------------------------------------------------------------------------------------------


def _record(**change):
    rec = {"schema": 1, "env": "dmc:cartpole_balance", "suite": "dmc", "task": "cartpole_balance",
           "encoder": "cnn", "label": "cnn", "encoder_mode": "full", "size": "XS", "shift": "none", "severity": 0,
           "seed": 0,
           "eval_seed": 0, "episode_seed": 10000, "return": 123.5, "success": None, "length": 1000,
           "env_steps_trained": 3000, "code_version": "0.1.0", "config_hash": "abc", "trial": "t"}
    rec.update(change)
    return rec


def test_results_roundtrip_and_atomic_write(tmp_path):
    path = results.write(tmp_path / "r.jsonl", [_record(), _record(shift="fog", severity=3, success=True)])
    back = results.read(path)
    assert back[1]["shift"] == "fog" and back[1]["success"] is True
    assert not list(tmp_path.glob("*.tmp*"))
    with pytest.raises(results.ResultsError):
        results.write(tmp_path / "bad.jsonl", [_record(severity=9)])
    assert not (tmp_path / "bad.jsonl").exists()  # nothing half-written


@pytest.mark.parametrize("line, match", [
    ("{not json", r"r\.jsonl:2: not valid JSON"),
    (json.dumps({k: v for k, v in _record().items() if k != "return"}), r"r\.jsonl:2: missing field\(s\) return"),
    (json.dumps(_record(severity="3")), r"r\.jsonl:2: field 'severity' must be int"),
    (json.dumps(_record(severity=True)), r"r\.jsonl:2: field 'severity' must be int"),
    (json.dumps(_record(extra=1)), r"r\.jsonl:2: unknown field\(s\) extra"),
    (json.dumps(_record(shift="fog", severity=0)), r"r\.jsonl:2: shift 'none' goes with severity 0"),
    (json.dumps(_record(schema=2)), r"r\.jsonl:2: schema version 2"),
])
def test_malformed_results_name_the_file_and_line(tmp_path, line, match):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_record()) + "\n" + line + "\n")
    with pytest.raises(results.ResultsError, match=match):
        results.read(path)
    with pytest.raises(results.ResultsError, match=match):
        build(tmp_path, tmp_path / "board")


def test_empty_results_dir_is_an_error(tmp_path):
    with pytest.raises(results.ResultsError, match="no results files"):
        results.read_dir(tmp_path)


# --- grid files ----------------------------------------------------------------------------------------------

TINY_OVERRIDES = {k: v for k, v in (o.split("=", 1) for o in TINY_RUN) if k not in ("env", "wandb_mode")}


def _grid(tmp_path: Path, **change) -> Path:
    data = {"name": "tiny", "envs": ["dmc:cartpole_balance"],
            "encoders": ["cnn", {"name": "cnn", "label": "cnn-small", "overrides": {"model.cnn_depth": 2}}],
            "seeds": [0], "steps": 150, "overrides": TINY_OVERRIDES,
            "evaluation": {"suite": "contrast:5", "episodes": 1}, "retries": 0,
            "backend": {"name": "local", "workers": 2, "threads": 1}}
    data.update(change)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_grid_expands_and_validates(tmp_path):
    sweep = spec.load(_grid(tmp_path, seeds=2, encoders=[{"name": "cnn", "modes": ["full", "frozen"]}]))
    assert [t.id for t in sweep.trials] == ["dmc-cartpole_balance-cnn-full-s0", "dmc-cartpole_balance-cnn-full-s1",
                                            "dmc-cartpole_balance-cnn-frozen-s0",
                                            "dmc-cartpole_balance-cnn-frozen-s1"]
    assert sweep.trials[0].overrides["steps"] == "150" and sweep.trials[0].group == "dmc:cartpole_balance/cnn/full"


@pytest.mark.parametrize("change, match", [
    ({"envs": ["dmc:nope"]}, "nope"),
    ({"overrides": {"not_a_key": 1}}, "not_a_key"),
    ({"evaluation": {"suite": "no_such_suite"}}, "no_such_suite"),
    ({"colour": 1}, r"unknown key\(s\) colour"),
    ({"backend": {"name": "ray"}}, "allowed: local, slurm, submitit-local"),
    ({"encoders": ["cnn", "cnn"]}, "duplicate trials"),
    ({"overrides": {"seed": 3}}, "may not set 'seed'"),
    ({"slurm": {"gpus_per_node": "one"}}, "slurm.gpus_per_node must be int"),
    ({"encoders": [1]}, "expected a non-empty list of str or dict"),
    ({"encoders": []}, "expected a non-empty list of str or dict"),
])
def test_bad_grid_files_fail_before_anything_runs(tmp_path, change, match):
    with pytest.raises((ConfigError, ValueError), match=match):  # a bad suite is a ShiftError (ValueError)
        spec.load(_grid(tmp_path, **change))


def test_missing_grid_file_names_the_shipped_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"experiments/\*\.yaml"):
        spec.load(tmp_path / "nope.yaml")


def test_shipped_grids_parse():
    root = Path(__file__).resolve().parent.parent / "experiments"
    names = {p.stem: spec.load(p) for p in root.glob("*.yaml")}
    assert {"quick", "paper_jones2025", "full"} <= set(names)
    quick = names["quick"]
    assert {t.encoder for t in quick.trials} >= {"cnn", "efficientnet-lite0", "dreamshift-vit"}
    assert {t.seed for t in quick.trials} == {0, 1}
    paper = names["paper_jones2025"]
    assert {(t.encoder, t.mode) for t in paper.trials} >= {("dinov2:small", "frozen"), ("clip:b32", "partial:4"),
                                                           ("cnn", "full")}
    assert {t.seed for t in paper.trials} == {0, 1, 2}
    full_modes = {t.mode.split(":")[0] for t in names["full"].trials}
    assert {"frozen", "partial", "full", "adapter", "lora"} <= full_modes


# --- sweeps --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """A 2-trial sweep on the local backend (2 worker processes), then its leaderboard."""
    tmp = tmp_path_factory.mktemp("sweep")
    sweep = spec.load(_grid(tmp))
    out = tmp / "out"
    lines: list[str] = []
    statuses = run(sweep, out, wandb_mode="disabled", progress=lines.append)
    return sweep, out, statuses, lines


@pytest.mark.slow
def test_local_sweep_completes_and_leaderboard_lists_both(local_sweep, tmp_path):
    sweep, out, statuses, lines = local_sweep
    assert [s["state"] for s in statuses] == ["done", "done"]
    assert any(line.startswith("[2/2]") for line in lines)
    recs = results.read_dir(out / "results")
    assert {r["trial"] for r in recs} == {t.id for t in sweep.trials}
    assert {(r["shift"], r["severity"]) for r in recs} == {("none", 0), ("contrast", 5)}
    assert all(r["env_steps_trained"] == 150 for r in recs)
    files = build(out / "results", tmp_path / "board", reps=200)
    md = files["md"].read_text()
    assert md.count("| cnn ") == 1 and md.count("| cnn-small ") == 1  # labels keep the two variants apart
    csv = files["csv"].read_text().splitlines()
    assert len(csv) == 3 and "iqm" in csv[0]
    page = files["html"].read_text()
    assert "<svg" in page and "dmc:cartpole_balance" in page and "src=\"http" not in page
    assert (tmp_path / "board" / "robustness-dmc_cartpole_balance.png").stat().st_size > 1000


def test_rerun_skips_finished_trials_and_keeps_their_records(local_sweep):
    sweep, out, _, _ = local_sweep
    before = {p.name: p.read_bytes() for p in (out / "results").glob("*.jsonl")}
    lines: list[str] = []
    statuses = run(sweep, out, wandb_mode="disabled", progress=lines.append)
    assert [s["state"] for s in statuses] == ["skipped", "skipped"]
    assert "2 already complete, 0 to run" in lines[0]
    assert {p.name: p.read_bytes() for p in (out / "results").glob("*.jsonl")} == before


@pytest.mark.slow
def test_killed_sweep_resumes_the_unfinished_trial(local_sweep, tmp_path):
    """Simulate a kill: one trial lost its results file (its run kept a checkpoint), the other finished.
    The rerun evaluates only the unfinished trial (from its checkpoint) and loses no record of the other."""
    sweep, out, _, _ = local_sweep
    killed = tmp_path / "killed"
    import shutil

    shutil.copytree(out, killed)
    victim = sweep.trials[1].id
    paths(killed, victim)["results"].unlink()
    keep = paths(killed, sweep.trials[0].id)["results"].read_bytes()
    statuses = run(sweep, killed, wandb_mode="disabled", progress=lambda _: None)
    assert [s["state"] for s in statuses] == ["skipped", "done"]
    assert paths(killed, sweep.trials[0].id)["results"].read_bytes() == keep
    assert is_complete(killed, sweep.trials[1].to_dict())
    log = paths(killed, victim)["log"].read_text()
    assert "attempt 1" in log and "attempt 2" in log  # the first run's log is kept, the rerun appends
    assert "resuming" not in log.split("attempt 2")[1]  # the budget was spent: it only re-evaluated


@pytest.mark.slow
def test_failed_trial_is_retried_and_recorded(tmp_path):
    grid = _grid(tmp_path, encoders=[{"name": "cnn", "overrides": {"eval_episodes": 1}}], retries=1,
                 evaluation={"suite": "contrast:5", "episodes": 1})
    sweep = spec.load(grid)
    sweep.trials[0].overrides["steps"] = "not-a-number"  # fails when the trial builds its config
    with pytest.raises(SweepError, match=r"1 of 1 trial\(s\) failed: dmc-cartpole_balance-cnn-full-s0"):
        run(sweep, tmp_path / "out", wandb_mode="disabled", progress=lambda _: None)
    status = json.loads(paths(tmp_path / "out", sweep.trials[0].id)["status"].read_text())
    assert status["state"] == "failed" and status["attempts"] == 2 and len(status["errors"]) == 2
    assert "steps" in status["errors"][0]["error"]
    assert not (tmp_path / "out" / "results").exists() or not list((tmp_path / "out" / "results").iterdir())


@pytest.mark.slow
def test_submitit_local_executor_runs_the_same_code_path(tmp_path):
    sweep = spec.load(_grid(tmp_path, encoders=["cnn"], backend={"name": "submitit-local", "threads": 1}))
    lines: list[str] = []
    statuses = run(sweep, tmp_path / "out", wandb_mode="disabled", progress=lines.append)
    assert [s["state"] for s in statuses] == ["done"]
    assert any(line.startswith("submitted 1 job") for line in lines)
    assert list((tmp_path / "out" / "submitit").rglob("*_submitted.pkl"))  # submitit really ran the job
    assert len(results.read_dir(tmp_path / "out" / "results")) == 2


@pytest.mark.slow
def test_seed_batch_trains_a_batch_once_and_records_each_seed(tmp_path):
    """``seed_batch: 2``: seeds 0 and 1 train in one process into runs/<batch>/seed-<s>/, each seed is its own
    trial with its own results file; a rerun skips them; the leaderboard counts two seeds."""
    grid = _grid(tmp_path, encoders=["cnn"], seeds=[0, 1], seed_batch=2, backend={"name": "local", "workers": 1,
                                                                                  "threads": 1})
    sweep = spec.load(grid)
    assert sweep.seed_batch == 2 and {t.batch for t in sweep.trials} == {"dmc-cartpole_balance-cnn-full-seeds-0-1"}
    out = tmp_path / "out"
    lines: list[str] = []
    statuses = run(sweep, out, wandb_mode="disabled", progress=lines.append)
    assert [s["state"] for s in statuses] == ["done", "done"]
    batch = out / "runs" / "dmc-cartpole_balance-cnn-full-seeds-0-1"
    assert json.loads((batch / "members.json").read_text())["seeds"] == [0, 1]
    for seed in (0, 1):
        assert json.loads((batch / f"seed-{seed}" / "config.json").read_text())["config"]["seed"] == seed
    recs = results.read_dir(out / "results")
    assert sorted({r["seed"] for r in recs}) == [0, 1] and len({r["trial"] for r in recs}) == 2
    assert "| cnn " in build(out / "results", tmp_path / "board", reps=200)["md"].read_text()
    again: list[str] = []
    assert [s["state"] for s in run(sweep, out, wandb_mode="disabled", progress=again.append)] == \
        ["skipped", "skipped"]

    # A batch trained elsewhere with the same config hash (e.g. benchmarks/learning.py's) is adopted by copying it
    # to runs/<batch>/ of another sweep directory: that sweep only evaluates it (nothing retrained).
    adopted = tmp_path / "adopted" / "runs" / batch.name
    shutil.copytree(batch, adopted)
    trained = [(adopted / f"seed-{s}" / "metrics.jsonl").read_text() for s in (0, 1)]  # timestamped records
    statuses = run(sweep, tmp_path / "adopted", wandb_mode="disabled", progress=lambda _: None)
    assert [s["state"] for s in statuses] == ["done", "done"]
    assert [(adopted / f"seed-{s}" / "metrics.jsonl").read_text() for s in (0, 1)] == trained
    assert checkpoint.load_state(adopted / "seed-1")["counters"]["env_steps"] == 150
    assert sorted({r["seed"] for r in results.read_dir(tmp_path / "adopted" / "results")}) == [0, 1]


@pytest.mark.parametrize("value", [0, -1, "two", 65])
def test_bad_seed_batch(tmp_path, value):
    with pytest.raises(ConfigError, match="seed_batch"):
        spec.load(_grid(tmp_path, seed_batch=value))


# --- HTML in a real browser ----------------------------------------------------------------------------------


def test_leaderboard_html_renders_in_headless_chromium(tmp_path):
    from experiments.screenshot import find_browser, screenshot

    if find_browser() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have headless Chromium (.ci/setup installs chromium-headless-shell)")
        pytest.skip("no headless Chromium on this machine")
    res = tmp_path / "results"
    recs = [_record(seed=s, trial=f"t{s}", **{"return": 400.0 + 10 * s}) for s in range(3)]
    recs += [_record(seed=s, trial=f"t{s}", shift="fog", severity=5, **{"return": 200.0 + s}) for s in range(3)]
    results.write(res / "a.jsonl", recs)
    files = build(res, tmp_path / "board", reps=200)
    png = screenshot(files["html"], tmp_path / "shot.png", width=1000, height=700)
    from PIL import Image

    img = np.asarray(Image.open(png).convert("L"))
    assert img.shape == (700, 1000)
    dark = (img < 128).mean()
    assert 0.002 < dark < 0.5  # text and plots drawn on a white page, not blank and not an error screen


@pytest.mark.slow
def test_wandb_eval_run_is_offline_grouped_and_idempotent(tmp_path):
    from experiments.wandb_log import log_evaluation

    trial = {"id": "dmc-cartpole_balance-cnn-full-s0", "group": "dmc:cartpole_balance/cnn/full"}
    recs = [_record(), _record(shift="fog", severity=5, **{"return": 50.0})]
    run_id = log_evaluation(trial, recs, tmp_path, mode="offline")
    assert run_id == "dmc-cartpole_balance-cnn-full-s0-eval"
    runs = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    log_evaluation(trial, recs, tmp_path, mode="offline")  # a rerun logs to the same wandb run id
    # wandb names each offline run's folder by start second and adds "-1" when two share one, so read the run id
    # from the run file inside each folder, not from the folder name
    files = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and {f.name for f in files} == {f"run-{run_id}.wandb"}


@pytest.mark.slow
def test_killed_trial_resumes_training_from_its_checkpoint(tmp_path):
    """A trial killed after a checkpoint (here: at 100 of its 150 env steps, no results yet) continues training
    from that checkpoint instead of starting over."""
    short = spec.load(_grid(tmp_path, encoders=["cnn"], steps=100))
    run(short, tmp_path / "out", wandb_mode="disabled", progress=lambda _: None)
    trial = short.trials[0]
    paths(tmp_path / "out", trial.id)["results"].unlink()  # as if killed before evaluating
    full = spec.load(_grid(tmp_path, encoders=["cnn"], steps=150))
    assert full.trials[0].id == trial.id
    statuses = run(full, tmp_path / "out", wandb_mode="disabled", progress=lambda _: None)
    assert statuses[0]["state"] == "done"
    assert "resuming dmc-cartpole_balance-cnn-full-s0 at 100 env steps" in paths(tmp_path / "out", trial.id)[
        "log"].read_text()
    assert {r["env_steps_trained"] for r in results.read_dir(tmp_path / "out" / "results")} == {150}


def test_cli_sweep_dry_run_and_bad_input(tmp_path, capsys):
    from dreamshift import main

    grid = _grid(tmp_path)
    assert main(["sweep", str(grid), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "dmc-cartpole_balance-cnn-full-s0: " in out and "2 trials" in out
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert main(["leaderboard", str(tmp_path / "no_results")]) == 2
    assert main(["sweep", str(grid), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 3 and "no such results directory" in err and "--workers must be >= 1" in err

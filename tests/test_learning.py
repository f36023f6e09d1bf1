"""Tests for ``benchmarks/learning.py``'s pure logic on synthetic reference data: our value at a step (window
mean over seeds), the judged step of partial runs, the PASS/FAIL rules, the report, and the run plan (new /
resume / done). No training is launched and the real reference files are not read."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import load_benchmark
from test_plot import PNG_MAGIC, seed_curves, write_reference, write_run

from experiments.plot import load_reference, load_run


@pytest.fixture(scope="module")
def learning():
    return load_benchmark("learning")


def curves(values: list[float]):
    """Reference seeds whose returns at 50k are ``values`` (linear in env steps, a point every 10k)."""
    return [(np.array(r["xs"], float), np.array(r["ys"], float)) for r in seed_curves("t", values)]


def test_ours_at_is_the_window_mean_over_seeds(learning, tmp_path):
    a = load_run(write_run(tmp_path / "a", steps=50_000, slope=0.01, evals=True))
    b = load_run(write_run(tmp_path / "b", steps=30_000, slope=0.03))
    ours, evals = learning.ours_at([a, b], [10_000, 50_000])
    # a: episodes at 1k..10k -> mean 0.01 * 5500; b: 0.03 * 5500; at 50k only a has episodes in (40k, 50k]
    np.testing.assert_allclose(ours, [(55 + 165) / 2, 0.01 * 45_500])
    np.testing.assert_allclose(evals, [0.01 * 10_000 + 5, 0.01 * 50_000 + 5])
    assert learning.judged_step([a, b], 50_000) == 30_000  # the furthest step every seed reached
    assert learning.judged_step([a], 40_000) == 40_000
    assert learning.judged_step([], 50_000) == 0


def test_judge_row_compares_at_the_same_step(learning, tmp_path):
    run = load_run(write_run(tmp_path / "a", steps=60_000, slope=0.01))
    row = learning.judge_row("", "dmc:walker_stand", [run], curves([300, 400, 500]), 50_000)
    assert row.step == 50_000 and row.seeds == 1
    assert row.ours == pytest.approx(0.01 * 45_500)
    assert (row.ref_mean, row.ref_lo, row.ref_hi) == pytest.approx((400, 300, 500))
    assert row.in_range and row.ratio == pytest.approx(455 / 400)


def make_row(learning, task, ours, ref=(400.0, 300.0, 500.0), step=50_000, variant=""):
    return learning.Row(variant, task, step, ours, *ref, seeds=1)


TASKS = ("dmc:cartpole_swingup", "dmc:walker_stand", "dmc:reacher_easy", "dmc:finger_spin")


@pytest.mark.parametrize(("ours", "passed"), [
    pytest.param([300, 350, 600, 100], [True, True], id="3-of-4-in-range-or-above"),  # ratios .75 .875 1.5 .25
    pytest.param([290, 290, 600, 600], [False, True], id="2-of-4-in-range"),
    pytest.param([300, 300, 300, 100], [True, False], id="mean-ratio-below-0.8"),  # (3 * .75 + .25) / 4 = .625
])
def test_cpu_state_rules(learning, ours, passed):
    check = learning.CHECKS["cpu-state"]
    rows = [make_row(learning, t, o) for t, o in zip(TASKS, ours, strict=True)]
    results = learning.verdicts(check, rows)
    assert [ok for ok, _ in results] == passed
    assert "tasks within or above" in results[0][1] and "mean ours/reference" in results[1][1]


def test_cpu_state_partial_and_missing_data(learning):
    check = learning.CHECKS["cpu-state"]
    rows = [make_row(learning, t, 500, step=30_000) for t in TASKS[:3]]
    rows.append(make_row(learning, TASKS[3], math.nan, ref=(math.nan,) * 3, step=0))
    results = learning.verdicts(check, rows)
    assert [ok for ok, _ in results] == [False, False]  # no data for a task fails even with 3/4 in range
    assert "partial" in results[0][1] and "no data: dmc:finger_spin" in results[0][1]
    assert "3/4" in results[0][1]


def test_ratio_targets_per_variant_and_task(learning):
    check = learning.CHECKS["cpu-features"]
    rows = [make_row(learning, "dmc:cartpole_swingup", 250, variant="efficientnet-lite0"),  # .625
            make_row(learning, "dmc:walker_stand", 230, variant="efficientnet-lite0"),  # .575
            make_row(learning, "dmc:cartpole_swingup", 400, variant="dreamshift-vit", step=20_000),
            make_row(learning, "dmc:walker_stand", math.nan, ref=(math.nan,) * 3, step=0, variant="dreamshift-vit")]
    results = learning.verdicts(check, rows)
    assert [ok for ok, _ in results] == [True, False, True, False]
    assert "[efficientnet-lite0] dmc:cartpole_swingup" in results[0][1]
    assert "(partial)" in results[2][1] and "no data" in results[3][1]
    gpu = learning.verdicts(learning.CHECKS["gpu-pixels"], [make_row(learning, "dmc:walker_stand", 320)])
    assert gpu == [(True, "gpu-pixels dmc:walker_stand: ours/reference 0.80 at 50000 (need >= 0.8)")]


def test_report_on_partial_runs(learning, tmp_path, capsys):
    ref = write_reference(tmp_path / "dmc_vision-dreamerv3.json.gz", seed_curves("dmc_walker_stand", [300, 400, 500]))
    root = tmp_path / "runs"
    write_run(root / "gpu-pixels" / "dmc_walker_stand-s0", steps=60_000, slope=0.01)
    write_run(root / "gpu-pixels" / "dmc_walker_stand-s1", steps=60_000, slope=0.008, seed=1)
    (root / "gpu-pixels" / "dmc_walker_stand-s2").mkdir()  # started, nothing logged yet: ignored
    (root / "gpu-pixels" / "dmc_walker_stand-vit-s0").mkdir()  # another variant's name: not this group
    results, png = learning.report(learning.CHECKS["gpu-pixels"], root, tmp_path)
    out = capsys.readouterr().out
    assert png == root / "gpu-pixels" / "report.png" and png.read_bytes().startswith(PNG_MAGIC)
    assert "(seeds: 0, 1)" in out
    row50 = next(line for line in out.splitlines() if line.split()[:1] == ["50000"])
    # ours = mean of the seeds' (40k, 50k] means = 0.009 * 45500; reference 400 (300-500)
    assert row50.split() == ["50000", "409.5", "-", "400.0", "300-500", "1.02"]
    assert results == [(True, "gpu-pixels dmc:walker_stand: ours/reference 1.02 at 50000 (need >= 0.8)")]
    assert "PASS  gpu-pixels dmc:walker_stand" in out and "gpu-pixels: PASS\n" in out
    # a file given as --reference is used as is; a run group without runs fails with "no data"
    results, _ = learning.report(learning.CHECKS["gpu-pixels"], tmp_path / "none", ref, out=tmp_path / "x.png")
    assert [ok for ok, _ in results] == [False] and "(no data)" in results[0][1]


def test_report_errors(learning, tmp_path):
    write_reference(tmp_path / "dmc_vision-dreamerv3.json.gz", seed_curves("dmc_other", [1]))
    with pytest.raises(learning.ConfigError, match="no curve for 'dmc_walker_stand'"):
        learning.report(learning.CHECKS["gpu-pixels"], tmp_path / "runs", tmp_path)
    assert learning.main(["report", "nope"]) == 2
    assert learning.main(["report", "gpu-pixels", "--reference", str(tmp_path / "missing")]) == 2
    assert learning.main(["run", "cpu-state", "--set", "size", "--dry-run"]) == 2
    assert not (tmp_path / "runs").exists()
    assert load_reference(tmp_path / "dmc_vision-dreamerv3.json.gz")  # the synthetic file is readable


def test_plan_new_resume_done(learning, tmp_path):
    check = learning.CHECKS["cpu-features"]
    root = tmp_path / "runs"
    resumed = root / "cpu-features" / "dmc_walker_stand-dreamshift-vit-s0"
    write_run(resumed, steps=20_000)
    (resumed / "checkpoint").mkdir()
    (resumed / "checkpoint" / "agent.pt").write_bytes(b"x")
    finished = root / "cpu-features" / "dmc_cartpole_swingup-dreamshift-vit-s0"
    write_run(finished, steps=50_000)
    (finished / "checkpoint").mkdir()
    (finished / "checkpoint" / "agent.pt").write_bytes(b"x")
    jobs = learning.plan(check, [0], 50_000, root, {"train_ratio": "64"})
    by_name = {j.name: j for j in jobs}
    assert list(by_name) == ["dmc_cartpole_swingup-efficientnet-lite0-s0", "dmc_walker_stand-efficientnet-lite0-s0",
                             "dmc_cartpole_swingup-dreamshift-vit-s0", "dmc_walker_stand-dreamshift-vit-s0"]
    assert [j.status for j in jobs] == ["new", "new", "done", "resume"]
    cmd = by_name["dmc_walker_stand-dreamshift-vit-s0"].cmd
    assert cmd[2:6] == ["dreamshift", "train", "--resume", str(resumed)]
    args = dict(a.split("=", 1) for a in cmd[6:])
    assert args == {"progress": "false", "wandb_mode": "disabled", "size": "size1m", "train_ratio": "64",
                    "decoder": "features", "encoder_input_size": "64", "precision": "bf16", "compile": "on",
                    "prefill": "5000", "encoder": "dreamshift-vit", "encoder_mode": "frozen", "env": "dmc:walker_stand",
                    "seed": "0",
                    "steps": "50000", "run_dir": str(resumed), "threads": "1"}
    new = by_name["dmc_walker_stand-efficientnet-lite0-s0"].cmd
    assert "--resume" not in new and "encoder=efficientnet-lite0" in new
    state = learning.run_overrides(learning.CHECKS["cpu-state"], "dmc:walker_stand", "", 3, 50_000, tmp_path)
    assert {k: state[k] for k in ("size", "train_ratio", "obs", "seed")} == {
        "size": "size1m", "train_ratio": "512", "obs": "state", "seed": "3"}


@pytest.fixture(scope="module")
def reference_run():
    return load_benchmark("reference_run")


def test_reference_run_command_matches_the_cpu_state_settings(reference_run, tmp_path):
    """The reference's command line carries the cpu-state settings; its run.steps counts agent steps (env steps
    / action repeat 2); a non-dm_control env or an unknown size is one error line, exit 2."""
    cmd = reference_run.reference_command("dmc:walker_stand", tmp_path / "w", seed=3, steps=50_000)
    flags = {tok: cmd[i + 1] for i, tok in enumerate(cmd) if tok.startswith("--")}
    assert cmd[2:5] == ["--configs", "dmc_proprio", "size1m"]
    assert {k: flags[k] for k in ("--task", "--seed", "--run.train_ratio", "--env.dmc.repeat", "--run.envs",
                                  "--replay_context", "--jax.platform", "--run.steps")} == {
        "--task": "dmc_walker_stand", "--seed": "3", "--run.train_ratio": "512", "--env.dmc.repeat": "2",
        "--run.envs": "1", "--replay_context": "0", "--jax.platform": "cpu", "--run.steps": "25000"}
    assert reference_run.run_dir(tmp_path, "dmc:walker_stand", 3) == tmp_path / "dmc_walker_stand-s3"
    assert reference_run.main(["run", "atari:pong", "--dry-run"]) == 2
    with pytest.raises(reference_run.ConfigError, match="size"):
        reference_run.reference_command("dmc:walker_stand", tmp_path, size="XS")


def test_reference_run_report_puts_the_three_curves_side_by_side(reference_run, tmp_path, capsys):
    """``report`` reads the reference run's scores.jsonl (a torn last line skipped), our run and the published
    curves, prints the window means every 10k env steps and writes a PNG."""
    runs = tmp_path / "runs"
    logdir = runs / "dmc_walker_stand-s0"
    logdir.mkdir(parents=True)
    lines = [json.dumps({"step": s, "episode/score": s / 100}) for s in range(1000, 20_001, 1000)]
    (logdir / "scores.jsonl").write_text("\n".join(lines) + '\n{"step": 21000, "episo')
    xs, ys = reference_run.load_scores(logdir)
    assert len(xs) == 20 and ys[-1] == 200.0
    ours = write_run(tmp_path / "ours", steps=20_000, slope=0.01)
    published = write_reference(tmp_path / "p.json.gz", seed_curves("dmc_walker_stand", [300, 400, 500]))
    png = tmp_path / "r.png"
    assert reference_run.main(["report", "dmc:walker_stand", "--runs", str(runs), "--ours", str(ours),
                               "--published", str(published), "--out", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    row = next(line for line in out if line.split("|")[0].strip() == "20000")
    # reference code: episodes at 11k..20k -> mean 155; ours (slope 0.01): the same window's episodes -> 155
    assert [c.strip() for c in row.split("|")][:3] == ["20000", "155.0", "155.0"]
    assert not any(line.startswith("*") for line in out)  # both runs reached 20k: no window is partial
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert reference_run.main(["report", "dmc:walker_stand", "--runs", str(tmp_path / "none")]) == 2


def test_reference_run_report_marks_a_window_the_run_has_not_finished(reference_run, tmp_path, capsys):
    """A reference run that stopped at 15k: its 20k cell is the mean of the episodes at 11k..15k, marked ``*``,
    and a footnote says how far it got; our run, complete to 20k, is not marked."""
    runs = tmp_path / "runs"
    logdir = runs / "dmc_walker_stand-s0"
    logdir.mkdir(parents=True)
    lines = [json.dumps({"step": s, "episode/score": s / 100}) for s in range(1000, 15_001, 1000)]
    (logdir / "scores.jsonl").write_text("\n".join(lines) + "\n")
    ours = write_run(tmp_path / "ours", steps=20_000, slope=0.01)
    published = write_reference(tmp_path / "p.json.gz", seed_curves("dmc_walker_stand", [300, 400, 500]))
    assert reference_run.main(["report", "dmc:walker_stand", "--runs", str(runs), "--ours", str(ours),
                               "--published", str(published)]) == 0
    out = capsys.readouterr().out.splitlines()
    row = next(line for line in out if line.split("|")[0].strip() == "20000")
    assert [c.strip() for c in row.split("|")][:3] == ["20000", "130.0*", "155.0"]
    assert [line for line in out if line.startswith("*")] == [
        "* a window the run has not finished (the reference code reached 15000 env steps): the mean of its episodes "
        "so far"]
    # a finished run whose episodes end every 1 002 env steps (501 agent steps, as the reference's): the last end,
    # 19 038, is short of 20k, but the next would be past it, so the 20k window is complete
    lines = [json.dumps({"step": s, "episode/score": 100.0}) for s in range(1002, 20_000, 1002)]
    (logdir / "scores.jsonl").write_text("\n".join(lines) + "\n")
    assert reference_run.main(["report", "dmc:walker_stand", "--runs", str(runs), "--ours", str(ours),
                               "--published", str(published)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert next(line for line in out if line.split("|")[0].strip() == "20000").split("|")[1].strip() == "100.0"
    assert not any(line.startswith("*") for line in out)

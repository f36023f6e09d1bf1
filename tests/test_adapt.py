"""Tests of issue 9: adapting a trained agent to a shifted domain (:mod:`mbrl.runs.adapt`), the mixed replay
(:class:`mbrl.replay.MixedReplay`), merging two agents per module (:mod:`mbrl.runs.merge`), continual sequences
(:mod:`mbrl.runs.continual`) and their command line (:mod:`dreamshift.adapt`, :mod:`dreamshift.adapt_eval`,
:mod:`dreamshift.continual`, :mod:`dreamshift.merge`).

A tiny base run (``TINY_RUN``: 200 env steps on dmc:cartpole_balance, episodes of 100 env steps) is trained once
per module; adaptations use ~100 target env steps."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RUN, override

from dreamshift import main
from envs.errors import CheckpointError, ConfigError
from experiments import results
from mbrl.config import build_config
from mbrl.replay import MixedReplay, Replay
from mbrl.runs import checkpoint
from mbrl.runs.adapt import adapt, alpha_sweep, stage_report
from mbrl.runs.continual import continual
from mbrl.runs.merge import MODULES, merge_agent_states, merged_agents, module_of, parse_alpha
from mbrl.runs.train import train
from shifts.conditions import other_levels, parse_target

IMG = (4, 4, 3)
ADAPT_STEPS = 100
FAST = {"prefill": "16"}  # two agent sequences of batch_length 8 before updates start


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` -> sha256 (to check a run is left untouched)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _keep_threads():
    """Runs set torch's threads to their ``threads=1``; restore the default for the other test files."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A tiny trained clean run (shared, read only)."""
    threads = torch.get_num_threads()
    try:
        return train(build_config(TINY_RUN + [f"run_dir={tmp_path_factory.mktemp('adapt') / 'base'}"]))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def adapted(base_run, tmp_path_factory) -> Path:
    """``base_run`` adapted to color:5 for 100 env steps with mix 0.5 (shared, read only)."""
    threads = torch.get_num_threads()
    before = tree(base_run)
    try:
        out = adapt(base_run, "color:5", ADAPT_STEPS, 0.5, 0.1, tmp_path_factory.mktemp("adapt") / "ad",
                    overrides=FAST)
    finally:
        torch.set_num_threads(threads)
    assert tree(base_run) == before, "adapting must not modify the base run"
    return out


# ------------------------------------------------------------------------------------------------ mixed replay
def _buffer(value: float, n: int = 50, seed: int = 0) -> Replay:
    """A buffer whose every step has reward ``value`` (marks the source of a sampled sequence)."""
    r = Replay(1000, 1, IMG, 1, seed=seed)
    for t in range(n):
        r.add(0, {"image": np.zeros(IMG, np.uint8), "action": np.zeros(1, np.float32), "reward": value,
                  "is_first": t == 0, "is_terminal": False})
    return r


@pytest.mark.parametrize(("mix", "batch"), [(0.25, 16), (0.25, 2), (0.5, 5), (0.0, 8), (1.0, 8)])
@pytest.mark.slow
def test_mixed_replay_honours_the_mix_fraction(mix, batch):
    mixed = MixedReplay(_buffer(1.0), [_buffer(-1.0, seed=1)], mix, seed=0)
    n_batches = 400
    from_source = 0
    for _ in range(n_batches):
        b = mixed.sample(batch, 5)
        assert b["reward"].shape == (batch, 5)
        rows = b["reward"][:, 0]
        assert torch.all(b["reward"] == rows[:, None])  # a sequence never mixes sources
        from_source += int((rows < 0).sum())
    total = n_batches * batch
    assert mixed.counts == {"target": total - from_source, "sources": [from_source]}  # counted as sampled
    if mix in (0.0, 1.0):
        assert from_source == mix * total  # exact at the ends
    else:
        assert abs(from_source / total - mix) < 0.03, from_source / total
    assert mixed.source_fraction == from_source / total


def test_mixed_replay_shares_sources_evenly_and_shuffles_rows():
    mixed = MixedReplay(_buffer(1.0), [_buffer(-1.0, seed=1), _buffer(-2.0, n=500, seed=2)], 0.5, seed=3)
    first_rows = set()
    for _ in range(200):
        rows = mixed.sample(8, 4)["reward"][:, 0]
        assert int((rows < 0).sum()) == 4  # 0.5 x 8 exactly
        first_rows.add(float(rows[0]))
    # each earlier source gets an equal share whatever its size (50 vs 500 steps)
    assert mixed.counts["sources"] == [400, 400] and mixed.counts["target"] == 800
    assert first_rows == {1.0, -1.0, -2.0}  # rows are shuffled, not target-first


def test_mixed_replay_writes_only_the_target_and_checks_input():
    target, source = _buffer(1.0, n=3), _buffer(-1.0)
    mixed = MixedReplay(target, [source], 0.5)
    before = source.data["reward"].copy()
    mixed.add(0, {"image": np.zeros(IMG, np.uint8), "action": np.zeros(1, np.float32), "reward": 7.0,
                  "is_first": False, "is_terminal": False})
    assert len(mixed) == len(target) == 4 and mixed.total_added == 4
    assert np.array_equal(source.data["reward"], before)
    assert not mixed.can_sample(5)  # the target holds 4 < 5 steps and mix < 1
    assert MixedReplay(target, [source], 1.0).can_sample(5)  # only the sources are needed
    with pytest.raises(ValueError, match="mix"):
        MixedReplay(target, [source], 1.5)
    with pytest.raises(ValueError, match="source"):
        MixedReplay(target, [], 0.5)
    with pytest.raises(ValueError, match="layout"):
        MixedReplay(target, [Replay(100, 1, (8, 8, 3), 1)], 0.5)


# ------------------------------------------------------------------------------------------------ adapt
@pytest.mark.slow
def test_an_adaptation_stopped_before_its_first_env_step_leaves_nothing(base_run, tmp_path, monkeypatch):
    """Ctrl-C after config.json was written but before any env step: what the new adaptation wrote is removed,
    so the same command (or ``continual --resume`` for its stage) starts it again; a given empty --out stays."""
    from mbrl.runs import adapt as adapt_mod
    from mbrl.runs.train import TrainingInterrupted

    def interrupted(*args, **kwargs):
        assert (Path(args[5]) / "config.json").is_file()  # written before the loop
        raise KeyboardInterrupt

    monkeypatch.setattr(adapt_mod, "run_loop", interrupted)
    for made in (False, True):
        out = tmp_path / f"ad{int(made)}"
        if made:
            out.mkdir()
        with pytest.raises(TrainingInterrupted) as info:
            adapt(base_run, "color:5", ADAPT_STEPS, 0.5, 0.1, out, overrides=FAST)
        assert info.value.checkpoint is None and info.value.run_dir == out
        assert out.is_dir() == made
        if made:  # the lock file stays (another process may hold it); a new run may use the directory
            assert [p.name for p in out.rglob("*")] in ([], [".lock"])


@pytest.mark.slow
def test_adapt_writes_a_run_that_continues_the_base_on_the_target(base_run, adapted):
    meta = json.loads((adapted / "config.json").read_text())
    base_meta = json.loads((base_run / "config.json").read_text())
    assert meta["adapted_from"] == str(base_run) and meta["target"] == "color:5"
    assert meta["conditions"] == [["color", 5]] and meta["mix"] == 0.5 and meta["lr_scale"] == 0.1
    assert meta["replay_sources"] == [str(base_run)] and meta["base_env_steps"] == 200
    cfg, base_cfg = meta["config"], base_meta["config"]
    assert cfg["model"] == base_cfg["model"] and cfg["encoder"] == base_cfg["encoder"]
    assert cfg["optim"]["lr"] == pytest.approx(0.1 * base_cfg["optim"]["lr"])
    assert cfg["optim"]["actor_lr"] == pytest.approx(0.1 * base_cfg["optim"]["actor_lr"])
    assert cfg["steps"] == ADAPT_STEPS and cfg["run_dir"] == str(adapted)

    state, base_state = checkpoint.load_state(adapted), checkpoint.load_state(base_run)
    c = state["counters"]
    assert (c["env_steps"], c["agent_steps"], c["episodes"]) == (ADAPT_STEPS, ADAPT_STEPS // 2, 1)
    assert c["updates"] > 0
    # every sampled sequence is counted, from the target or the base replay
    assert c["mix_counts"]["target"] + sum(c["mix_counts"]["sources"]) == c["updates"] * 2
    assert sum(c["mix_counts"]["sources"]) > 0 and c["mix_counts"]["target"] > 0
    # optimiser: the base run's moments, continued (no new warm-up) at the scaled learning rate
    groups = state["optim"]["wm"]["opt"]["param_groups"]
    assert [g["base_lr"] for g in groups] == pytest.approx([0.1 * g["base_lr"]
                                                             for g in base_state["optim"]["wm"]["opt"]["param_groups"]])
    assert state["optim"]["wm"]["updates"] == base_state["optim"]["wm"]["updates"] + c["updates"]
    # weights moved away from the base, but little (lr x 0.1, few updates)
    changed = [k for k, v in state["agent"].items() if not torch.equal(v, base_state["agent"][k])]
    assert any(k.startswith("wm.encoder.") for k in changed) and any(k.startswith("ac.actor.") for k in changed)
    # the checkpoint holds only the new target data: shifted frames of one 50-step episode (+ final obs)
    replay = Replay(5000, 1, (32, 32, 3), 1)
    replay.load(adapted / "checkpoint" / state["replay_file"])
    assert len(replay) == ADAPT_STEPS // 2 + 1
    recs = [json.loads(line) for line in (adapted / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in recs if r["kind"] == "train"] == [50, 100]


def test_adapted_frames_are_the_shifted_env(base_run, adapted):
    """The target replay holds frames of the color:5 env, not clean ones (same start state, other pixels)."""
    state, base_state = checkpoint.load_state(adapted), checkpoint.load_state(base_run)
    shifted, clean = Replay(5000, 1, (32, 32, 3), 1), Replay(5000, 1, (32, 32, 3), 1)
    shifted.load(adapted / "checkpoint" / state["replay_file"])
    clean.load(base_run / "checkpoint" / base_state["replay_file"])
    mean_shift = np.abs(shifted.data["image"][0, 0].astype(float) - clean.data["image"][0, 0].astype(float)).mean()
    assert mean_shift > 10


@pytest.mark.slow
def test_frozen_encoder_stays_frozen(tmp_path):
    base = train(build_config(override(TINY_RUN, "encoder_mode=frozen", "steps=100", f"run_dir={tmp_path / 'base'}")))
    out = adapt(base, "gaussian_noise:5", 60, 0.5, 0.5, tmp_path / "ad", overrides=FAST)
    a, b = checkpoint.load_state(out)["agent"], checkpoint.load_state(base)["agent"]
    enc = [k for k in a if k.startswith("wm.encoder.")]
    assert enc and all(torch.equal(a[k], b[k]) for k in enc)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("wm.rssm."))  # the rest trained


@pytest.mark.slow
def test_stage_report_scores_target_clean_levels_and_data(adapted, tmp_path):
    run = tmp_path / "ad"
    shutil.copytree(adapted, run)
    path = stage_report(run, episodes=1, levels=True)
    report = json.loads(path.read_text())
    assert [(r["role"], r["condition"]) for r in report["results"]] == [
        ("target", "color:5"), ("clean", "clean"), ("level", "color:1"), ("level", "color:2"),
        ("level", "color:3"), ("level", "color:4")]
    assert all(0.0 <= r["return_mean"] <= 100.0 and r["n"] == 1 for r in report["results"])
    d = report["data"]
    assert (d["target_env_steps"], d["base_env_steps"], d["fraction"]) == (ADAPT_STEPS, 200, 0.5)
    assert d["sequences_target"] + sum(d["sequences_sources"].values()) > 0
    assert not list((run / "eval").glob(".*")), "temp files left behind"


@pytest.mark.slow
def test_resume_continues_an_adapted_run(adapted, tmp_path):
    run = tmp_path / "ad"
    shutil.copytree(adapted, run)
    before = checkpoint.load_state(run)["counters"]
    adapt(None, None, ADAPT_STEPS + 60, resume=run)
    after = checkpoint.load_state(run)["counters"]
    assert after["env_steps"] == ADAPT_STEPS + 60 and after["updates"] > before["updates"]
    assert sum(after["mix_counts"]["sources"]) > sum(before["mix_counts"]["sources"])  # counts carried on


def test_adapt_refuses_to_overwrite_an_existing_out(base_run, adapted):
    before = tree(adapted)
    with pytest.raises(ConfigError, match="--resume"):
        adapt(base_run, "color:5", 50, 0.5, 0.1, adapted)
    assert tree(adapted) == before


# ------------------------------------------------------------------------------------------------ merging
def test_merge_endpoints_are_bit_exact_and_half_is_the_midpoint(base_run, adapted):
    base = checkpoint.load_state(base_run)["agent"]
    ad = checkpoint.load_state(adapted)["agent"]
    at0 = merged_agents(base_run, adapted, 0.0).state_dict()
    at1 = merged_agents(base_run, adapted, "1").state_dict()
    half = merged_agents(base_run, adapted, 0.5).state_dict()
    assert all(torch.equal(at0[k], base[k]) for k in base)
    assert all(torch.equal(at1[k], ad[k]) for k in ad)
    moved = [k for k in ad if torch.is_floating_point(ad[k]) and not torch.equal(ad[k], base[k])]
    assert moved
    for k in moved:
        assert torch.allclose(half[k], (base[k] + ad[k]) / 2, atol=1e-6)


@pytest.mark.parametrize("module", MODULES)
def test_per_module_alpha_touches_only_that_module(base_run, adapted, module):
    base = checkpoint.load_state(base_run)["agent"]
    ad = checkpoint.load_state(adapted)["agent"]
    merged = merge_agent_states(base, ad, parse_alpha(f"{module}=0"))  # others keep 1 (adapted)
    own = [k for k in ad if module_of(k) == module]
    assert own and any(not torch.equal(ad[k], base[k]) for k in own)  # the test can fail
    for k in ad:
        assert torch.equal(merged[k], base[k] if module_of(k) == module else ad[k]), k


def test_merge_cli_two_runs_writes_a_loadable_run(base_run, adapted, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["merge", str(base_run), str(adapted), "--alpha", "encoder=0.5,actor_critic=0", "--out",
                 str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    meta = json.loads((out / "config.json").read_text())
    assert meta["merged_from"] == [str(base_run), str(adapted)]
    assert meta["alpha"] == {"encoder": 0.5, "world_model": 1.0, "actor_critic": 0.0}
    assert meta["target"] == "color:5"
    state = checkpoint.load_state(out)
    base = checkpoint.load_state(base_run)["agent"]
    assert all(torch.equal(state["agent"][k], base[k]) for k in base if k.startswith("ac."))
    assert state["replay_file"] is None


def test_merge_cli_single_run_form_still_merges_with_pretrained_weights(base_run, tmp_path, capsys):
    # the scratch cnn has no pretrained weights: the one-run form still reaches mbrl.runs.merge.merge_run
    assert main(["merge", str(base_run), "--alpha", "0.5", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "pretrained" in err
    assert main(["merge", str(base_run), "--alpha", "encoder=0.5"]) == 2
    assert "two runs" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_merge_refuses_different_model_configs(base_run, tmp_path):
    from envs import files
    from mbrl.agent import Agent
    from mbrl.config import model_hash, to_dict

    other = tmp_path / "other"
    cfg = build_config(override(TINY_RUN, "model.deter=128", f"run_dir={other}"))
    files.write_json(other / "config.json", {"config": to_dict(cfg), "config_hash": model_hash(cfg)})
    checkpoint.save(other, Agent(cfg, 1), None, {"env_steps": 0, "agent_steps": 0, "updates": 0, "episodes": 0})
    with pytest.raises(ConfigError, match=r"model\.deter"):
        merged_agents(base_run, other, 0.5)


@pytest.mark.slow
def test_alpha_sweep_evaluates_each_alpha_on_target_and_clean(base_run, adapted, tmp_path):
    run = tmp_path / "ad"
    shutil.copytree(adapted, run)
    path = alpha_sweep(base_run, run, ["0", "encoder=0.5"], episodes=1)
    sweep = json.loads(path.read_text())
    assert [row["alpha_name"] for row in sweep["sweep"]] == ["0", "encoder=0.5,world_model=1,actor_critic=1"]
    for row in sweep["sweep"]:
        assert [r["condition"] for r in row["results"]] == ["color:5", "clean"]
        assert all(0.0 <= r["return_mean"] <= 100.0 for r in row["results"])


@pytest.mark.slow
def test_adapt_eval_cli_writes_one_leaderboard_row_per_alpha(base_run, adapted, tmp_path, capsys):
    run = tmp_path / "ad"
    shutil.copytree(adapted, run)
    assert main(["adapt-eval", str(base_run), str(run), "--alpha", "0,1", "--episodes", "1"]) == 0
    assert f"records: {results.run_results_dir(run)} (leaderboard: dreamshift leaderboard {run})" in \
        capsys.readouterr().out
    rdir = results.run_results_dir(run)
    assert sorted(p.name for p in rdir.glob("*.jsonl")) == [
        "color-5-seed0-alpha0.jsonl", "color-5-seed0-alpha1.jsonl", "none-0-seed0-alpha0.jsonl",
        "none-0-seed0-alpha1.jsonl"]
    recs = results.read_dir(rdir)
    mode = json.loads((run / "eval" / "alpha-sweep.json").read_text())["run_meta"]["encoder_mode"]
    assert {(r["trial"], r["label"], r["encoder_mode"]) for r in recs} == {
        ("ad@alpha=0", "cnn@alpha=0", f"{mode}+merge:0"), ("ad@alpha=1", "cnn@alpha=1", f"{mode}+merge:1")}
    assert {(r["shift"], r["severity"]) for r in recs} == {("none", 0), ("color", 5)} and len(recs) == 4
    assert main(["leaderboard", str(run), "--out", str(tmp_path / "lb"), "--reps", "100"]) == 0
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert md.count("| cnn@alpha=0 ") == 1 and md.count("| cnn@alpha=1 ") == 1


def test_condition_shift_names_conditions_in_the_suite_vocabulary():
    assert results.condition_shift([]) == ("none", 0)
    assert results.condition_shift([["color", 5]]) == ("color", 5)
    assert results.condition_shift([["color", 3], ["fog", 3]]) == ("color+fog", 3)
    assert results.condition_shift([["color", 5], ["fog", 2]]) == ("color:5+fog:2", 5)


# ------------------------------------------------------------------------------------------------ continual
@pytest.mark.slow
def test_continual_two_stages_evaluates_every_earlier_condition(base_run, tmp_path):
    before = tree(base_run)
    path = continual(base_run, "color:5;gaussian_noise:5", 60, mix=0.5, lr_scale=0.1, out=tmp_path / "seq",
                     eval_episodes=1, levels=False, overrides=FAST)
    summary = json.loads(path.read_text())
    stages = summary["stages"]
    assert [s["target"] for s in stages] == ["clean", "color:5", "gaussian_noise:5"]
    got = [[(r["role"], r["condition"]) for r in s["results"]] for s in stages]
    assert got[0] == [("clean", "clean"), ("later", "color:5"), ("later", "gaussian_noise:5")]
    assert got[1] == [("target", "color:5"), ("clean", "clean")]
    assert got[2] == [("target", "gaussian_noise:5"), ("clean", "clean"), ("earlier", "color:5")]
    assert set(summary["matrix"]["stage2 gaussian_noise:5"]) == {"clean", "color:5", "gaussian_noise:5"}
    # one lineage: stage 2 continues stage 1 and mixes in both earlier data sets
    stage1, stage2 = Path(stages[1]["run"]), Path(stages[2]["run"])
    meta2 = json.loads((stage2 / "config.json").read_text())
    assert meta2["adapted_from"] == str(stage1)
    assert meta2["replay_sources"] == [str(base_run), str(stage1)]
    assert stages[2]["data"]["lineage_target_env_steps"] == 120
    assert stages[2]["data"]["lineage_fraction"] == pytest.approx(120 / 200)
    c2 = checkpoint.load_state(stage2)["counters"]
    sources = c2["mix_counts"]["sources"]
    assert len(sources) == 2 and min(sources) > 0  # both earlier data sets are replayed (equal shares: above)
    assert c2["mix_counts"]["target"] + sum(sources) == 2 * c2["updates"]
    assert tree(base_run) == before



@pytest.mark.slow
def test_continual_cli_writes_each_stages_records(base_run, tmp_path, capsys):
    out = tmp_path / "seq"
    assert main(["continual", str(base_run), "--stages", "color:5", "--steps", "60", "--out", str(out),
                 "--eval-episodes", "1", "--no-levels", "--set", "prefill=16"]) == 0
    stage = Path(json.loads((out / "continual.json").read_text())["stages"][1]["run"])
    assert f"records: {results.run_results_dir(stage)}" in capsys.readouterr().out
    recs = results.read_dir(results.run_results_dir(stage))
    assert {(r["shift"], r["severity"]) for r in recs} == {("none", 0), ("color", 5)}
    assert {r["trial"] for r in recs} == {stage.name}
    assert not results.run_results_dir(base_run).exists()  # the base run is read only

# ------------------------------------------------------------------------------------------------ bad input
def test_parse_target_and_levels():
    assert parse_target("color:5") == (("color", 5),)
    assert parse_target("color:5, fog:2") == (("color", 5), ("fog", 2))
    assert other_levels((("color", 5),)) == [(("color", lvl),) for lvl in (1, 2, 3, 4)]


BAD = [
    pytest.param(["--target", "colour:5"], ("unknown shift kind", "'colour'", "color"), id="unknown-kind"),
    pytest.param(["--target", "color:6"], ("color:6", "1-5"), id="severity-too-high"),
    pytest.param(["--target", "color:0"], ("1-5",), id="severity-zero"),
    pytest.param(["--target", "color"], ("KIND:SEVERITY",), id="no-severity"),
    pytest.param(["--target", "color:5", "--mix", "1.5"], ("--mix", "[0, 1]"), id="mix-too-high"),
    pytest.param(["--target", "color:5", "--mix", "-0.1"], ("--mix",), id="mix-negative"),
    pytest.param(["--target", "color:5", "--lr-scale", "0"], ("--lr-scale",), id="lr-scale-zero"),
    pytest.param(["--target", "color:5", "--set", "model.deter=8"], ("model.deter", "allowed"), id="model-key"),
    pytest.param(["--target", "color:5", "--steps", "0"], ("--steps",), id="no-steps"),
]


@pytest.mark.parametrize(("extra", "needles"), BAD)
def test_adapt_cli_bad_input_is_one_error_line_and_writes_nothing(base_run, tmp_path, capsys, extra, needles):
    before = tree(base_run)
    out = tmp_path / "out"
    args = ["adapt", str(base_run), "--out", str(out), *extra]
    if "--steps" not in extra:
        args += ["--steps", "50"]
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not out.exists()
    assert tree(base_run) == before


def test_cli_missing_run_and_bad_alpha(base_run, adapted, tmp_path, capsys):
    assert main(["adapt", str(tmp_path / "nope"), "--target", "color:5", "--steps", "50", "--out",
                 str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["merge", str(base_run), str(adapted), "--alpha", "1.5", "--out", str(tmp_path / "m")]) == 2
    assert "[0, 1]" in capsys.readouterr().err
    assert main(["merge", str(base_run), str(adapted), "--alpha", "decoder=0.5", "--out", str(tmp_path / "m")]) == 2
    assert "encoder, world_model, actor_critic" in capsys.readouterr().err
    assert main(["adapt-eval", str(base_run), str(adapted), "--alpha", "0,2"]) == 2
    assert "[0, 1]" in capsys.readouterr().err
    assert main(["continual", str(base_run), "--stages", "color:5;color:5", "--steps", "50", "--out",
                 str(tmp_path / "c")]) == 2
    assert "repeats" in capsys.readouterr().err
    assert main(["continual", str(base_run), "--stages", "color:5;fog:9", "--steps", "50", "--out",
                 str(tmp_path / "c")]) == 2
    assert "fog:9" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "m").exists() and not (tmp_path / "c").exists()
    with pytest.raises(CheckpointError, match="no replay"):  # a merged run has no replay to mix in
        out = tmp_path / "merged"
        assert main(["merge", str(base_run), str(adapted), "--alpha", "0.5", "--out", str(out)]) == 0
        adapt(out, "color:5", 50, 0.5, 0.1, tmp_path / "from-merged")
    assert not (tmp_path / "from-merged").exists()


@pytest.mark.slow
def test_adapt_cli_adapts_and_prints_the_stage_report(base_run, tmp_path, capsys):
    out = tmp_path / "ad"
    assert main(["adapt", str(base_run), "--target", "gaussian_noise:5", "--steps", "60", "--mix", "0", "--out",
                 str(out), "--eval-episodes", "1", "--no-levels", "--set", "prefill=16", "threads=1"]) == 0
    printed = capsys.readouterr().out
    assert f"adapted run: {out}" in printed
    assert "target  gaussian_noise:5" in printed and "clean   clean" in printed
    assert "60 target env steps = 30.0% of the base run's 200" in printed
    state = checkpoint.load_state(out)
    assert state["counters"]["mix_counts"]["sources"] == [] and state["counters"]["mix_counts"]["target"] > 0
    assert json.loads((out / "config.json").read_text())["mix"] == 0.0
    report = json.loads((out / "eval" / "adapt-report.json").read_text())
    assert [r["condition"] for r in report["results"]] == ["gaussian_noise:5", "clean"]
    # results-schema records of the report (clean written none/0), which the leaderboard accepts
    assert f"records: {results.run_results_dir(out)} (leaderboard: dreamshift leaderboard {out})" in printed
    rdir = results.run_results_dir(out)
    assert sorted(p.name for p in rdir.glob("*.jsonl")) == ["gaussian_noise-5-seed0.jsonl", "none-0-seed0.jsonl"]
    recs = results.read_dir(rdir)
    assert {(r["shift"], r["severity"]) for r in recs} == {("none", 0), ("gaussian_noise", 5)}
    assert {r["trial"] for r in recs} == {"ad"} and {r["label"] for r in recs} == {"cnn"}
    assert sorted(r["return"] for r in recs) == sorted(x for r in report["results"] for x in r["returns"])
    assert all(r["env_steps_trained"] == report["run_meta"]["env_steps_trained"] for r in recs)
    assert main(["leaderboard", str(out), "--out", str(tmp_path / "lb"), "--reps", "100"]) == 0
    assert (tmp_path / "lb" / "leaderboard.md").read_text().count("| cnn ") == 1


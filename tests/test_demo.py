"""Tests for ``dreamshift demo`` (:mod:`experiments.demo`): the combined table marks an agent at the random
policy's level as not distinguishable from random and a clearly better one as above it; the demo end to end
(tiny models, real dm_control, short episodes) prints that one table with the random policy and the wall time."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_RUN

from experiments import demo, results

CONDITIONS = [("none", 0), ("color", 1), ("color", 5), ("gaussian_noise", 1), ("gaussian_noise", 5)]


def _records(label: str, mean: float, spread: float, episodes: int = 5, seed: int = 0) -> list[dict]:
    """Records of one agent on the quick suite's conditions: returns ``mean`` + uniform noise of +- ``spread``."""
    rng = np.random.default_rng(seed)
    run = {"env": demo.ENV, "encoder": label, "encoder_mode": "full", "size": "size1m", "seed": 0, "eval_seed": 0,
           "env_steps_trained": 3000, "config_hash": "x"}
    out = []
    for shift, severity in CONDITIONS:
        eps = [{"episode_seed": 10_000 + i, "return": float(mean + rng.uniform(-spread, spread)), "length": 1000}
               for i in range(episodes)]
        out += results.episode_records(run, shift, severity, eps, trial=label, label=label)
    return out


def test_combined_table_marks_the_random_level_row_and_not_the_better_one():
    records = (_records(demo.RANDOM_LABEL, 40, 30, seed=0) + _records("flat", 45, 30, seed=1)
               + _records("good", 600, 30, seed=2) + _records("worse", 1, 1, seed=3))
    table = demo.combined_table(records, reps=500).set_index("agent")
    assert table.loc["flat", "vs_random"] == demo.NOT_DISTINGUISHABLE
    assert table.loc["good", "vs_random"] == "above random"
    assert table.loc["worse", "vs_random"] == "below random"
    assert table.loc[demo.RANDOM_LABEL, "vs_random"] == "reference"
    # the leaderboard's terms: normalised return, mean +- SE over episodes, a CI that contains the score
    assert table.loc["good", "id"] == pytest.approx((np.mean([r["return"] for r in records if r["label"] == "good"
                                                              and r["shift"] == "none"]) - 40.0) / 960.0)
    assert table.loc["good", "id_se"] > 0 and table.loc["good", "episodes"] == 5
    for row in table.itertuples():
        assert row.score_lo <= row.score <= row.score_hi
    text = demo.format_table(demo.combined_table(records, reps=500))
    lines = text.splitlines()
    assert [i for i, line in enumerate(lines) if demo.NOT_DISTINGUISHABLE in line] == \
        [i for i, line in enumerate(lines) if line.startswith("| flat")]
    assert lines[2].startswith("| good")  # best score first


def test_combined_table_refuses_mixed_envs():
    records = _records("a", 40, 1) + [{**r, "env": "dmc:walker_walk", "task": "walker_walk"}
                                      for r in _records("b", 40, 1)]
    with pytest.raises(ValueError, match="one env"):
        demo.combined_table(records)


@pytest.mark.slow
def test_demo_end_to_end_prints_one_table_with_the_zoo_and_the_random_policy(cli, tmp_path, monkeypatch):
    """Tiny models, 100-step episodes, 2 episodes per condition: the state oracle trained briefly, the zoo's entry
    of the same env (an exported run) evaluated from a copy, the random policy, one table."""
    from conftest import override, write_untrained_run

    from experiments.zoo import export

    zoo = tmp_path / "zoo"
    for name, env in (("tiny-cnn", "dmc:cartpole_balance"), ("other-env", "dmc:walker_stand")):
        run = write_untrained_run(tmp_path / f"src-{name}", override(TINY_RUN, f"env={env}"))
        export(run, zoo / name)
    before = sorted(p.relative_to(zoo) for p in zoo.rglob("*"))
    monkeypatch.setattr(demo, "ZOO_DIR", zoo)
    res = cli("demo", *TINY_RUN, "eval_episodes=2", "run_dir=demo")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    headers = [line for line in lines if line.startswith("| agent")]
    assert len(headers) == 1 and "vs random" in headers[0] and "score [95% CI]" in headers[0]
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| agent")]
    assert sorted(row.split("|")[1].strip() for row in rows) == sorted(["state oracle", "zoo: tiny-cnn",
                                                                        demo.RANDOM_LABEL])
    assert any("wall time:" in line for line in lines)
    root = tmp_path / "demo"
    assert (root / "table.md").is_file()
    for run in ("state-oracle", "zoo-tiny-cnn", "random-policy"):
        recs = results.read_dir(root / run / "eval" / "results")
        assert len(recs) == 2 * len(CONDITIONS)
        assert {r["episode_seed"] for r in recs} == {r["episode_seed"] for r in results.read_dir(
            root / "random-policy" / "eval" / "results")}
    assert sorted(p.relative_to(zoo) for p in zoo.rglob("*")) == before  # the zoo itself is not written to


def test_zoo_agents_are_the_entries_of_the_env(tmp_path):
    from conftest import override, write_untrained_run

    from experiments.zoo import export

    for name, env in (("b", "dmc:cartpole_balance"), ("a", "dmc:cartpole_balance"), ("w", "dmc:walker_stand")):
        export(write_untrained_run(tmp_path / f"src-{name}", override(TINY_RUN, f"env={env}")), tmp_path / "zoo" / name)
    (tmp_path / "zoo" / "notes").mkdir()  # not an entry
    assert demo.zoo_agents("dmc:cartpole_balance", tmp_path / "zoo") == [
        ("zoo: a", tmp_path / "zoo" / "a"), ("zoo: b", tmp_path / "zoo" / "b")]
    assert demo.zoo_agents("dmc:cheetah_run", tmp_path / "zoo") == []
    assert demo.zoo_agents("dmc:cartpole_balance", tmp_path / "nowhere") == []

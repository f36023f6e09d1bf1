"""Issue 18: ``dreamshift evaluate RUN [--suite S]`` writes results-schema records (one file per condition under
``RUN/eval/results/``, built by the sweep's record builder), and ``dreamshift leaderboard`` reads a run's
``eval/results`` or the run directory itself into the same table a sweep's ``results/`` gives."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY_RUN, write_untrained_run

from experiments import results
from experiments.leaderboard import build


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory with a real (untrained) checkpoint of the TINY config, written in-process."""
    return write_untrained_run(tmp_path_factory.mktemp("eval_results") / "run", TINY_RUN)


def _md_columns(md: str) -> list[str]:
    """The column names of the first Markdown table."""
    head = next(line for line in md.splitlines() if line.startswith("| "))
    return [c.strip() for c in head.strip("|").split("|")]


def _header(path: Path) -> list[str]:
    with path.open() as f:
        return next(csv.reader(f))


@pytest.mark.slow
def test_evaluate_suite_and_clean_feed_the_leaderboard(tiny_run, tmp_path, cli):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    res = cli("evaluate", str(run), "--suite", "contrast:5", "--episodes", "1")
    assert res.returncode == 0, res.stderr
    assert len(list((run / "eval").glob("suite-*.json"))) == 1  # the suite's own summary is still written
    rdir = results.run_results_dir(run)
    files = sorted(p.name for p in rdir.glob("*.jsonl"))
    assert files == ["contrast-5-seed0.jsonl", "none-0-seed0.jsonl"]
    recs = results.read_dir(rdir)  # validates every record
    assert {(r["shift"], r["severity"]) for r in recs} == {("none", 0), ("contrast", 5)}
    assert {r["trial"] for r in recs} == {"run"} and {r["label"] for r in recs} == {"cnn"}
    assert len(recs) == 2 and all(r["env_steps_trained"] == 2 for r in recs)

    # the records are the ones the sweep's builder makes from the suite summary
    summary = json.loads(next((run / "eval").glob("suite-*.json")).read_text())
    assert sorted(results.from_suite(summary, "run"), key=json.dumps) == sorted(recs, key=json.dumps)

    # the clean evaluation replaces the clean condition's file: no episode recorded twice
    before = (rdir / "contrast-5-seed0.jsonl").read_bytes()
    assert cli("evaluate", str(run), "--episodes", "1").returncode == 0
    assert cli("evaluate", str(run), "--suite", "contrast:5", "--episodes", "1").returncode == 0
    assert (rdir / "contrast-5-seed0.jsonl").read_bytes() == before
    assert len(results.read_dir(rdir)) == 2

    # the run's results directory and the run directory itself both make a leaderboard
    for source, out in ((rdir, tmp_path / "lb"), (run, tmp_path / "lb-run")):
        res = cli("leaderboard", str(source), "--out", str(out), "--reps", "100")
        assert res.returncode == 0, res.stderr
        assert (out / "leaderboard.csv").is_file() and (out / "index.html").is_file()
    lb, lb_run = (tmp_path / d / "leaderboard.csv" for d in ("lb", "lb-run"))
    assert lb.read_bytes() == lb_run.read_bytes()
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert md.count("| cnn ") == 1 and "–" in md  # a single method: no baseline comparison, P(>cnn) is '–'

    # same columns as a sweep's leaderboard (two trials labelled cnn and cnn-small, as tests/test_experiments.py)
    sweep = tmp_path / "sweep" / "results"
    for trial, label in (("t0", "cnn"), ("t1", "cnn-small")):
        results.write(sweep / f"{trial}.jsonl", results.from_suite(summary, trial, label))
    board = build(sweep, tmp_path / "lb-sweep", reps=100)
    assert _header(board["csv"]) == _header(tmp_path / "lb" / "leaderboard.csv")
    assert _md_columns(board["md"].read_text()) == _md_columns(md)
    assert "P(>cnn)" in _md_columns(md)


def test_leaderboard_of_an_unevaluated_run_says_what_to_do(tiny_run, cli):
    res = cli("leaderboard", str(tiny_run), "--out", "lb")
    assert res.returncode == 2 and "dreamshift evaluate" in res.stderr

"""Suites (:mod:`shifts.suites`), suite evaluation (:mod:`mbrl.runs.evaluate`) and the ``dreamshift shifts`` /
``dreamshift evaluate --suite`` commands. Works with or without the scene-level kinds (:mod:`shifts.scene`):
tests that need a scene kind use it when registered and fall back to pixel kinds otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, assert_user_error, tree

from mbrl.runs.evaluate import aggregate, format_table
from shifts import suites
from shifts.base import ShiftError, kinds, make_shift

TINY = TINY_RUN


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny run trained in-process for 200 env steps."""
    from mbrl.config import build_config
    from mbrl.runs.train import train

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("suite") / "run"
    try:
        train(build_config(TINY + [f"run_dir={out}"]))
    finally:
        torch.set_num_threads(threads)
    return out


def quick_or_fallback() -> tuple[str, list[tuple[str, int]]]:
    """``quick`` when its kinds are registered, else a pixel-only list of the same shape."""
    if not suites.missing_kinds("quick"):
        return "quick", suites.get_suite("quick")
    return "contrast:1+5,gaussian_noise:1+5", suites.parse_suite("contrast:1+5,gaussian_noise:1+5")[1]


# ------------------------------------------------------------------------------------------- suites

def test_standard_covers_every_registered_kind():
    suite = suites.get_suite("standard")
    assert suite[0] == ("none", 0)
    assert sorted(suite[1:]) == sorted((k, s) for k in kinds() for s in range(1, 6))
    assert len(suite) == len(set(suite)) == 1 + 5 * len(kinds())
    levels = [make_shift(k, 0).level for k, _ in suite[1:]]
    assert levels == sorted(levels, key=lambda lv: suites.LEVELS.index(lv))  # scene first, then pixel


def test_quick_and_paper_suites():
    assert suites.suite_kinds("quick") == ["color", "gaussian_noise"]
    assert suites.suite_kinds("paper") == ["texture", "lighting", "fog"]
    if suites.missing_kinds("quick"):
        with pytest.raises(ShiftError, match="color"):
            suites.get_suite("quick")
    else:
        quick = suites.get_suite("quick")
        assert quick[0] == ("none", 0) and 3 <= len(quick) <= 7
        assert {s for _, s in quick[1:]} == {1, 5}
    if not suites.missing_kinds("paper"):
        assert suites.get_suite("paper") == [("none", 0), ("texture", 2), ("texture", 5), ("lighting", 2),
                                             ("lighting", 5), ("fog", 2), ("fog", 5)]


def test_unknown_suite_lists_suites():
    with pytest.raises(ShiftError, match="unknown suite 'nope'; suites: grid, paper, quick, standard"):
        suites.get_suite("nope")


def test_unregistered_kind_errors_when_the_suite_is_used(monkeypatch):
    monkeypatch.setitem(suites._SUITES, "future", ("a suite of a kind not written yet",
                                                   lambda: [("gaussian_noise", 1), ("rain", 3)]))
    assert suites.missing_kinds("future") == ["rain"]
    with pytest.raises(ShiftError, match="not available: rain"):
        suites.get_suite("future")


def test_ad_hoc_suites():
    name, conditions = suites.parse_suite("gaussian_noise:1+5, fog:3,contrast:2-3,jpeg")
    assert name == "gaussian_noise:1+5,fog:3,contrast:2-3,jpeg"
    assert conditions == [("none", 0), ("gaussian_noise", 1), ("gaussian_noise", 5), ("fog", 3), ("contrast", 2),
                          ("contrast", 3)] + [("jpeg", s) for s in range(1, 6)]
    for bad, needle in [("nope", "unknown suite or shift kind 'nope'"), ("fog:3,nope:2", "unknown shift kind"),
                        ("fog:7", "severities are 1-5"), ("fog:0", "severities are 1-5"), ("fog:x", "bad severities"),
                        ("", "empty suite")]:
        with pytest.raises(ShiftError, match=needle):
            suites.parse_suite(bad)


def test_aggregate_and_table():
    recs = [{"shift": "none", "severity": 0, "return": r} for r in (100.0, 110.0)]
    recs += [{"shift": "fog", "severity": 5, "return": r} for r in (50.0, 55.0)]
    summary = aggregate(recs)
    fog = next(r for r in summary["results"] if r["shift"] == "fog")
    assert summary["clean_return_mean"] == 105.0 and fog["drop_pct"] == pytest.approx(50.0)
    assert summary["kinds"]["fog"]["drop_pct"] == pytest.approx(50.0)
    table = format_table(summary)
    assert "fog" in table and "52.5 (-50%)" in table and "clean: 105.0" in table


# ------------------------------------------------------------------------------------------- CLI

def test_shifts_list(cli):
    res = cli("shifts", "list")
    assert res.returncode == 0, res.stderr
    assert "suites:" in res.stdout and "kinds:" in res.stdout
    for name in ("standard", "paper", "quick"):
        assert f"  {name} " in res.stdout
    lines = res.stdout.splitlines()
    for kind in kinds():
        assert any(line.split() == [kind, make_shift(kind, 0).level] for line in lines), kind


def test_shifts_gallery_png_grows_with_rows(cli, tmp_path):
    from PIL import Image

    res = cli("shifts", "gallery", "--env", "dmc:cartpole_balance", "--suite", "fog", "--out", "one.png",
              "--size", "32")
    assert res.returncode == 0, res.stderr
    res = cli("shifts", "gallery", "--env", "dmc:cartpole_balance", "--suite", "fog:1,gaussian_noise:5",
              "--out", "two.png", "--size", "32")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "two.png"]  # no temp files left
    with Image.open(tmp_path / "one.png") as one, Image.open(tmp_path / "two.png") as two:
        assert one.format == two.format == "PNG" and one.mode == "RGB"
        assert one.width == two.width and two.height > one.height
        # the clean column of both rows is the same frame
        assert one.width > 6 * 64


def test_shifts_gallery_rejects_bad_input(cli, tmp_path):
    assert_user_error(cli("shifts", "gallery", "--suite", "nope"), "nope", "suites:", "standard")
    assert_user_error(cli("shifts", "gallery", "--suite", "fog:3", "--env", "dmc:walker_fly"), "walker_fly")
    assert tree(tmp_path) == {}


@pytest.mark.slow
def test_evaluate_suite_writes_one_record_per_condition(cli, run_dir):
    suite, conditions = quick_or_fallback()
    res = cli("evaluate", str(run_dir), "--suite", suite, "--episodes", "1")
    assert res.returncode == 0, res.stderr
    path = next((run_dir / "eval").glob("suite-*.json"))
    assert f"results: {path}" in res.stdout
    data = json.loads(path.read_text())
    records = data["episodes"]
    assert [(r["shift"], r["severity"]) for r in records] == conditions
    assert conditions[0] == ("none", 0)
    assert len({r["episode_seed"] for r in records}) == 1  # every condition runs the same episode seed
    keys = {"env", "encoder", "encoder_mode", "shift", "severity", "seed", "episode_seed", "return", "length",
            "env_steps_trained", "config_hash"}
    assert all(keys <= set(r) for r in records)
    assert all(r["env"] == "dmc:cartpole_balance" and r["length"] == 100 and r["env_steps_trained"] == 200
               for r in records)
    assert data["suite"] == suite and data["clean_return_mean"] == records[0]["return"]
    assert {(r["shift"], r["severity"]) for r in data["results"]} == set(conditions)
    # the table: a row per kind, the clean reference
    for kind in {k for k, _ in conditions[1:]}:
        assert any(line.startswith(kind) for line in res.stdout.splitlines()), res.stdout
    assert "clean:" in res.stdout


@pytest.mark.parametrize(("suite", "needles"), [
    pytest.param("nope", ("nope", "suites:", "quick", "kinds:"), id="unknown-suite"),
    pytest.param("fog:3,rain:2", ("unknown shift kind 'rain'", "gaussian_noise"), id="unknown-kind"),
    pytest.param("fog:9", ("severities are 1-5",), id="bad-severity"),
])
def test_evaluate_suite_rejects_bad_input(cli, tmp_path, run_dir, suite, needles):
    before = tree(run_dir)
    assert_user_error(cli("evaluate", str(run_dir), "--suite", suite, "--episodes", "1"), *needles)
    assert tree(run_dir) == before and tree(tmp_path) == {}


def test_evaluate_suite_other_bad_input(cli, tmp_path, run_dir):
    before = tree(run_dir)
    assert_user_error(cli("evaluate", str(run_dir), "--suite", "fog:1", "--episodes", "0"), "--episodes", ">= 1")
    assert_user_error(cli("evaluate", str(run_dir), "--suite", "fog:1", "--alpha", "0.5"), "--suite", "--alpha")
    assert_user_error(cli("evaluate", "no_such_run", "--suite", "fog:1"), "no_such_run")
    assert tree(run_dir) == before and tree(tmp_path) == {}


@pytest.mark.slow
def test_subprocess_unknown_suite_kind(tmp_path, run_dir):
    before = tree(run_dir)
    res = subprocess.run([sys.executable, "-m", "dreamshift", "evaluate", str(run_dir), "--suite", "rain:3"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert_user_error(res, "unknown", "'rain'")
    assert res.stdout == "" and tree(run_dir) == before and tree(tmp_path) == {}

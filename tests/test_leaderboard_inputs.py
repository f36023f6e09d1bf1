"""Bad leaderboard inputs (issue 19 item 5): each kind is one ``error:`` line naming ``file:line``, exit 2, and
nothing is written (no empty ``leaderboard/`` left behind); NaN/infinite/absurd returns and duplicate episodes
are refused instead of silently skewing the statistics."""

from __future__ import annotations

import json

import pytest
from conftest import assert_user_error, tree

from experiments import results
from experiments.leaderboard import build


def _record(**change):
    rec = {"schema": 1, "env": "dmc:cartpole_balance", "suite": "dmc", "task": "cartpole_balance",
           "encoder": "cnn", "label": "cnn", "encoder_mode": "full", "size": "XS", "shift": "none", "severity": 0,
           "seed": 0, "eval_seed": 0, "episode_seed": 10000, "return": 123.5, "success": None, "length": 1000,
           "env_steps_trained": 3000, "code_version": "0.1.0", "config_hash": "abc", "trial": "t0"}
    rec.update(change)
    return rec


def _trial(seed: int, label: str = "cnn", base: float = 400.0) -> list[dict]:
    """One trial's records: two clean and two shifted episodes."""
    out = []
    for shift, severity, ret in (("none", 0, base), ("fog", 3, base / 2)):
        for i in range(2):
            out.append(_record(seed=seed, label=label, encoder=label, trial=f"{label}-s{seed}", shift=shift,
                               severity=severity, episode_seed=10000 + i, **{"return": ret + 10 * seed + i}))
    return out


def _lines(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


@pytest.fixture
def good(tmp_path):
    """``results/`` with two valid trial files (the second file's records start at line 1)."""
    res = tmp_path / "results"
    res.mkdir()
    (res / "a.jsonl").write_text(_lines(_trial(0)))
    (res / "b.jsonl").write_text(_lines(_trial(1)))
    return res


def _bad_line(line: str):
    """Append ``line`` to b.jsonl as its line 5."""
    def make(res):
        with (res / "b.jsonl").open("a") as f:
            f.write(line + "\n")
        return "b.jsonl:5"
    return make


def _empty_file(res):
    (res / "c.jsonl").write_text("")
    return "c.jsonl"


def _blank_file(res):
    (res / "c.jsonl").write_text("\n  \n")
    return "c.jsonl"


def _non_utf8(res):
    (res / "b.jsonl").write_bytes(_lines(_trial(1)[:2]).encode() + b'{"label": "caf\xe9"}\n')
    return "b.jsonl:3"


def _duplicate_across_files(res):
    (res / "c.jsonl").write_text(_lines(_trial(0)[1:2]))  # trial cnn-s0's second episode again
    return "c.jsonl:1"


def _duplicate_in_file(res):
    (res / "b.jsonl").write_text(_lines(_trial(1) + _trial(1)[3:]))
    return "b.jsonl:5"


CASES = {
    "nan-return": (_bad_line(json.dumps(_record(trial="x", **{"return": float("nan")}))), "'return'"),
    "infinite-return": (_bad_line(json.dumps(_record(trial="x", **{"return": float("inf")}))), "'return'"),
    "negative-infinite-return": (_bad_line(json.dumps(_record(trial="x", **{"return": float("-inf")}))), "'return'"),
    "huge-int-return": (_bad_line(json.dumps(_record(trial="x", **{"return": 10**400}))), "'return'"),
    "huge-float-return": (_bad_line(json.dumps(_record(trial="x", **{"return": 1e300}))), "|return| <= 1e9"),
    "absurd-return": (_bad_line(json.dumps(_record(trial="x", **{"return": -2e9}))), "|return| <= 1e9"),
    "return-1e400": (_bad_line(json.dumps(_record(trial="x")).replace("123.5", "1e400")), "'return'"),
    "huge-seed": (_bad_line(json.dumps(_record(trial="x", seed=10**400))), "'seed' must be in [0, 2**63 - 1]"),
    "negative-length": (_bad_line(json.dumps(_record(trial="x", length=-1))), "'length' must be in"),
    "5000-digit-int": (_bad_line(json.dumps(_record(trial="x")).replace("123.5", "9" * 5000)), "not valid JSON"),
    "deeply-nested": (_bad_line("[" * 100_000 + "]" * 100_000), "not valid JSON"),
    "not-json": (_bad_line("{oops"), "not valid JSON"),
    "empty-file": (_empty_file, "no records"),
    "blank-file": (_blank_file, "no records"),
    "non-utf8": (_non_utf8, "not UTF-8"),
    "duplicate-across-files": (_duplicate_across_files, "duplicate record of trial 'cnn-s0'"),
    "duplicate-in-file": (_duplicate_in_file, "duplicate record of trial 'cnn-s1'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_naming_file_and_line_and_writes_nothing(cli, good, tmp_path, case):
    make, needle = CASES[case]
    where = make(good)
    before = tree(tmp_path)
    res = cli("leaderboard", str(good))
    line = assert_user_error(res, str(good / where), needle)
    assert len(line) < 400, line  # a 400-digit number is not echoed in full
    assert res.stdout == ""
    assert tree(tmp_path) == before  # no leaderboard/ (empty or not) next to results/
    assert not (tmp_path / "leaderboard").exists()


def test_duplicate_names_the_first_occurrence(good):
    _duplicate_across_files(good)
    first = r"c\.jsonl:1: duplicate .*episode_seed 10001 \(first at .*a\.jsonl:2\)"
    with pytest.raises(results.ResultsError, match=first):
        results.read_dir(good)


def test_all_empty_input_is_an_error(cli, tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "only.jsonl").write_text("")
    assert_user_error(cli("leaderboard", str(res), "--out", str(tmp_path / "board")), "only.jsonl", "no records")
    assert not (tmp_path / "board").exists()


def test_bad_input_leaves_an_existing_out_dir_unchanged(good, tmp_path):
    out = tmp_path / "board"
    build(good, out, reps=100)
    before = tree(out)
    _bad_line(json.dumps(_record(trial="x", **{"return": float("nan")})))(good)
    with pytest.raises(results.ResultsError, match=r"b\.jsonl:5"):
        build(good, out, reps=100)
    assert tree(out) == before


def test_good_input_still_builds(cli, good, tmp_path):
    res = cli("leaderboard", str(good), "--reps", "100")
    assert res.returncode == 0, res.stderr
    board = json.loads((tmp_path / "leaderboard" / "leaderboard.json").read_text())
    assert board["n_records"] == 8 and board["summary"][0]["seeds"] == 2
    names = {p.name for p in (tmp_path / "leaderboard").iterdir()}
    assert {"leaderboard.csv", "conditions.csv", "leaderboard.json", "leaderboard.md", "index.html",
            "robustness-dmc_cartpole_balance.png", "iqm-dmc_cartpole_balance.svg"} <= names


def test_returns_at_the_bound_are_accepted(tmp_path):
    path = results.write(tmp_path / "r.jsonl", [_record(**{"return": 1e9}),
                                                 _record(episode_seed=1, **{"return": -1e9})])
    assert [r["return"] for r in results.read(path)] == [1e9, -1e9]


def test_write_refuses_a_nan_return(tmp_path):
    with pytest.raises(results.ResultsError, match="'return' must be a finite number"):
        results.write(tmp_path / "r.jsonl", [_record(**{"return": float("nan")})])
    assert not (tmp_path / "r.jsonl").exists()

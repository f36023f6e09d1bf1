"""Bad input through the ``dreamshift`` command line (issue 19): output paths that cannot be written, run paths
that are files, sweep grids that expand to nothing or point outside ``runs/sweeps/``, Ctrl-C, unknown options
after a sub-command, bad ``--device``, truncated replay files, oversized galleries, and the mode of written
files. Each bad input exits with status 2 and one ``error:`` line, without a traceback and without writing
anything (``tree()`` before and after); Ctrl-C exits with 130 and one line naming what was saved and how to
continue.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from conftest import TINY_RUN, assert_user_error, tree, write_untrained_run

TINY = TINY_RUN
GRID_OVERRIDES = {k: v for k, v in (o.split("=", 1) for o in TINY_RUN) if k not in ("env", "wandb_mode")}


@pytest.fixture(scope="module")
def ckpt_run(tmp_path_factory) -> Path:
    """A run directory with a real (untrained) checkpoint of the TINY config, written in-process."""
    return write_untrained_run(tmp_path_factory.mktemp("bad_input") / "run", TINY)


def _grid(path: Path, **change) -> Path:
    data = {"name": "tiny", "envs": ["dmc:cartpole_balance"], "encoders": ["cnn"], "seeds": [0], "steps": 150,
            "overrides": GRID_OVERRIDES, "evaluation": {"suite": "contrast:5", "episodes": 1}, "retries": 0}
    data.update(change)
    path.write_text(yaml.safe_dump(data))
    return path


# --- item 3: output paths -----------------------------------------------------------------------------------

# {RUN}: the checkpointed run; "f" is a file in the working directory. Each writing command, with its output
# path a file (where a directory is wanted), under a file, or a directory (where a file is wanted).
OUTPUT_CASES = [
    pytest.param(["train", *TINY, "run_dir=f"], ("run_dir", "'f'", "is a file"), id="train-run_dir-file"),
    pytest.param(["train", *TINY, "run_dir=f/run"], ("run_dir", "'f' is a file"), id="train-run_dir-parent-file"),
    pytest.param(["merge", "{RUN}", "--alpha", "0.5", "--out", "f"], ("--out", "is a file"), id="merge-out-file"),
    pytest.param(["merge", "{RUN}", "{RUN}", "--alpha", "0.5", "--out", "f/m"], ("--out", "'f' is a file"),
                 id="merge2-out-parent-file"),
    pytest.param(["adapt", "{RUN}", "--target", "color:5", "--steps", "10", "--out", "f"], ("--out", "is a file"),
                 id="adapt-out-file"),
    pytest.param(["continual", "{RUN}", "--stages", "color:5", "--steps", "10", "--out", "f/c"],
                 ("--out", "'f' is a file"), id="continual-out-parent-file"),
    pytest.param(["pretrain", "--envs", "dmc:cartpole_balance", "--frames", "4", "--out", "f"],
                 ("--out", "is a file"), id="pretrain-out-file"),
    pytest.param(["analyze", "calibration", "--out", "f/a"], ("--out", "'f' is a file"),
                 id="analyze-out-parent-file"),
    pytest.param(["shifts", "gallery", "--out", "f/g.png"], ("--out", "'f' is a file"),
                 id="gallery-out-parent-file"),
    pytest.param(["shifts", "gallery", "--out", "d"], ("--out", "'d' is a directory"), id="gallery-out-dir"),
    pytest.param(["leaderboard", "d", "--out", "f"], ("--out", "is a file"), id="leaderboard-out-file"),
    pytest.param(["sweep", "grid.yaml", "--out", "f"], ("--out", "is a file"), id="sweep-out-file"),
    pytest.param(["sweep", "grid.yaml", "--out", "f/s", "--dry-run"], ("--out", "'f' is a file"),
                 id="sweep-dry-run-out-parent-file"),
    pytest.param(["plot", "{RUN}", "--out", "f/p.png"], ("--out", "f"), id="plot-out-parent-file"),
]


def _prepare(tmp_path: Path, args: list[str], run: Path) -> list[str]:
    (tmp_path / "f").write_text("a file\n")
    (tmp_path / "d").mkdir()
    _grid(tmp_path / "grid.yaml")
    return [a.replace("{RUN}", str(run)) for a in args]


@pytest.mark.parametrize(("args", "needles"), OUTPUT_CASES)
def test_unusable_output_path_is_one_error_line(cli, tmp_path, ckpt_run, args, needles):
    args = _prepare(tmp_path, args, ckpt_run)
    before, run_before = tree(tmp_path), tree(ckpt_run)
    assert_user_error(cli(*args), *needles)
    assert tree(tmp_path) == before and tree(ckpt_run) == run_before


def test_evaluate_refuses_a_run_whose_eval_is_a_file(cli, tmp_path, ckpt_run):
    run = tmp_path / "run"
    shutil.copytree(ckpt_run, run)
    (run / "eval").write_text("not a directory\n")
    before = tree(tmp_path)
    assert_user_error(cli("evaluate", "run", "--episodes", "1"), "results directory", "eval", "is a file")
    assert_user_error(cli("evaluate", "run", "--suite", "contrast:5"), "results directory", "is a file")
    assert tree(tmp_path) == before


def test_continual_checks_set_before_the_stage_0_evaluation(cli, tmp_path, ckpt_run, monkeypatch):
    import mbrl.runs.continual

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated before --set was checked")

    monkeypatch.setattr(mbrl.runs.continual, "evaluate_agent", no_evaluation)
    before = tree(tmp_path)
    assert_user_error(cli("continual", str(ckpt_run), "--stages", "color:5", "--steps", "10", "--out", "seq",
                          "--set", "model.deter=8"), "model.deter")
    assert tree(tmp_path) == before


RUN_FILE_CASES = [
    pytest.param(["evaluate", "f"], id="evaluate"),
    pytest.param(["evaluate", "f", "--suite", "quick"], id="evaluate-suite"),
    pytest.param(["merge", "f", "--alpha", "0.5"], id="merge"),
    pytest.param(["merge", "{RUN}", "f", "--alpha", "0.5"], id="merge-two"),
    pytest.param(["adapt", "f", "--target", "color:5", "--steps", "10", "--out", "new"], id="adapt"),
    pytest.param(["adapt", "--resume", "f"], id="adapt-resume"),
    pytest.param(["adapt-eval", "{RUN}", "f"], id="adapt-eval"),
    pytest.param(["continual", "f", "--stages", "color:5", "--steps", "10", "--out", "new"], id="continual"),
    pytest.param(["train", "--resume", "f", *TINY], id="train-resume"),
    pytest.param(["analyze", "wm", "f"], id="analyze"),
]


@pytest.mark.parametrize("args", RUN_FILE_CASES)
def test_run_path_that_is_a_file_says_so(cli, tmp_path, ckpt_run, args):
    args = _prepare(tmp_path, args, ckpt_run)
    before = tree(tmp_path)
    line = assert_user_error(cli(*args), "'f'", "is a file, not a run directory")
    assert "does not exist" not in line
    assert tree(tmp_path) == before


def test_writability_check_with_an_unwritable_directory(tmp_path, monkeypatch):
    """Tests run as root, where chmod cannot make a directory unwritable: patch ``os.access`` instead."""
    from envs import files

    real = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(files.os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    for check, path in ((files.check_output_dir, locked), (files.check_output_dir, locked / "a" / "b"),
                        (files.check_output_file, locked / "x.json"),
                        (files.check_output_file, locked / "a" / "x.json")):
        with pytest.raises(files.OutputPathError, match="not writable") as info:
            check(path, "--out")
        assert "\n" not in str(info.value) and "'--out'" not in str(info.value)
    with pytest.raises(files.OutputPathError, match="not writable"):
        files.check_run_dir(locked, writable=True)
    files.check_run_dir(locked)  # reading it is fine
    assert files.check_output_dir(tmp_path / "free" / "new") == tmp_path / "free" / "new"
    assert files.check_output_file(tmp_path / "x.png") == tmp_path / "x.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked"], "a check must not create anything"


def test_unwritable_output_through_the_cli(cli, tmp_path, monkeypatch):
    from envs import files

    real = os.access
    monkeypatch.setattr(files.os, "access", lambda p, mode: False if Path(p).resolve() == tmp_path else real(p, mode))
    assert_user_error(cli("shifts", "gallery", "--out", "g.png"), "--out", "not writable")
    assert_user_error(cli("train", *TINY, "run_dir=runs/x"), "run_dir", "not writable")
    assert tree(tmp_path) == {}


# --- item 6: sweep grids ------------------------------------------------------------------------------------

SWEEP_CASES = [
    pytest.param({"seeds": -3}, ("seeds", ">= 1", "-3"), id="seeds-negative-count"),
    pytest.param({"seeds": 0}, ("seeds", ">= 1", "0"), id="seeds-zero"),
    pytest.param({"seeds": [0, -1]}, ("seeds", ">= 0", "-1"), id="seeds-negative-seed"),
    pytest.param({"seeds": []}, ("seeds", "non-empty"), id="seeds-empty-list"),
    pytest.param({"name": "../../../escape"}, ("name", "../../../escape", "plain directory name"),
                 id="name-escapes"),
    pytest.param({"name": "a/b"}, ("name", "'a/b'"), id="name-with-slash"),
    pytest.param({"name": ".."}, ("name", "'..'"), id="name-dotdot"),
    pytest.param({"name": "/tmp/abs"}, ("name", "'/tmp/abs'"), id="name-absolute"),
]


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize(("change", "needles"), SWEEP_CASES)
def test_bad_sweep_grid_is_refused(cli, tmp_path, change, needles, dry_run):
    _grid(tmp_path / "grid.yaml", **change)
    before = tree(tmp_path)
    res = cli("sweep", "grid.yaml", *(["--dry-run"] if dry_run else []))
    assert_user_error(res, *needles)
    assert "trials" not in res.stdout
    assert tree(tmp_path) == before


def test_sweep_grid_that_is_not_utf8(cli, tmp_path):
    (tmp_path / "grid.yaml").write_bytes(b"name: t\nenvs: [dmc:cartpole_balance]\n# \xff\xfe latin-1 \xe9\n")
    for extra in ([], ["--dry-run"]):
        assert_user_error(cli("sweep", "grid.yaml", *extra), "grid.yaml", "not UTF-8")
    assert sorted(tree(tmp_path)) == ["grid.yaml"]


def test_good_sweep_grid_dry_run_still_lists_its_trials(cli, tmp_path):
    _grid(tmp_path / "grid.yaml", seeds=2)
    res = cli("sweep", "grid.yaml", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert f"2 trials -> {Path('runs') / 'sweeps' / 'tiny'}" in res.stdout
    assert sorted(tree(tmp_path)) == ["grid.yaml"]


# --- item 7: Ctrl-C -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_during_train_prints_one_line_and_leaves_a_loadable_checkpoint(cli, tmp_path, monkeypatch):
    from mbrl.replay import read_npz
    from mbrl.runs import checkpoint, train

    real_save = checkpoint.save
    calls = {"n": 0}

    def save_then_interrupt(*args, **kwargs):
        path = real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:  # the periodic checkpoint at 100 env steps, inside the loop
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(train.checkpoint, "save", save_then_interrupt)
    res = cli("train", *TINY, "run_dir=run")
    assert res.returncode == 130, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if "interrupted" in line]
    assert len(lines) == 1, res.stderr
    assert "dreamshift train --resume run" in lines[0] and "checkpoint saved at 100 env steps" in lines[0]
    assert not any(line.startswith("error:") for line in res.stderr.splitlines())
    state = checkpoint.load_state(tmp_path / "run")
    assert state["counters"]["env_steps"] == 100
    assert read_npz(tmp_path / "run" / "checkpoint" / state["replay_file"])["total_added"] > 0


def test_ctrl_c_in_other_commands_is_one_line(cli, tmp_path, ckpt_run, monkeypatch):
    import experiments.sweep
    import mbrl.runs.adapt
    import mbrl.runs.continual
    import mbrl.runs.evaluate
    import mbrl.runs.pretrain
    from mbrl.runs.train import TrainingInterrupted

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    def adapt_interrupted(*args, **kwargs):
        raise TrainingInterrupted(Path("new"), Path("new/checkpoint/agent.pt"), 40)

    monkeypatch.setattr(mbrl.runs.evaluate, "evaluate", interrupt)
    monkeypatch.setattr(experiments.sweep, "run", interrupt)
    monkeypatch.setattr(mbrl.runs.adapt, "adapt", adapt_interrupted)
    monkeypatch.setattr(mbrl.runs.continual, "continual", interrupt)
    monkeypatch.setattr(mbrl.runs.pretrain, "pretrain", interrupt)
    _grid(tmp_path / "grid.yaml")
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / mbrl.runs.pretrain.CHECKPOINT).write_bytes(b"")
    cases = [
        (["evaluate", str(ckpt_run)], "no half-written file"),
        (["sweep", "grid.yaml"], "continue with: dreamshift sweep grid.yaml"),
        (["adapt", str(ckpt_run), "--target", "color:5", "--steps", "10", "--out", "new"],
         "continue with: dreamshift adapt --resume new"),
        (["continual", str(ckpt_run), "--stages", "color:5", "--steps", "10", "--out", "seq"],
         f"start again with: dreamshift continual {ckpt_run} --stages color:5 --steps 10 --out seq"),  # nothing written
        (["pretrain", "--out", "vit", "--frames", "4"], "continue with: dreamshift pretrain --out vit --frames 4 "
                                                        "--resume"),
    ]
    for args, needle in cases:
        res = cli(*args)
        assert res.returncode == 130, (args, res.returncode, res.stderr)
        assert "Traceback" not in res.stderr
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert lines[-1].startswith("interrupted") and needle in lines[-1], (args, res.stderr)
        assert sum("interrupted" in line for line in lines) == 1


# --- item 8: smaller ones -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["train", "--bogus"], ["evaluate", "run", "--bogus"], ["shifts", "gallery", "--bogus"],
    ["sweep", "grid.yaml", "--bogus"], ["analyze", "calibration", "--bogus"], ["adapt", "--bogus"],
    ["evaluate", "run", "--episodes", "many"], ["evaluate", "run", "--threads", "0"],
], ids=lambda a: "-".join(a).replace("--", ""))
def test_unknown_option_shows_the_sub_commands_usage(cli, tmp_path, args):
    res = cli(*args)
    assert_user_error(res, f"dreamshift {' '.join(args[:2] if args[0] == 'shifts' else args[:1])}")
    usage = res.stderr.splitlines()[0]
    prog = "dreamshift shifts gallery" if args[0] == "shifts" else f"dreamshift {args[0]}"
    assert usage.startswith(f"usage: {prog} "), res.stderr
    assert tree(tmp_path) == {}


@pytest.mark.parametrize("args", [
    ["evaluate", "{RUN}", "--device", "foo"],
    ["evaluate", "{RUN}", "--suite", "quick", "--device", "foo"],
    ["analyze", "wm", "{RUN}", "--device", "foo"],
    ["adapt-eval", "{RUN}", "{RUN}", "--device", "foo"],
], ids=["evaluate", "evaluate-suite", "analyze-wm", "adapt-eval"])
def test_unknown_device_is_one_error_line(cli, tmp_path, ckpt_run, args):
    before = tree(ckpt_run)
    assert_user_error(cli(*[a.replace("{RUN}", str(ckpt_run)) for a in args]), "--device", "'foo'",
                      "auto, cpu, cuda")
    assert tree(ckpt_run) == before and tree(tmp_path) == {}


def test_adapt_eval_names_the_missing_base(cli, tmp_path, ckpt_run):
    assert_user_error(cli("adapt-eval", "/nope", str(ckpt_run)), "BASE", "'/nope'", "does not exist")
    assert_user_error(cli("adapt-eval", str(ckpt_run), "/nope"), "ADAPTED", "'/nope'", "does not exist")
    assert tree(tmp_path) == {}


def test_analyze_without_arguments_says_what_each_analysis_needs(cli, tmp_path):
    line = assert_user_error(cli("analyze"), "ANALYSIS", "calibration an optional RUN_DIR", "wm a RUN_DIR",
                             "encoder=NAME")
    assert "required" not in line
    assert tree(tmp_path) == {}


def test_truncated_replay_on_resume_is_a_checkpoint_error(cli, tmp_path, ckpt_run):
    from mbrl.runs import checkpoint

    run = tmp_path / "run"
    shutil.copytree(ckpt_run, run)
    replay = run / "checkpoint" / checkpoint.load_state(run)["replay_file"]
    replay.write_bytes(replay.read_bytes()[: replay.stat().st_size // 2])
    before = tree(tmp_path)
    assert_user_error(cli("train", "--resume", "run", *TINY), "replay file", str(replay.relative_to(tmp_path)),
                      "unreadable")
    assert tree(tmp_path) == before


@pytest.mark.parametrize(("args", "needles"), [
    pytest.param(["--size", "100000"], ("--size", "[16, 1024]", "100000"), id="size-huge"),
    pytest.param(["--size", "4"], ("--size", "[16, 1024]"), id="size-tiny"),
    pytest.param(["--scale", "100000"], ("--scale", "[1, 16]", "100000"), id="scale-huge"),
    pytest.param(["--scale", "-1"], ("--scale", "[1, 16]"), id="scale-negative"),
    pytest.param(["--size", "512", "--scale", "4"], ("1024", "512 x 4"), id="cell-too-large"),
])
def test_gallery_dimensions_are_bounded(cli, tmp_path, args, needles):
    assert_user_error(cli("shifts", "gallery", *args), *needles)
    assert tree(tmp_path) == {}


def test_written_files_respect_the_umask(tmp_path, monkeypatch):
    from envs import files

    old = os.umask(0o022)
    os.umask(old)
    assert files.UMASK == old, "the umask is read once at import and must be the process's"
    monkeypatch.setattr(files, "UMASK", 0o022)
    assert stat.S_IMODE(files.write_json(tmp_path / "result.json", {"a": 1}).stat().st_mode) == 0o644
    assert stat.S_IMODE(files.atomic_write(tmp_path / "agent.pt", lambda f: f.write(b"w")).stat().st_mode) == 0o644
    monkeypatch.setattr(files, "UMASK", 0o077)
    assert stat.S_IMODE(files.write_json(tmp_path / "private.json", {}).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.pt", "private.json", "result.json"]

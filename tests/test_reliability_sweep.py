"""The bad-input sweep's other failures (issue 28): each bad invocation is one ``error:`` line with nothing
written, and inputs that used to be accepted silently (disagreeing records, a wrong base run, stale sweep results,
missing conditions) are refused or said."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import TINY_RUN, assert_user_error, tree


def _links(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a file\n")
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    os.symlink("nowhere", tmp_path / "dangling")


# --- 1: run_dir a file, a symbolic link loop, a link to nothing ---------------------------------------------------

@pytest.mark.parametrize("run_dir, needles", [
    ("f", ["'f' is a file"]),
    ("loop1", ["'loop1'", "loop of symbolic links"]),
    ("loop1/x", ["loop of symbolic links"]),
    ("dangling", ["'dangling'", "symbolic link to 'nowhere', which does not exist"]),
    ("dangling/x", ["'dangling'", "symbolic link to 'nowhere'"]),
], ids=["file", "loop", "under-loop", "dangling", "under-dangling"])
@pytest.mark.parametrize("extra", [[], ["seeds=[0,1]"]], ids=["single", "seeds"])
def test_train_into_a_run_dir_that_cannot_be_a_directory_is_one_line(cli, tmp_path, run_dir, needles, extra):
    _links(tmp_path)
    before = tree(tmp_path)
    assert_user_error(cli("train", *TINY_RUN, f"run_dir={run_dir}", *extra), "run_dir", *needles)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("run_dir", ["loop1", "dangling"])
def test_resume_of_a_symbolic_link_loop_or_dangling_link_is_one_line(cli, tmp_path, run_dir):
    _links(tmp_path)
    before = tree(tmp_path)
    assert_user_error(cli("train", "--resume", run_dir), f"--resume '{run_dir}'", "symbolic link")
    assert tree(tmp_path) == before

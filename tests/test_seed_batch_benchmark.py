"""``benchmarks/seed_batch.py`` runs end to end on a tiny setting and prints its ratio line; bad input is one
``error:`` line."""

from __future__ import annotations

import json

import pytest
from conftest import load_benchmark

bench = load_benchmark("seed_batch")


@pytest.mark.slow
def test_rows_phases_and_last_line(tmp_path, capsys, single_thread):
    out = tmp_path / "rows.json"
    assert bench.main(["--variants", "size1m:state", "--members", "1,2,4", "--updates", "1", "--warmup", "0",
                       "--batch", "2", "--length", "8", "--phases", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    last = text.strip().splitlines()[-1]
    assert last.startswith("per-member cost E=4 / E=1: ") and float(last.split()[5]) > 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["members"], r["single"]) for r in rows] == [(1, True), (1, False), (2, False), (4, False)]
    assert all(r["s_per_member_update"] > 0 and "imagine" in r["phases"] for r in rows)


@pytest.mark.parametrize("argv, needle", [(["--variants", "size1m"], "SIZE:OBS"), (["--members", "0"], ">= 1"),
                                          (["--members", "x"], "integers")])
def test_bad_input(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert needle in str(exc.value.code)

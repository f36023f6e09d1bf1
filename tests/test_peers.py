"""Tests for ``benchmarks/peers.py``'s pure helpers: result-line parsing, speed-up, load warning, table (no sheeprl
install needed, nothing is timed)."""

from __future__ import annotations

import json

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def peers():
    return load_benchmark("peers")


def test_parse_result_line_takes_the_last_matching_json_line(peers):
    out = "\n".join(["Seed set to 5", "{not json", json.dumps({"impl": "sheeprl", "s_per_update": 1.0}),
                     json.dumps({"impl": "dreamshift", "s_per_update": 9.0}),
                     json.dumps({"impl": "sheeprl", "s_per_update": 2.0}), "trailing text", "[1, 2]"])
    assert peers.parse_result_line(out, "sheeprl")["s_per_update"] == 2.0
    assert peers.parse_result_line(out, "dreamshift")["s_per_update"] == 9.0
    with pytest.raises(ValueError, match="no other result"):
        peers.parse_result_line(out, "other")
    with pytest.raises(ValueError):
        peers.parse_result_line("", "sheeprl")


def test_speedup(peers):
    assert peers.speedup(4.0, 2.0) == pytest.approx(2.0)
    assert peers.speedup(1.0, 4.0) == pytest.approx(0.25)
    assert peers.speedup(None, 1.0) is None
    assert peers.speedup(1.0, None) is None
    assert peers.speedup(1.0, 0.0) is None


def test_load_warning(peers):
    assert peers.load_warning(0.2, 2.3, cpus=2, threads=2) is None  # the benchmark's own threads don't count
    assert peers.load_warning(1.5, 0.5, cpus=2, threads=2) is not None  # busy at the start
    warning = peers.load_warning(0.1, 6.0, cpus=2, threads=2)  # busy at the end beyond our own threads
    assert warning.startswith("warning:") and "6.00" in warning
    assert peers.load_warning(3.9, 3.0, cpus=8, threads=2) is None


def test_parse_list(peers):
    assert peers.parse_list("XS, S", peers.SIZES, "sizes") == ["XS", "S"]
    with pytest.raises(SystemExit, match="--sizes"):
        peers.parse_list("XS,Q", peers.SIZES, "sizes")
    with pytest.raises(SystemExit):
        peers.parse_list(",", peers.PRECISIONS, "precisions")


def test_table_pairs_dreamshift_with_sheeprl_of_the_same_size_and_precision(peers):
    rows = [
        {"impl": "sheeprl", "size": "XS", "precision": "fp32", "obs": "pixels", "s_per_update": 4.0,
         "params": 8_263_982},
        {"impl": "dreamshift", "size": "XS", "precision": "fp32", "obs": "pixels", "variant": "XS:pixels:fp32:off",
         "algo": "dreamerv3", "s_per_update": 2.0, "params": 8_230_062},
        {"impl": "dreamshift", "size": "XS", "precision": "bf16", "obs": "pixels", "variant": "XS:pixels:bf16:off",
         "algo": "dreamerv3", "error": "exit 1: boom"},
        {"impl": "dreamshift", "size": "size1m", "precision": "fp32", "obs": "state",
         "variant": "size1m:state:fp32:off", "algo": "dreamerv3", "s_per_update": 0.5, "params": 1_000_000},
        {"impl": "dreamshift", "size": "S", "precision": "fp32", "obs": "pixels", "encoder": "efficientnet-lite0",
         "variant": "S:pixels:fp32:off:efficientnet-lite0:features", "algo": "dreamerv3", "s_per_update": 1.0},
    ]
    lines = peers.table_rows(rows)
    assert len(lines) == 4  # one per dreamshift measurement
    assert lines[0]["speedup"] == pytest.approx(2.0) and lines[0]["sheeprl_params"] == 8_263_982
    assert lines[1]["speedup"] is None and lines[1]["error"] == "exit 1: boom"
    assert lines[2]["sheeprl_s_per_update"] is None and lines[2]["speedup"] is None  # dreamshift-only
    assert lines[3]["sheeprl_s_per_update"] is None  # a frozen-encoder row is not sheeprl's work
    text = peers.format_table(lines)
    assert "speed-up (sheeprl / ours)" in text and "sheeprl s/update" in text
    body = text.splitlines()[2:]
    assert "4.000" in body[0] and "2.000" in body[0] and "2.00" in body[0] and "8.3M / 8.2M" in body[0]
    assert "error: exit 1: boom" in body[1]
    assert body[2].split()[:3] == ["size1m", "fp32", "state"]
    assert "efficientnet-lite0:features" in body[3]


def test_thread_env(peers):
    env = peers.thread_env(3)
    assert env["OMP_NUM_THREADS"] == "3" and env["MKL_NUM_THREADS"] == "3"

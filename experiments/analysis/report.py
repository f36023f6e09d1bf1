"""Output of the analyses: one summary JSON and one JSONL file of measurement records per analysis, both written
atomically (:mod:`envs.files`) into ``RUN_DIR/analysis/`` (or another directory).

A record is one measurement: ``{"analysis", "metric", "value", "n", "env", "encoder", "encoder_mode",
"config_hash", ...}`` plus the keys that locate it (``weights`` = pretrained | finetuned | random, ``layer``,
``kind``, ``severity``, ...). ``n`` is the number of items (frames, images, steps) the value averages over.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
from pathlib import Path
from typing import Any

from envs import files

RECORD_KEYS = ("analysis", "env", "encoder", "encoder_mode", "metric", "value", "n", "config_hash")


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become ``None`` (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def record(analysis: str, metric: str, value: float, n: int, base: dict[str, Any], **where: Any) -> dict[str, Any]:
    """One measurement record: ``base`` (env, encoder, encoder_mode, config_hash) + ``where`` + the value."""
    out = {"analysis": analysis, "env": None, "encoder": None, "encoder_mode": None, "config_hash": None}
    out.update(base)
    out.update(where)
    out.update({"metric": metric, "value": float(value), "n": int(n)})
    return out


def write_report(out_dir: Path | str, name: str, summary: dict[str, Any],
                 records: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``out_dir/<name>.json`` (``summary`` plus ``"records"``) and ``out_dir/<name>.jsonl`` (one record a
    line), each atomically; returns both paths."""
    out_dir = Path(out_dir)
    clean = [_clean(r) for r in records]
    json_path = files.write_json(out_dir / f"{name}.json", _clean({**summary, "records": clean}))
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in clean)
    jsonl_path = files.atomic_write(out_dir / f"{name}.jsonl", lambda f: f.write(lines.encode()))
    return json_path, jsonl_path


def write_csv(path: Path | str, rows: list[dict[str, Any]], columns: list[str]) -> Path:
    """Atomically write ``rows`` (dicts) as CSV with the given column order."""
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return files.atomic_write(path, lambda f: f.write(buf.getvalue().encode()))

"""The generalization leaderboard: every results record under a directory -> tables and plots.

``dreamshift leaderboard RESULTS_DIR --out DIR`` (a sweep's ``results/``, or a run directory evaluated by
``dreamshift evaluate RUN [--suite S]``) writes

- ``leaderboard.csv``: one row per (env, encoder, mode): seeds, ID score, each (shift, severity) score,
  OOD score, drop %, severity AUC, IQM with 95 % CI, probability of improvement over the scratch ``cnn``;
- ``conditions.csv``: one row per (env, encoder, mode, shift, severity): mean ± SE over seeds of return, score
  and success rate;
- ``leaderboard.json``: both, plus the normalisation constants and their sources;
- ``leaderboard.md``: per env a Markdown table; ``index.html``: a self-contained page (tables and inline SVG);
- ``robustness-<env>.png|svg`` (score vs severity per encoder/mode, one panel per shift kind) and
  ``iqm-<env>.png|svg`` (IQM of OOD scores with 95 % CIs).

Score = normalised return (:mod:`experiments.normalisation`) where the env has constants, else raw return.
Per seed, a condition's score is the mean over its evaluation episodes; tables show mean ± standard error over
seeds. A row's scores use only the conditions every one of its seeds has: a condition some seed lacks is left
out (a warning per row, the ``missing`` column, ``–`` in its cell), so a missing file cannot move the OOD score.
IQM, CIs and P(improvement) follow Agarwal et al. 2021 (:mod:`experiments.metrics`) over the matrix
``(seeds, shifted conditions)``. Rows are ranked by OOD IQM.
"""

from __future__ import annotations

import html
import io as _io
import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from envs import files
from experiments import metrics
from experiments.normalisation import constants
from experiments.results import code_version, read_dir, resolve_dir

BASELINE = "cnn"  # P(improvement) is measured against the scratch CNN


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _cond(shift: str, severity: int) -> str:
    return "ID" if shift == "none" else f"{shift}@{severity}"


def per_seed(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (env, encoder, encoder_mode, seed, shift, severity): mean return, score, success rate, episodes.
    ``encoder`` is the record's ``label`` (the method's name; the encoder name unless a sweep labels it)."""
    df = pd.DataFrame(records)
    df["encoder"] = df["label"]  # rows are methods: the sweep's label (default: the encoder name)
    df["success_f"] = df["success"].map(lambda s: np.nan if s is None else float(s))
    keys = ["env", "encoder", "encoder_mode", "seed", "shift", "severity"]
    out = df.groupby(keys, sort=True).agg(return_mean=("return", "mean"), success=("success_f", "mean"),
                                          episodes=("return", "size")).reset_index()

    out["score"] = out.apply(lambda row: metrics.score(row["return_mean"], row["env"]), axis=1)
    return out


def _mean_se(values: pd.Series) -> tuple[float, float]:
    v = values.dropna()
    return metrics.mean_se(v.to_numpy()) if len(v) else (math.nan, math.nan)


def conditions(seeds: pd.DataFrame) -> pd.DataFrame:
    """Mean ± SE over seeds per (env, encoder, encoder_mode, shift, severity)."""
    rows = []
    for key, g in seeds.groupby(["env", "encoder", "encoder_mode", "shift", "severity"], sort=True):
        r_m, r_se = _mean_se(g["return_mean"])
        s_m, s_se = _mean_se(g["score"])
        succ_m, succ_se = _mean_se(g["success"])
        rows.append(dict(zip(["env", "encoder", "encoder_mode", "shift", "severity"], key, strict=True),
                         seeds=len(g), return_mean=r_m, return_se=r_se, score_mean=s_m, score_se=s_se,
                         success_mean=succ_m, success_se=succ_se))
    return pd.DataFrame(rows)


def _matrix(seeds: pd.DataFrame) -> pd.DataFrame:
    """``(seeds, shifted conditions)`` score matrix of one (env, encoder, mode); complete seeds only."""
    g = seeds[seeds["shift"] != "none"]
    return g.pivot_table(index="seed", columns=["shift", "severity"], values="score").dropna(axis=0)


def common_conditions(g: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows of one method's seeds (``per_seed`` rows of one env, encoder and mode) restricted to the
    conditions every seed has, and what was left out: ``"fog@5 (seed 1); ..."``, or ``""`` when every seed has
    every condition. Scores over different condition sets per seed would move with what is missing."""
    have = {seed: set(zip(x["shift"], x["severity"], strict=True)) for seed, x in g.groupby("seed")}
    every = set().union(*have.values())
    common = set.intersection(*have.values())
    if every == common:
        return g, ""
    missing = []
    for shift, severity in sorted(every - common):
        lacking = [str(seed) for seed, conds in have.items() if (shift, severity) not in conds]
        missing.append(f"{_cond(shift, severity)} (seed {', '.join(lacking)})")
    keep = [c in common for c in zip(g["shift"], g["severity"], strict=True)]
    return g[keep], "; ".join(missing)


def _missing_names(missing: str) -> set[str]:
    """The condition names of a ``missing`` column (:func:`common_conditions`)."""
    return {item.split(" (", 1)[0] for item in missing.split("; ") if item}


def summary(seeds: pd.DataFrame, reps: int = 2000) -> pd.DataFrame:
    """One row per (env, encoder, encoder_mode); see the module docstring for the columns. A method's scores are
    computed over the conditions every one of its seeds has (:func:`common_conditions`); ``missing`` names the
    conditions left out and the seeds that lack them (``""`` for a complete row)."""
    rows = []
    for env, env_seeds in seeds.groupby("env", sort=True):
        methods, missing = {}, {}
        for k, g in env_seeds.groupby(["encoder", "encoder_mode"], sort=True):
            methods[k], missing[k] = common_conditions(g)
        mats = {k: m for k, g in methods.items() if (m := _matrix(g)).shape[1] > 0}
        intervals = metrics.interval_estimates({f"{e}|{m}": v.to_numpy() for (e, m), v in mats.items()},
                                               reps=reps) if mats else {}
        baseline = next((k for k in mats if k[0] == BASELINE), None)
        for (encoder, mode), g in methods.items():
            row: dict[str, Any] = {"env": env, "encoder": encoder, "encoder_mode": mode,
                                   "seeds": int(g["seed"].nunique()), "normalised": constants(env) is not None,
                                   "missing": missing[(encoder, mode)]}
            per_cond = g.groupby(["shift", "severity"])["score"]
            id_m, id_se = _mean_se(g[g["shift"] == "none"].groupby("seed")["score"].mean())
            ood = g[g["shift"] != "none"].groupby("seed")["score"].mean()
            ood_m, ood_se = _mean_se(ood)
            row.update(id_score=id_m, id_se=id_se, ood_score=ood_m, ood_se=ood_se,
                       drop_pct=metrics.drop_pct(id_m, ood_m) if not math.isnan(id_m + ood_m) else None)
            succ = g.groupby(g["shift"] == "none")["success"].mean()
            row["success_id"] = float(succ.get(True, math.nan))
            row["success_ood"] = float(succ.get(False, math.nan))
            aucs = []
            for _kind, kg in g[g["shift"] != "none"].groupby("shift"):
                means = kg.groupby("severity")["score"].mean()
                if not math.isnan(id_m):
                    aucs.append(metrics.severity_auc([0, *means.index], [id_m, *means.values]))
            row["auc"] = float(np.mean(aucs)) if aucs else math.nan
            est = intervals.get(f"{encoder}|{mode}")
            row["iqm"], row["iqm_lo"], row["iqm_hi"] = est["iqm"] if est else (math.nan,) * 3
            row["optimality_gap"] = est["optimality_gap"][0] if est else math.nan
            row["p_improve"] = row["p_lo"] = row["p_hi"] = math.nan
            if baseline is not None and (encoder, mode) != baseline and (encoder, mode) in mats:
                x, y = mats[(encoder, mode)], mats[baseline]
                common = [c for c in x.columns if c in y.columns]
                if common and len(x) and len(y):
                    row["p_improve"], row["p_lo"], row["p_hi"] = metrics.probability_of_improvement(
                        x[common].to_numpy(), y[common].to_numpy(), reps=reps)
            for (shift, severity), values in per_cond:
                row[_cond(shift, severity)] = float(values.mean())
            rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        out = out.sort_values(["env", "iqm", "ood_score"], ascending=[True, False, False], na_position="last")
    return out.reset_index(drop=True)


def _fmt(m: float, se: float | None = None, digits: int = 2) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    text = f"{m:.{digits}f}"
    if se is not None and not math.isnan(se):
        text += f" ± {se:.{digits}f}"
    return text


def display_table(summ: pd.DataFrame, conds: pd.DataFrame, env: str) -> pd.DataFrame:
    """The human-readable table of one env: rows encoder × mode, columns ID, each shift@severity, OOD, drop %,
    AUC, IQM [95 % CI], P(> cnn)."""
    s = summ[summ["env"] == env]
    c = conds[conds["env"] == env]
    order = c[c["shift"] != "none"][["shift", "severity"]].drop_duplicates().sort_values(["shift", "severity"])
    digits = 2 if bool(s["normalised"].iloc[0]) else 1
    rows = []
    for _, r in s.iterrows():
        cell = c[(c["encoder"] == r["encoder"]) & (c["encoder_mode"] == r["encoder_mode"])]
        left_out = _missing_names(r.get("missing") or "")

        def at(shift: str, severity: int, cell: pd.DataFrame = cell, left_out: set[str] = left_out) -> str:
            x = cell[(cell["shift"] == shift) & (cell["severity"] == severity)]
            if _cond(shift, severity) in left_out:  # not every seed has it: not in the row's scores either
                return "–"
            return _fmt(float(x["score_mean"].iloc[0]), float(x["score_se"].iloc[0]), digits) if len(x) else "–"

        row = {"encoder": r["encoder"], "mode": r["encoder_mode"], "seeds": int(r["seeds"]), "ID": at("none", 0)}
        for _, o in order.iterrows():
            row[_cond(o["shift"], int(o["severity"]))] = at(o["shift"], int(o["severity"]))
        row["OOD"] = _fmt(r["ood_score"], r["ood_se"], digits)
        row["drop %"] = _fmt(r["drop_pct"], digits=0) if r["drop_pct"] is not None else "–"
        row["AUC"] = _fmt(r["auc"], digits=digits)
        row["IQM [95% CI]"] = "–" if math.isnan(r["iqm"]) else \
            f"{r['iqm']:.{digits}f} [{r['iqm_lo']:.{digits}f}, {r['iqm_hi']:.{digits}f}]"
        row[f"P(>{BASELINE})"] = "–" if math.isnan(r["p_improve"]) else \
            f"{r['p_improve']:.2f} [{r['p_lo']:.2f}, {r['p_hi']:.2f}]"
        if not math.isnan(r["success_id"]):
            row["success ID/OOD"] = f"{r['success_id']:.2f} / {r['success_ood']:.2f}"
        if (s["missing"] != "").any():  # some row left conditions out: say which, on its row
            row["missing (left out)"] = r["missing"] or "–"
        rows.append(row)
    return pd.DataFrame(rows)


def _plots(summ: pd.DataFrame, conds: pd.DataFrame, env: str, files: dict[str, bytes]) -> dict[str, str]:
    """Render the robustness and IQM plots of one env (PNG + SVG) into ``files`` (name -> bytes, written later);
    returns {name: svg text} for the HTML page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = conds[conds["env"] == env]
    s = summ[summ["env"] == env]
    ylabel = "normalised return" if bool(s["normalised"].iloc[0]) else "return"
    kinds = sorted(k for k in c["shift"].unique() if k != "none")
    svgs: dict[str, str] = {}
    methods = [(r["encoder"], r["encoder_mode"]) for _, r in s.iterrows()]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if kinds:
        fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), 3.2), squeeze=False, sharey=True)
        for ax, kind in zip(axes[0], kinds, strict=True):
            for i, (enc, mode) in enumerate(methods):
                m = c[(c["encoder"] == enc) & (c["encoder_mode"] == mode) & c["shift"].isin(["none", kind])]
                m = m.sort_values("severity")
                ax.errorbar(m["severity"], m["score_mean"], yerr=m["score_se"].fillna(0), marker="o", capsize=2,
                            label=f"{enc} ({mode})", color=colours[i % len(colours)])
            ax.set_title(kind)
            ax.set_xlabel("severity")
            ax.set_xticks(range(6))
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(ylabel)
        axes[0][-1].legend(fontsize=7, loc="best")
        fig.suptitle(f"{env}: robustness curves (mean ± SE over seeds)", fontsize=10)
        fig.tight_layout()
        svgs["robustness"] = _render(fig, f"robustness-{_slug(env)}", files)
        plt.close(fig)
    valid = s[~s["iqm"].isna()]
    if len(valid):
        fig, ax = plt.subplots(figsize=(6, 0.45 * len(valid) + 1.2))
        labels = [f"{r['encoder']} ({r['encoder_mode']})" for _, r in valid.iterrows()]
        y = np.arange(len(valid))[::-1]
        ax.hlines(y, valid["iqm_lo"], valid["iqm_hi"], lw=6, alpha=0.5, color=colours[0])
        ax.plot(valid["iqm"], y, "k|", ms=14)
        ax.set_yticks(y, labels)
        ax.set_xlabel(f"IQM of OOD {ylabel} (95 % stratified-bootstrap CI)")
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(env, fontsize=10)
        fig.tight_layout()
        svgs["iqm"] = _render(fig, f"iqm-{_slug(env)}", files)
        plt.close(fig)
    return svgs


def _render(fig: Any, stem: str, files: dict[str, bytes]) -> str:
    """``fig`` as ``<stem>.png`` and ``<stem>.svg`` into ``files``; returns the inline ``<svg>`` element."""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    files[f"{stem}.png"] = buf.getvalue()
    svg_buf = _io.StringIO()
    fig.savefig(svg_buf, format="svg")
    svg = svg_buf.getvalue()
    files[f"{stem}.svg"] = svg.encode()
    return svg[svg.index("<svg"):]


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1400px}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}
tr:nth-child(even){background:#fafafa}.note{color:#555;font-size:.9em}
.plots svg{max-width:100%;height:auto}
"""


def _html(tables: dict[str, pd.DataFrame], svgs: dict[str, dict[str, str]], meta: dict[str, Any]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>dreamshift leaderboard</title>"
             f"<style>{_CSS}</style></head><body><h1>dreamshift generalization leaderboard</h1>",
             f"<p class='note'>{html.escape(meta['n_records'].__str__())} episode records from "
             f"{html.escape(meta['results_dir'])}; code {html.escape(meta['code_version'])}; generated "
             f"{html.escape(meta['generated'])}. Cells: mean ± standard error over seeds; score = normalised "
             f"return (R − R<sub>random</sub>)/(R<sub>max</sub> − R<sub>random</sub>) where the env has "
             f"constants. IQM over (seeds × shifted conditions) with 95 % stratified-bootstrap CIs "
             f"(Agarwal et al. 2021); P(&gt;{BASELINE}): probability of improvement over the scratch CNN.</p>"]
    for env, table in tables.items():
        parts.append(f"<h2>{html.escape(env)}</h2>")
        parts.append(table.to_html(index=False, escape=True, border=0))
        parts.append("<div class='plots'>" + "".join(svgs.get(env, {}).values()) + "</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def md_escape(text: Any) -> str:
    """``text`` as one Markdown table cell (or heading) that shows it verbatim: ``&`` and ``<`` escaped (no HTML
    tag or entity can start; a lone ``>`` as in ``P(>cnn)`` opens nothing and stays), ``|`` (a column break)
    escaped, line breaks (a new row) made spaces."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|")
    return re.sub(r"\r\n|[\r\n\u2028\u2029]", " ", text)


def markdown_table(table: pd.DataFrame) -> str:
    """``table`` as a Markdown table whose every header and cell is :func:`md_escape`-d (labels and condition
    names come from results records: a label may hold anything)."""
    safe = table.rename(columns={c: md_escape(c) for c in table.columns})
    safe = safe.apply(lambda col: col.map(lambda v: md_escape(v) if isinstance(v, str) else v))
    return safe.to_markdown(index=False)


def _jsonable(df: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records"))


def missing_warnings(summ: pd.DataFrame) -> list[str]:
    """One line per leaderboard row whose seeds do not all have the same conditions (:func:`common_conditions`)."""
    return [f"warning: {r['env']} {r['encoder']} ({r['encoder_mode']}): not every seed has {r['missing']}; left out of "
            f"the row's scores (marked in the tables)" for _, r in summ.iterrows() if r.get("missing")]


def build(results_dir: Path | str, out: Path | str, reps: int = 2000,
          warn: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Read every record under ``results_dir`` (a sweep's ``results/``, a run's ``eval/results`` or the run
    directory itself: :func:`experiments.results.resolve_dir`) and write the leaderboard files into ``out``;
    returns their paths.

    Everything is read, checked and rendered in memory first: bad input leaves no ``out`` directory (or an
    existing one unchanged). A row whose seeds lack some of its conditions is scored over the conditions every
    seed has; ``warn`` gets one line per such row (:func:`missing_warnings`).

    Raises:
        ResultsError: no results, a malformed file or record (non-UTF-8, not JSON, a field out of range such as
            a non-finite return, an episode recorded twice; names the file and line).
    """
    records = read_dir(resolve_dir(results_dir))
    out = Path(out)
    seeds = per_seed(records)
    conds = conditions(seeds)
    summ = summary(seeds, reps=reps)
    for line in missing_warnings(summ):
        (warn or (lambda _: None))(line)
    envs = list(dict.fromkeys(summ["env"]))
    tables = {env: display_table(summ, conds, env) for env in envs}
    plots: dict[str, bytes] = {}
    svgs = {env: _plots(summ, conds, env, plots) for env in envs}
    meta = {"results_dir": str(results_dir), "n_records": len(records), "code_version": code_version(),
            "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    norm = {env: (c._asdict() if (c := constants(env)) else None) for env in envs}
    board = json.dumps({**meta, "schema": 1, "baseline": BASELINE, "normalisation": norm,
                        "summary": _jsonable(summ), "conditions": _jsonable(conds)}, indent=2, sort_keys=True)
    md = [f"# dreamshift leaderboard\n\n{meta['n_records']} episode records; code {meta['code_version']}. "
          f"Cells: mean ± SE over seeds of the score (normalised return where the env has constants). "
          f"IQM over seeds × shifted conditions, 95 % stratified-bootstrap CI.\n"]
    for env, table in tables.items():
        md.append(f"\n## {md_escape(env)}\n\n{markdown_table(table)}\n")
    texts = {"csv": ("leaderboard.csv", summ.to_csv(index=False)),
             "conditions": ("conditions.csv", conds.to_csv(index=False)),
             "json": ("leaderboard.json", board + "\n"), "md": ("leaderboard.md", "".join(md)),
             "html": ("index.html", _html(tables, svgs, meta))}
    out.mkdir(parents=True, exist_ok=True)
    for name, data in plots.items():
        files.atomic_write(out / name, lambda f, data=data: f.write(data))
    return {key: files.atomic_write(out / name, lambda f, text=text: f.write(text.encode()))
            for key, (name, text) in texts.items()}

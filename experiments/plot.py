"""Learning curves and training diagnostics of runs against env steps (``dreamshift plot``, :mod:`dreamshift.plot`).

    dreamshift plot RUN [RUN ...] --out PNG [--reference FILE.json.gz] [--window 10000]

Reads each run's ``metrics.jsonl`` (records ``{"kind": "train" | "episode" | "eval", "env_steps", ...}``, see
:mod:`mbrl.logger`) and ``config.json`` and draws a grid of panels, x = env steps: the training-episode return
(each episode faint, the windowed mean as a line) and the eval return when the run logged any, then one panel per
group of ``train`` diagnostics that some run logged (:data:`PANELS`: critic mean, lambda-return mean, advantage
mean/std, return scale, entropy, policy std, imagined reward, gradient norms, KL, losses, updates per env step).
Runs are overlaid, one colour each, labelled ``env obs encoder seed`` from ``config.json``. A batch of seeds
(``dreamshift train seeds=[...]``: a directory with ``members.json`` and one ``seed-<s>/`` run per member) is read
as its members: the return panel shows their mean and min–max band in one colour, the diagnostics each member.
The output format
follows the suffix of ``--out`` (``.png``, ``.svg`` or ``.pdf``); it is written atomically.

With ``--reference`` (a gzipped JSON list of ``{task, method, seed, xs, ys}`` records with ``xs`` in env steps,
e.g. DreamerV3's published ``dmc_vision``/``dmc_proprio`` curves from the danijar/dreamerv3 repository's
``scores/`` folder) the return panel also shows, for each run's task, the reference mean over seeds and the
min-max range of its seeds. Reference tasks are named ``dmc_walker_stand`` for our ``dmc:walker_stand``
(:func:`reference_task`).

Smoothing (:func:`window_mean`): the value at env step ``s`` is the mean of the episode returns logged at env
steps in ``(s - window, s]``; the reference's seeds are smoothed the same way before their mean and range are
taken, so that both sides are the same statistic (with the default 10k window the reference's 50k-step means
are those quoted in the reference README).

Bad input (missing run directory, no ``metrics.jsonl``, unreadable reference, unwritable ``--out`` or one
without a known suffix) raises :class:`envs.errors.ConfigError` before anything is written: the CLI prints one
``error:`` line and exits with status 2.
"""

from __future__ import annotations

import gzip
import io as _io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs import files as mio
from envs.errors import ConfigError

WINDOW = 10_000  # env steps averaged by the smoothed return curves
FORMATS = (".png", ".svg", ".pdf")
EVAL_KEYS = ("return_mean", "return")  # eval records: mean over the eval episodes (mbrl.runs.train), or a single return


@dataclass(frozen=True)
class Panel:
    """One diagnostics panel: ``series`` are ``(train-record key, legend label)``; ``log``: log y-axis when every
    plotted value is positive."""

    title: str
    series: tuple[tuple[str, str], ...]
    log: bool = False


# The train-record diagnostics plotted, in panel order; a panel is drawn when any run logged any of its keys.
PANELS: tuple[Panel, ...] = (
    Panel("critic mean", (("ac/critic_mean", "critic"),)),
    Panel("λ-return mean", (("ac/return", "λ-return"),)),
    Panel("advantage", (("ac/adv_mean", "mean"), ("ac/adv_std", "std"))),
    Panel("return scale max(1, P95 − P5)", (("ac/retnorm_scale", "scale"),)),
    Panel("policy entropy", (("ac/entropy", "entropy"),)),
    Panel("policy std", (("ac/policy_std", "std"),)),
    Panel("imagined reward", (("ac/imag_reward", "mean"),)),
    Panel("gradient norms", (("wm/grad_norm", "world model"), ("ac/actor_grad_norm", "actor"),
                             ("ac/critic_grad_norm", "critic")), log=True),
    Panel("KL (posterior ‖ prior)", (("wm/kl", "kl"), ("wm/dyn", "dyn"), ("wm/rep", "rep"))),
    Panel("world-model losses", (("wm/loss", "total"), ("wm/rec", "rec"), ("wm/rew", "rew"), ("wm/con", "con")),
          log=True),
    Panel("actor-critic losses", (("ac/actor_loss", "actor"), ("ac/critic_loss", "critic"),
                                  ("ac/repval_loss", "repval"))),
    Panel("updates per env step", (("updates_per_env_step", "updates / env step"),)),
)
LINESTYLES = ("-", "--", ":", "-.")


@dataclass
class Run:
    """A run directory's records (``metrics.jsonl``) and configuration (``config.json``'s ``config``; empty when
    the file is absent)."""

    path: Path
    config: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""

    @property
    def env(self) -> str | None:
        return self.config.get("env")

    @property
    def furthest(self) -> int:
        """The largest ``env_steps`` of any record (0 for an empty log)."""
        return max((int(r.get("env_steps", 0)) for r in self.records), default=0)

    def series(self, kind: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(env_steps, values)`` of the ``kind`` records that hold a finite number under ``key``, in log order.

        ``updates_per_env_step`` is derived from the ``updates`` counter of successive train records when the
        run did not log it."""
        xs, ys = [], []
        for r in self.records:
            v = r.get(key)
            if r.get("kind") == kind and _finite(v) and _finite(r.get("env_steps")):
                xs.append(float(r["env_steps"]))
                ys.append(float(v))
        if not xs and kind == "train" and key == "updates_per_env_step":
            ex, ey = self.series("train", "updates")
            if len(ex) > 1:
                dx = np.diff(ex)
                ok = dx > 0
                return ex[1:][ok], np.diff(ey)[ok] / dx[ok]
        return np.asarray(xs), np.asarray(ys)

    def eval_series(self) -> tuple[np.ndarray, np.ndarray]:
        """``(env_steps, eval return)`` of the eval records."""
        for key in EVAL_KEYS:
            xs, ys = self.series("eval", key)
            if len(xs):
                return xs, ys
        return np.zeros(0), np.zeros(0)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def run_label(config: dict[str, Any], fallback: str) -> str:
    """``env obs encoder s<seed>`` from a run's config (parts it lacks are left out, and the encoder of an
    ``obs=state`` run, which has none; ``fallback`` if nothing is left)."""
    parts = [str(config[k]) for k in ("env", "obs") if config.get(k) not in (None, "")]
    if config.get("encoder") and config.get("obs") != "state":
        mode = config.get("encoder_mode")
        parts.append(config["encoder"] + (f"/{mode}" if mode not in (None, "", "auto") else ""))
    if config.get("seed") is not None:
        parts.append(f"s{config['seed']}")
    return " ".join(parts) or fallback


def load_run(path: Path | str) -> Run:
    """Read a run directory; lines cut short by a killed process are skipped.

    Raises:
        ConfigError: the directory does not exist, holds no ``metrics.jsonl``, or its ``config.json`` is not
            JSON.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"run directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise ConfigError(f"{str(path)!r} is not a run directory (expected a directory with metrics.jsonl)")
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise ConfigError(f"run directory {str(path)!r} has no metrics.jsonl (not a training run?)")
    records = []
    for line in metrics.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    config: dict[str, Any] = {}
    cfg_path = path / "config.json"
    if cfg_path.is_file():
        try:
            data = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cfg_path} is not valid JSON ({exc})") from None
        config = data.get("config", data) if isinstance(data, dict) else {}
    return Run(path, config, records, run_label(config, path.name))


MEMBERS_FILE = "members.json"  # a batch of seeds' run directory (mbrl.runs.train_members; read, not imported)


def expand_batches(paths: list[Path | str]) -> list[list[Path]]:
    """Each path as its group of run directories: a batch of seeds (``members.json``) -> its ``seed-<s>/`` member
    directories in the listed order, any other path -> ``[path]``.

    Raises:
        ConfigError: a ``members.json`` that is not a list of seeds.
    """
    groups = []
    for p in map(Path, paths):
        doc_path = p / MEMBERS_FILE
        if not doc_path.is_file():
            groups.append([p])
            continue
        try:
            seeds = [int(s) for s in json.loads(doc_path.read_text())["seeds"]]
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{str(doc_path)!r} is not a members file (a list of seeds): {err}") from None
        groups.append([p / f"seed-{s}" for s in seeds if (p / f"seed-{s}" / "metrics.jsonl").is_file()])
        if not groups[-1]:
            raise ConfigError(f"batch {str(p)!r} has no member with metrics.jsonl yet")
    return groups


def load_runs(paths: list[Path | str]) -> list[Run]:
    """:func:`load_run` of each path; labels shared by several runs get their directory name appended."""
    runs = [load_run(p) for p in paths]
    labels = [r.label for r in runs]
    for r in runs:
        if labels.count(r.label) > 1:
            r.label = f"{r.label} ({r.path.name})"
    return runs


# --- reference curves ---------------------------------------------------------------------------------------

Curves = list[tuple[np.ndarray, np.ndarray]]


def reference_task(env: str | None) -> str | None:
    """The reference files' task name of one of our envs: ``dmc:walker_stand`` -> ``dmc_walker_stand``."""
    if not env or ":" not in env:
        return None
    suite, task = env.split(":", 1)
    return f"{suite}_{task}"


def load_reference(path: Path | str) -> dict[str, Curves]:
    """``{task: [(xs, ys) per seed]}`` of a gzipped JSON list of ``{task, method, seed, xs, ys}`` records, each
    seed's points sorted by ``xs``.

    Raises:
        ConfigError: the file is missing or not such a list.
    """
    path = Path(path)
    if path.is_dir():
        found = ", ".join(sorted(p.name for p in path.glob("*.json.gz"))) or "none"
        raise ConfigError(f"reference {str(path)!r} is a directory; give one of its .json.gz files ({found})")
    if not path.is_file():
        raise ConfigError(f"reference file {str(path)!r} does not exist (expected a .json.gz list of "
                          f"{{task, method, seed, xs, ys}} records, e.g. dmc_proprio-dreamerv3.json.gz)")
    try:
        with gzip.open(path, "rt") as f:
            data = json.load(f)
        out: dict[str, Curves] = {}
        for rec in data:
            xs, ys = np.asarray(rec["xs"], float), np.asarray(rec["ys"], float)
            if xs.shape != ys.shape or xs.ndim != 1:
                raise ValueError(f"task {rec['task']!r}: xs and ys differ in length")
            order = np.argsort(xs, kind="stable")
            out.setdefault(str(rec["task"]), []).append((xs[order], ys[order]))
    except (OSError, EOFError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"reference file {str(path)!r} is not a gzipped JSON list of {{task, xs, ys}} records "
                          f"({type(exc).__name__}: {exc})") from None
    return out


def window_mean(xs: np.ndarray, ys: np.ndarray, at: np.ndarray | float, window: float = WINDOW) -> np.ndarray:
    """Mean of the ``ys`` whose ``xs`` lie in ``(s - window, s]`` for each ``s`` of ``at`` (NaN where none do)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    at = np.atleast_1d(np.asarray(at, float))
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    csum = np.concatenate([[0.0], np.cumsum(ys)])
    hi = np.searchsorted(xs, at, side="right")
    lo = np.searchsorted(xs, at - window, side="right")
    n = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (csum[hi] - csum[lo]) / np.maximum(n, 1), np.nan)


def reference_band(curves: Curves, at: np.ndarray | float, window: float = WINDOW
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, min, max)`` over seeds of each seed's :func:`window_mean` at ``at`` (seeds without a point in a
    window are left out there; NaN where no seed has one)."""
    at = np.atleast_1d(np.asarray(at, float))
    if not curves:
        nan = np.full(len(at), np.nan)
        return nan, nan.copy(), nan.copy()
    per_seed = np.stack([window_mean(xs, ys, at, window) for xs, ys in curves])
    valid = ~np.isnan(per_seed).all(0)
    mean, lo, hi = (np.full(len(at), np.nan) for _ in range(3))
    if valid.any():
        mean[valid] = np.nanmean(per_seed[:, valid], 0)
        lo[valid] = np.nanmin(per_seed[:, valid], 0)
        hi[valid] = np.nanmax(per_seed[:, valid], 0)
    return mean, lo, hi


# --- drawing ------------------------------------------------------------------------------------------------

def check_out(out: Path | str) -> Path:
    """Validate an output path before anything is computed: a known suffix, not a directory, and a writable
    nearest existing parent (missing parents are created when writing).

    Raises:
        ConfigError: otherwise.
    """
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"--out {str(out)!r}: expected a file name ending in {', '.join(FORMATS)}")
    return mio.check_output_file(out, "--out")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _steps_axis(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x else "0"))
    ax.set_xlabel("env steps")
    ax.grid(alpha=0.3)


def colours(n: int) -> list[Any]:
    """``n`` distinct run colours (tab10, then tab20)."""
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def draw_band(ax: Any, members: list[Run], colour: Any, window: float = WINDOW, xmax: float | None = None) -> None:
    """A batch of seeds on the return panel: every member's episodes (faint points) and, on a grid of 100 env-step
    points, the mean over members of each member's :func:`window_mean` (line) with its min–max (band)."""
    xmax = xmax or max([r.furthest for r in members] + [window])
    grid = np.linspace(0, xmax, 101)[1:]
    curves = []
    for run in members:
        xs, ys = run.series("episode", "return")
        if len(xs):
            ax.scatter(xs, ys, s=3, color=colour, alpha=0.12, lw=0)
            curves.append(np.where(grid <= run.furthest, window_mean(xs, ys, grid, window), np.nan))
    label = run_label({k: v for k, v in members[0].config.items() if k != "seed"}, members[0].path.parent.name)
    if not curves:
        ax.plot([], [], color=colour, label=f"{label} (no episodes yet)")
        return
    per = np.stack(curves)
    ok = ~np.all(np.isnan(per), axis=0)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, lo, hi = np.nanmean(per[:, ok], 0), np.nanmin(per[:, ok], 0), np.nanmax(per[:, ok], 0)
    ax.fill_between(grid[ok], lo, hi, color=colour, alpha=0.2, lw=0)
    ax.plot(grid[ok], mean, color=colour, lw=1.8, label=f"{label}: mean, min–max of {len(curves)} seeds")


def draw_returns(ax: Any, runs: list[Run], reference: dict[str, Curves] | None = None, window: float = WINDOW,
                 xmax: float | None = None, run_colours: list[Any] | None = None, ref_name: str = "reference",
                 warn: Any = None, tasks: list[str] | None = None, bands: list[tuple[list[Run], Any]] | None = None
                 ) -> None:
    """The return panel: each run's training-episode returns (points) and their :func:`window_mean` (line), eval
    returns (markers), and for each run's task in ``reference`` its mean and seed min-max band up to ``xmax``
    (default: the furthest env step of the runs). ``tasks`` (reference names, default those of the runs' envs)
    choose the reference curves; ``warn(msg)`` is told about tasks the reference lacks. ``bands``: batches of
    seeds, ``(member runs, colour)`` each, drawn by :func:`draw_band` (their members are not in ``runs``)."""
    run_colours = run_colours or colours(len(runs))
    bands = bands or []
    everyone = runs + [m for members, _ in bands for m in members]
    xmax = xmax or max([r.furthest for r in everyone] + [window])
    if reference is not None:
        if tasks is None:
            tasks = list(dict.fromkeys(t for t in (reference_task(r.env) for r in everyone) if t))
        # one point per window (the statistic of disjoint windows; the proprio curves have a point every 10k)
        grid = np.arange(window, xmax + 1, window) if xmax >= 4 * window else np.linspace(0, xmax, 41)[1:]
        for i, task in enumerate(tasks):
            if task not in reference:
                if warn:
                    warn(f"note: no reference curve for {task} in {ref_name}")
                continue
            mean, lo, hi = reference_band(reference[task], grid, window)
            tag = f" {task}" if len(tasks) > 1 else ""
            ok = ~np.isnan(mean)  # windows without a reference point (window < the reference's spacing)
            ax.fill_between(grid[ok], lo[ok], hi[ok], color="0.5", alpha=0.2, lw=0)
            ax.plot(grid[ok], mean[ok], color="k", ls=LINESTYLES[i % len(LINESTYLES)], marker=".", lw=1.2,
                    label=f"{ref_name}{tag}: mean, min–max of {len(reference[task])} seeds")
    for members, c in bands:
        draw_band(ax, members, c, window, xmax)
    for run, c in zip(runs, run_colours, strict=True):
        xs, ys = run.series("episode", "return")
        if len(xs):
            ax.scatter(xs, ys, s=4, color=c, alpha=0.25, lw=0)
            ax.plot(xs, window_mean(xs, ys, xs, window), color=c, lw=1.5, label=run.label)
        else:
            ax.plot([], [], color=c, label=f"{run.label} (no episodes yet)")
        ex, ey = run.eval_series()
        if len(ex):
            ax.plot(ex, ey, "o--", color=c, ms=4, lw=1, label=f"{run.label} eval")
    ax.set_xlim(0, xmax * 1.02)
    ax.set_ylabel("episode return")
    _steps_axis(ax)
    ax.legend(fontsize=6, loc="best")


def _draw_panel(ax: Any, panel: Panel, runs: list[Run], run_colours: list[Any], xmax: float) -> None:
    present = [(k, lab) for k, lab in panel.series if any(len(r.series("train", k)[0]) for r in runs)]
    values = []
    for run, c in zip(runs, run_colours, strict=True):
        for j, (key, _) in enumerate(present):
            xs, ys = run.series("train", key)
            if len(xs):
                ax.plot(xs, ys, color=c, ls=LINESTYLES[j % len(LINESTYLES)], lw=1.2)
                values.append(ys)
    if panel.log and values and all((v > 0).all() for v in values):
        ax.set_yscale("log")
    ax.set_title(panel.title, fontsize=9)
    ax.set_xlim(0, xmax * 1.02)
    _steps_axis(ax)
    if len(present) > 1:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color="0.3", ls=LINESTYLES[j % len(LINESTYLES)]) for j in range(len(present))]
        ax.legend(handles, [lab for _, lab in present], fontsize=6, loc="best")


def panels_present(runs: list[Run]) -> list[Panel]:
    """The :data:`PANELS` with at least one logged value in some run."""
    return [p for p in PANELS if any(len(r.series("train", k)[0]) for k, _ in p.series for r in runs)]


def save_figure(fig: Any, out: Path | str) -> Path:
    """Render ``fig`` in the format of ``out``'s suffix and write it atomically; closes the figure."""
    out = Path(out)
    buf = _io.BytesIO()
    try:
        fig.savefig(buf, format=out.suffix.lower().lstrip("."), dpi=110)
    finally:
        pyplot().close(fig)
    data = buf.getvalue()
    return mio.atomic_write(out, lambda f: f.write(data))


def plot_runs(run_dirs: list[Path | str], out: Path | str, reference: Path | str | None = None,
              window: float = WINDOW, warn: Any = None) -> Path:
    """Draw the return and diagnostics panels of ``run_dirs`` into ``out`` (see the module docstring).

    Raises:
        ConfigError: bad run directory, reference file or output path (checked before anything is written).
    """
    out = check_out(out)
    if not (math.isfinite(window) and window > 0):  # NaN compares false with everything, inf averages nothing
        raise ConfigError(f"--window must be a finite number > 0 of env steps, got {window:g}")
    groups = expand_batches(run_dirs)
    runs = load_runs([d for g in groups for d in g])
    ref = load_reference(reference) if reference is not None else None
    plt = pyplot()
    panels = panels_present(runs)
    # the return panel spans two columns of the first row; the diagnostics fill the other cells in order
    ncols = 4 if panels else 2
    nrows = math.ceil((2 + len(panels)) / ncols)
    fig = plt.figure(figsize=(4.4 * ncols, 3.2 * nrows))
    gs = fig.add_gridspec(nrows, ncols)
    cells = [(i // ncols, i % ncols) for i in range(2, nrows * ncols)]
    axes = [fig.add_subplot(gs[0, 0:2])] + [fig.add_subplot(gs[r, c]) for r, c in cells[:len(panels)]]
    run_colours = colours(len(runs))
    xmax = max([r.furthest for r in runs] + [window])
    singles, single_colours, bands, i = [], [], [], 0
    for path, g in zip(run_dirs, groups, strict=True):
        if not (Path(path) / MEMBERS_FILE).is_file():
            singles.append(runs[i])
            single_colours.append(run_colours[i])
        else:
            bands.append((runs[i:i + len(g)], run_colours[i]))
        i += len(g)
    draw_returns(axes[0], singles, ref, window, xmax=xmax, run_colours=single_colours,
                 ref_name=reference_label(reference) if reference is not None else "reference", warn=warn,
                 bands=bands)
    axes[0].set_title(f"episode return (mean over {window / 1000:g}k env steps)", fontsize=9)
    for ax, panel in zip(axes[1:], panels, strict=True):
        _draw_panel(ax, panel, runs, run_colours, xmax)
    fig.tight_layout()
    return save_figure(fig, out)


def reference_label(path: Path | str) -> str:
    """``dmc_proprio-dreamerv3.json.gz`` -> ``dreamerv3 (dmc_proprio)``."""
    stem = Path(path).name.removesuffix(".gz").removesuffix(".json")
    source, _, method = stem.partition("-")
    return f"{method} ({source})" if method else stem

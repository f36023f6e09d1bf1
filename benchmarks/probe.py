"""Linear and k-NN probes of a pretrained encoder vs the same architecture at random initialisation.

    python benchmarks/probe.py --model encoders/weights/dreamshift-vit-tiny --update-card

Held-out data (seeds disjoint from pretraining's ``--seed 0`` stream; fresh episodes, random actions):

- **task identity**: frames of ``TASK_ENVS`` (dm_control and Meta-World); the probe is fit on training episodes
  and tested on clean frames of other episodes and on shifted frames of other episodes (one random applicable
  shift kind per episode, severity 1-5, :mod:`shifts`). Two fits: ``clean_fit`` on clean training episodes
  only (the benchmark's setting: train clean, test shifted) and ``mixed_fit`` on clean + shifted ones.
- **cartpole state**: ``dmc:cartpole_swingup`` frames with the physics state; targets cart position
  (``qpos[slider]``, m) and pole angle as ``(cos, sin)`` (``qpos[hinge_1]``); same fits and test sets.

Probes on frozen features (``cls`` = layer-normed CLS token, ``mean`` = mean of the patch tokens), standardised
with the training split's mean/std:

- linear: closed-form ridge regression ``W = (X^T X + lambda I)^-1 X^T Y`` (one-hot targets for
  classification, argmax), ``lambda`` picked from a grid on a validation split of the training episodes;
- k-NN: cosine similarity, ``k = 5``, majority vote (classification only).

Metrics: accuracy (task identity), R^2 averaged over targets (cartpole). The random-init baseline is
``Dinov2Model(config)`` of the pretrained model's own config (as :func:`mbrl.runs.pretrain.build_backbone` builds
it) at another seed, with the pretrained model's preprocessing (mean/std).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TASK_ENVS = ("dmc:cartpole_swingup", "dmc:walker_walk", "dmc:cheetah_run", "dmc:reacher_easy", "dmc:finger_spin",
             "dmc:ball_in_cup_catch", "dmc:hopper_hop", "dmc:pendulum_swingup", "dmc:acrobot_swingup",
             "metaworld:reach", "metaworld:door-open", "metaworld:drawer-open")
STATE_ENV = "dmc:cartpole_swingup"
LAMBDAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def collect(env_name: str, plan: list[bool], episode_len: int, seed: int,
            state: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames of random-action episodes of ``env_name``, one per entry of ``plan`` (True = shifted: one random
    applicable kind, severity 1-5), ``episode_len + 1`` frames each, from one env instance.

    Returns:
        ``(frames (N, 64, 64, 3) uint8, episode index into plan (N,), targets (N, 3) float64)``: targets are
        ``(cart position m, cos angle, sin angle)`` when ``state`` (cartpole only), else empty ``(N, 0)``.
    """
    from encoders.pretrain_data import shift_kinds_for
    from envs.driver import Driver
    from envs.factory import make_env
    from shifts.base import ShiftWrapper, make_shift

    rng = np.random.default_rng(seed)
    env = make_env(env_name, size=64, action_repeat=2, seed=seed, time_limit=2 * episode_len)
    kinds = shift_kinds_for(env_name)
    frames, eps, targets = [], [], []

    def keep(image: np.ndarray) -> None:  # the simulator shows this frame: read its state here
        frames.append(image)
        if state:
            qpos = env.unwrapped.physics.named.data.qpos
            angle = float(qpos["hinge_1"][0])
            targets.append((float(qpos["slider"][0]), np.cos(angle), np.sin(angle)))

    try:
        for ep, shifted in enumerate(plan):
            active = [make_shift(str(rng.choice(kinds)), int(rng.integers(1, 6)), int(rng.integers(2**31)))] \
                if shifted else []
            wrapped = ShiftWrapper(env, active)
            driver = Driver(wrapped, rng=rng, on_step=[lambda step: keep(step.obs["image"][0])])
            try:  # episode_len steps (the time limit), episode_len + 1 frames
                last = driver.episode(int(rng.integers(2**31)), max_steps=episode_len)
                keep(last.last_obs["image"])
                eps += [ep] * (len(frames) - len(eps))
            finally:
                wrapped.remove_shifts()
    finally:
        env.close()
    tgt = np.asarray(targets, np.float64) if state else np.zeros((len(frames), 0))
    return np.stack(frames), np.asarray(eps), tgt


def _split(data: tuple[np.ndarray, np.ndarray, np.ndarray], plan_split: list[str]) -> dict[str, tuple]:
    """Split ``collect`` output by the split name of each episode."""
    frames, eps, tgt = data
    names = np.asarray(plan_split)[eps]
    return {s: (frames[names == s], eps[names == s], tgt[names == s]) for s in dict.fromkeys(plan_split)}


@torch.no_grad()
def features(model: torch.nn.Module, frames: np.ndarray, mean: torch.Tensor, std: torch.Tensor,
             batch: int = 256) -> dict[str, np.ndarray]:
    """``(N, 64, 64, 3) uint8`` frames -> ``{"cls": (N, D), "mean": (N, D)}`` float64 features of a
    ``Dinov2Model`` (normalised with ``mean``/``std`` ``(3,)`` on ``[0, 1]``)."""
    model.eval()
    cls, avg = [], []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(frames[i:i + batch]).permute(0, 3, 1, 2).float() / 255.0
        x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
        lhs = model(pixel_values=x).last_hidden_state
        cls.append(lhs[:, 0].double().numpy())
        avg.append(lhs[:, 1:].mean(1).double().numpy())
    return {"cls": np.concatenate(cls), "mean": np.concatenate(avg)}


def ridge_fit(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge on centred data: ``W = (X^T X + lam I)^-1 X^T (Y - mean Y)``, ``b = mean Y - mean X W``.
    ``x (N, D)``, ``y (N, K)`` -> ``(W (D, K), b (K,))``."""
    mx, my = x.mean(0), y.mean(0)
    xc = x - mx
    w = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ (y - my))
    return w, my - mx @ w


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination averaged over target columns."""
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    return float(np.mean(1 - ss_res / np.maximum(ss_tot, 1e-12)))


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu, sd = train.mean(0), train.std(0) + 1e-6
    return [(a - mu) / sd for a in (train, *others)]


def linear_probe(xtr: np.ndarray, ytr: np.ndarray, eptr: np.ndarray, tests: dict[str, tuple[np.ndarray, np.ndarray]],
                 classify: bool) -> dict[str, float]:
    """Ridge probe; ``lambda`` chosen on the last 20 % of training episodes, then refit on all of them.
    Classification targets are integer labels (one-hot regression, argmax); returns accuracy or R^2 per test."""
    xtr, *xts = _standardise(xtr, *[t[0] for t in tests.values()])
    target = np.eye(int(ytr.max()) + 1)[ytr] if classify else ytr
    cut = np.quantile(np.unique(eptr), 0.8)
    fit, val = eptr <= cut, eptr > cut

    def score(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        pred = x @ w + b
        return float((pred.argmax(1) == y).mean()) if classify else r2(y, pred)

    best = max(LAMBDAS, key=lambda lam: score(*ridge_fit(xtr[fit], target[fit], lam), xtr[val], ytr[val]))
    w, b = ridge_fit(xtr, target, best)
    return {name: score(w, b, x, t[1]) for name, x, t in zip(tests, xts, tests.values(), strict=True)}


def knn_probe(xtr: np.ndarray, ytr: np.ndarray, tests: dict[str, tuple[np.ndarray, np.ndarray]],
              k: int = 5) -> dict[str, float]:
    """Cosine k-NN majority vote on standardised features; accuracy per test set."""
    xtr, *xts = _standardise(xtr, *[t[0] for t in tests.values()])
    xtr = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    out = {}
    for (name, (_, y)), x in zip(tests.items(), xts, strict=True):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        nn_idx = np.argsort(-(x @ xtr.T), axis=1)[:, :k]
        votes = ytr[nn_idx]
        pred = np.array([np.bincount(v).argmax() for v in votes])
        out[name] = float((pred == y).mean())
    return out


def run(model_dir: str, seed: int = 1000, episodes: int = 3, episode_len: int = 50, random_seed: int = 12345,
        envs: tuple[str, ...] = TASK_ENVS) -> dict:
    """Collect held-out data, extract features of the pretrained and the random-init model, run the probes.

    Returns:
        ``{"data": sizes, "results": {model: {feature: {probe/test: metric}}}, "seconds": float}``.
    """
    import transformers

    t0 = time.time()
    pre = json.loads((Path(model_dir) / "preprocessor_config.json").read_text())
    mean, std = torch.tensor(pre["image_mean"]), torch.tensor(pre["image_std"])
    pretrained = transformers.Dinov2Model.from_pretrained(model_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_seed)
        random_init = transformers.Dinov2Model(pretrained.config)  # same architecture, fresh initialisation
    arch = _arch_of(pretrained.config)
    models = {"pretrained": pretrained, "random_init": random_init}

    # per env: `episodes` clean train, shifted train, clean test and shifted test episodes
    splits = [s for s in ("train", "train_shifted", "test_clean", "test_shifted") for _ in range(episodes)]
    plan = [s.endswith("shifted") for s in splits]
    per_env = []
    for e, name in enumerate(envs):
        parts = _split(collect(name, plan, episode_len, seed + e), splits)
        per_env.append({k: (f, ep, np.full(len(f), e)) for k, (f, ep, _) in parts.items()})
    task = {k: tuple(np.concatenate(c) for c in zip(*[p[k] for p in per_env], strict=True))
            for k in ("train", "train_shifted", "test_clean", "test_shifted")}
    # cartpole: 4x the episodes per training set, 2x per test set, episodes twice as long
    splits = [s for s, m in (("train", 4), ("train_shifted", 4), ("test_clean", 2), ("test_shifted", 2))
              for _ in range(m * episodes)]
    state = _split(collect(STATE_ENV, [s.endswith("shifted") for s in splits], 2 * episode_len, seed + 500,
                           state=True), splits)
    t_collect = time.time() - t0
    results: dict[str, dict] = {}
    for mname, model in models.items():
        feats_task = {k: features(model, v[0], mean, std) for k, v in task.items()}
        feats_state = {k: features(model, v[0], mean, std) for k, v in state.items()}
        results[mname] = {}
        for feat in ("cls", "mean"):
            res = {}
            for fit in ("clean", "mixed"):  # probe fit on clean training episodes / on clean + shifted ones
                parts = ["train"] if fit == "clean" else ["train", "train_shifted"]
                for label, data, feats in (("task", task, feats_task), ("cartpole", state, feats_state)):
                    xtr = np.concatenate([feats[p][feat] for p in parts])
                    # episode ids of the second part are offset so that validation uses whole episodes
                    eptr = np.concatenate([data[p][1] + 1000 * i for i, p in enumerate(parts)])
                    tests = {s: (feats[s][feat], data[s][2]) for s in ("test_clean", "test_shifted")}
                    if label == "task":
                        ytr = np.concatenate([data[p][2] for p in parts])
                        for s, v in linear_probe(xtr, ytr, eptr, tests, True).items():
                            res[f"task_linear_acc/{fit}_fit/{s}"] = v
                        for s, v in knn_probe(xtr, ytr, tests).items():
                            res[f"task_knn_acc/{fit}_fit/{s}"] = v
                    else:
                        ytr = np.concatenate([data[p][2] for p in parts])
                        for s, v in linear_probe(xtr, ytr, eptr, tests, False).items():
                            res[f"cartpole_state_r2/{fit}_fit/{s}"] = v
            results[mname][feat] = res
    sizes = {f"task_{k}": len(v[0]) for k, v in task.items()} | {f"cartpole_{k}": len(v[0]) for k, v in state.items()}
    return {"model": model_dir, "arch": arch, "seed": seed, "random_init_seed": random_seed, "envs": list(envs),
            "data": sizes, "results": results, "collect_s": round(t_collect, 1),
            "seconds": round(time.time() - t0, 1)}


def _arch_of(config: object) -> str:
    from mbrl.runs.pretrain import ARCHS

    for name, a in ARCHS.items():
        if (config.hidden_size, config.num_hidden_layers) == (a["hidden_size"], a["num_hidden_layers"]):
            return name
    return f"width {config.hidden_size}, depth {config.num_hidden_layers}"


def table(report: dict) -> str:
    """Markdown table: rows = probe/test set, columns = model x feature."""
    res = report["results"]
    cols = [(m, f) for m in res for f in res[m]]
    keys = list(next(iter(next(iter(res.values())).values())))
    lines = ["| probe / test set | " + " | ".join(f"{m} `{f}`" for m, f in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(_cell(res[m][f][k]) for m, f in cols) + " |")
    return "\n".join(lines)


def _cell(v: float) -> str:
    return f"{v:.3f}" if v > -10 else "< -10"


def update_card(model_dir: str, report: dict, command: str) -> None:
    """Replace the probe section of ``MODEL_CARD.md`` (between the markers of :mod:`mbrl.runs.pretrain`)."""
    from envs.files import atomic_write
    from mbrl.runs.pretrain import CARD, PROBE_BEGIN, PROBE_END

    path = Path(model_dir) / CARD
    text = path.read_text()
    d = report["data"]
    body = (f"{PROBE_BEGIN}\n`{command}` ({report['seconds']:.0f} s). Held-out episodes (seeds from "
            f"{report['seed']}, disjoint from pretraining), frozen features. `clean_fit`: the probe is fit on clean "
            f"training episodes only (the benchmark's setting: train clean, test shifted); `mixed_fit`: on clean + "
            f"shifted training episodes. R^2 below -10 is shown as `< -10` (raw values in probe.json).\n\n"
            f"- Task identity: {len(report['envs'])} envs ({', '.join(report['envs'])}); train "
            f"{d['task_train']} clean (+ {d['task_train_shifted']} shifted) frames, "
            f"test {d['task_test_clean']} clean + {d['task_test_shifted']} shifted "
            f"frames (other episodes; one random applicable shift per episode, severity 1-5). Linear = closed-form "
            f"ridge on one-hot labels (lambda by validation); k-NN = cosine, k = 5. Chance = "
            f"{1 / len(report['envs']):.3f}.\n"
            f"- Cartpole state (`{STATE_ENV}`): ridge regression of cart position and (cos, sin) pole angle, R^2 "
            f"averaged over the 3 targets; train {d['cartpole_train']} (+ {d['cartpole_train_shifted']}), "
            f"test {d['cartpole_test_clean']} clean + "
            f"{d['cartpole_test_shifted']} shifted frames.\n"
            f"- Baseline: the same architecture at random initialisation (seed {report['random_init_seed']}), same "
            f"preprocessing.\n\n{table(report)}\n{PROBE_END}")
    if PROBE_BEGIN in text and PROBE_END in text:
        text = text[:text.index(PROBE_BEGIN)] + body + text[text.index(PROBE_END) + len(PROBE_END):]
    else:
        text += "\n## Probe\n\n" + body + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(ROOT / "encoders" / "weights" / "dreamshift-vit-tiny"))
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--episodes", type=int, default=3, help="episodes per env and split")
    p.add_argument("--episode-len", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="JSON report (default: MODEL/probe.json)")
    p.add_argument("--update-card", action="store_true", help="write the table into MODEL/MODEL_CARD.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = run(args.model, seed=args.seed, episodes=args.episodes, episode_len=args.episode_len)
    from envs.files import write_json

    out = write_json(args.out or Path(args.model) / "probe.json", report)
    print(table(report))
    print(f"report: {out} ({report['seconds']:.0f} s)")
    if args.update_card:
        cmd = "python benchmarks/probe.py " + " ".join(argv if argv is not None else sys.argv[1:])
        update_card(args.model, report, cmd.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())

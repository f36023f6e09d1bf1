"""Frame collection for encoder pretraining (:mod:`mbrl.runs.pretrain`): random-action rollouts of our envs under
randomised visual shifts.

- Env specs: comma-separated names or shell globs over :func:`envs.list_envs`, e.g. ``dmc:*``,
  ``metaworld:*``, ``dmc:cartpole_*,metaworld:reach``. Only ``dmc:`` and ``metaworld:`` envs are collected
  (``driving:``/``carla:`` are not offered by globs; CARLA needs a server).
- Budget: ``n_frames`` frames split evenly over the envs (the first ``n_frames mod n_envs`` envs get one more).
  Every env runs episodes of ``episode_len`` agent steps (action repeat 2, uniform random actions in
  ``[-1, 1]``); every observation (reset frame included) is kept, so an episode yields ``episode_len + 1``
  frames.
- Diversity: ``diversity`` in ``[0, 1]`` is the probability that an episode is shifted, so in expectation that
  fraction of the frames is shifted. A shifted episode draws one kind uniformly from the
  :func:`shifts.suites.ordered_kinds` that apply to the env (scene and pixel level, :func:`shifts.base.supports`)
  and a severity uniformly from 1-5, and is collected through :class:`shifts.base.ShiftWrapper`.

All randomness (actions, episode seeds, shift draws) derives from ``seed``: the same arguments give the same
frames (up to renderer nondeterminism, which MuJoCo's software renderer does not have).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from envs import list_envs
from envs.driver import Driver, Step
from envs.errors import ConfigError
from envs.factory import make_env
from envs.files import atomic_write
from shifts.base import ShiftWrapper, make_shift, supports
from shifts.suites import ordered_kinds

COLLECT_SUITES = ("dmc", "metaworld")
ACTION_REPEAT = 2


@dataclass
class FrameSet:
    """Collected frames and their labels.

    Attributes:
        frames: ``(N, H, W, 3) uint8`` images.
        env_ids: ``(N,) int64`` index into :attr:`env_names`.
        kinds: ``(N,) int64`` index into :attr:`kind_names` (0 = ``none``, clean).
        severities: ``(N,) int64`` 0-5.
        env_names, kind_names: the label vocabularies.
        meta: free-form JSON-able description (the collection arguments and time; see
            :func:`mbrl.runs.pretrain.pretrain`, which reuses a cached file only when they match).
    """

    frames: np.ndarray
    env_ids: np.ndarray
    kinds: np.ndarray
    severities: np.ndarray
    env_names: list[str]
    kind_names: list[str]
    meta: dict | None = None

    def save(self, path: str) -> None:
        """Write an ``.npz`` atomically (temp file + rename, :func:`envs.files.atomic_write`)."""
        atomic_write(path, lambda f: np.savez(f, frames=self.frames, env_ids=self.env_ids, kinds=self.kinds,
                                              severities=self.severities, env_names=np.array(self.env_names),
                                              kind_names=np.array(self.kind_names),
                                              meta=np.array(json.dumps(self.meta or {}, sort_keys=True))))

    @classmethod
    def load(cls, path: str) -> FrameSet:
        """Read a file written by :meth:`save`."""
        with np.load(path) as z:
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
            return cls(z["frames"], z["env_ids"], z["kinds"], z["severities"], [str(s) for s in z["env_names"]],
                       [str(s) for s in z["kind_names"]], meta)


def expand_envs(spec: str) -> list[str]:
    """Expand ``"dmc:*,metaworld:reach"`` into env names (sorted within a glob, order of the spec kept,
    duplicates dropped).

    Raises:
        ConfigError: an empty spec, a pattern that matches no collectable env (the message lists the suites and
            a few names), or a name outside ``dmc:``/``metaworld:``.
    """
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    if not patterns:
        raise ConfigError("--envs is empty; give env names or globs, e.g. 'dmc:*,metaworld:*'")
    names = [n for n in list_envs() if n.split(":", 1)[0] in COLLECT_SUITES]
    out: list[str] = []
    for pattern in patterns:
        hits = sorted(fnmatch.filter(names, pattern))
        if not hits:
            examples = ", ".join(names[:3] + ["metaworld:reach"] if names else [])
            raise ConfigError(f"--envs pattern {pattern!r} matches no env; allowed: names or globs over "
                              f"{', '.join(s + ':' for s in COLLECT_SUITES)} envs (e.g. {examples}; "
                              f"`dreamshift envs list` prints them all)")
        out += [h for h in hits if h not in out]
    return out


def shift_kinds_for(env_name: str) -> list[str]:
    """Shift kinds (:func:`shifts.suites.ordered_kinds`) that apply to ``env_name``."""
    return [k for k in ordered_kinds() if supports(k, env_name)]


def collect_frames(env_names: list[str], n_frames: int, *, diversity: float = 0.5, seed: int = 0,
                   size: int = 64, episode_len: int = 50,
                   progress: Callable[[int], None] | None = None) -> FrameSet:
    """Collect ``n_frames`` frames with random actions from ``env_names`` under random shifts.

    Args:
        env_names: env names (see :func:`expand_envs`).
        n_frames: total number of frames (>= 1).
        diversity: probability that an episode is shifted (see the module docstring), in ``[0, 1]``.
        seed: seed of actions, episode seeds and shift draws.
        size: image side in pixels.
        episode_len: agent steps per episode (action repeat 2, so ``2 * episode_len`` env steps).
        progress: called with the number of new frames after every episode.

    Returns:
        A :class:`FrameSet` of ``(n_frames, size, size, 3) uint8`` frames.

    Raises:
        ConfigError: ``n_frames < 1``, ``diversity`` outside ``[0, 1]``, ``episode_len < 1`` or no envs.
        envs.errors.EnvError: an env cannot be built (e.g. no renderer).
    """
    if n_frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {n_frames}")
    if not 0.0 <= diversity <= 1.0:
        raise ConfigError(f"--diversity must be in [0, 1] (fraction of shifted episodes), got {diversity}")
    if episode_len < 1:
        raise ConfigError(f"episode length must be >= 1 agent step, got {episode_len}")
    if not env_names:
        raise ConfigError("no envs to collect frames from")
    kind_names = ["none", *ordered_kinds()]
    rng = np.random.default_rng(seed)
    base, extra = divmod(n_frames, len(env_names))
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    env_ids = np.empty(n_frames, np.int64)
    kinds = np.zeros(n_frames, np.int64)
    sevs = np.zeros(n_frames, np.int64)
    kept: list[np.ndarray] = []  # one episode's frames (the driver's step callback appends)

    def keep(step: Step) -> None:
        kept.append(step.obs["image"][0])

    i = 0
    for e, name in enumerate(env_names):
        quota = base + (1 if e < extra else 0)
        if quota == 0:
            continue
        env = make_env(name, size=size, action_repeat=ACTION_REPEAT, seed=int(rng.integers(2**31)),
                       time_limit=ACTION_REPEAT * episode_len)
        applicable = shift_kinds_for(name)
        try:
            got = 0
            while got < quota:
                shifted = bool(applicable) and rng.random() < diversity
                kind = str(rng.choice(applicable)) if shifted else "none"
                sev = int(rng.integers(1, 6)) if shifted else 0
                active = [make_shift(kind, sev, seed=int(rng.integers(2**31)))] if shifted else []
                wrapped = ShiftWrapper(env, active)
                left = quota - got
                kept.clear()
                driver = Driver(wrapped, rng=rng, on_step=[keep])
                try:
                    # frames = the observation before each step plus the last one, at most `left`; exactly
                    # min(episode_len, left) steps (each drawing its action from rng) unless the episode ends
                    last = driver.episode(int(rng.integers(2**31)), max_steps=min(episode_len, left))
                finally:
                    wrapped.remove_shifts()  # undo scene edits; wrapped.close() would also close the env
                shown = (kept + [last.last_obs["image"]])[:left]
                start = got
                frames[i + got:i + got + len(shown)] = shown
                got += len(shown)
                kinds[i + start:i + got] = kind_names.index(kind)
                sevs[i + start:i + got] = sev
                if progress is not None:
                    progress(got - start)
        finally:
            env.close()
        env_ids[i:i + quota] = e
        i += quota
    return FrameSet(frames, env_ids, kinds, sevs, list(env_names), kind_names)

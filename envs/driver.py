"""``Driver``: the one rollout loop of dreamshift. Training's collection, evaluation, the world-model diagnostics,
frame collection for pretraining and the analyses, severity calibration, the benchmarks' policy and random
rollouts all step their envs through it (DreamerV3's ``embodied/core/driver.py`` is the model: one driver,
callbacks per step and per episode).

It lives in ``envs`` (the lowest layer) so that every layer can use it: the policy and the observation
transform are plain callables, so nothing here imports a model, a shift or torch.

One driver step (:meth:`Driver.step`), for ``N`` envs (``N`` = ``num_envs`` of a vector env, 1 for a single
env)::

    action, outs = policy(obs, is_first)          # obs: the current (transformed) observations
    on_step(Step(obs, reward, is_first, action, outs, t)) for every callback, in registration order
    env.step(action)
    for each env i whose episode ended (ascending i):
        on_episode(Episode(i, record, last_obs, last_reward, terminated)) for every callback

so a step callback sees the observation together with the action taken from it and the reward received on
arriving at it (the replay layout of :mod:`mbrl.replay`, DreamerV3's), and, for a single env, the simulator is
still in the state of that observation (physics states and segmentation masks can be read there). The last
observation of an episode is never acted on; it reaches the callbacks through :class:`Episode`.

Envs:

- a vector env (:func:`envs.make_vector_env`, ``SAME_STEP`` autoreset, :mod:`envs.vector`): ended sub-envs
  are reset by the vector env inside ``step``; the driver takes the last observation from
  ``info["final_obs"]``. Episodes run on forever: use :meth:`Driver.step` or :meth:`Driver.run`.
- a single gymnasium env (:func:`envs.make_env`, possibly wrapped, e.g. by :class:`shifts.base.ShiftWrapper`):
  observations are given to the policy and the callbacks with a leading axis of 1 and the action's leading
  axis is removed before ``env.step``. After an episode ends the env is reset (without a seed) at the start
  of the next :meth:`Driver.step`, never eagerly, so :meth:`Driver.episode` runs exactly one seeded episode
  and leaves the env at its last state.

Shifts: a shift that edits the scene must wrap the env (:class:`shifts.base.ShiftWrapper`) before it is given
to the driver; ``transform`` maps every observation the driver sees (after each reset and step, and the last
observations) for a pure observation transform, e.g. a pixel corruption of a vector env's frames. ``shift`` and
``severity`` only label the episode records.

Random actions: ``policy=None`` draws uniform actions from the action space's bounds with ``rng`` (a
``numpy.random.Generator``; :func:`random_policy`): exactly ``rng.uniform(low, high, (N, *A))`` per step, so
a loop that drew ``rng.uniform(-1, 1, A)`` per step of one env gets the same actions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.errors import EnvError

__all__ = ["Driver", "Episode", "Obs", "Policy", "Step", "random_policy"]

#: A batch of observations: ``{"image": (N, H, W, 3) uint8, "state": (N, D) float32}`` (the env's keys).
Obs = dict[str, np.ndarray]
#: ``policy(obs, is_first) -> (action (N, *A), outs)``: ``obs`` as :data:`Obs`, ``is_first`` ``(N,)`` bool (True
#: where ``obs`` starts an episode); ``outs`` a dict of anything the policy wants the step callbacks to see
#: (e.g. cached encoder features), possibly empty.
Policy = Callable[[Obs, np.ndarray], tuple[np.ndarray, dict[str, Any]]]


@dataclass
class Step:
    """What a step callback receives: the observations of ``N`` envs and what the policy did with them.

    Attributes:
        obs: the current observations, ``(N, ...)`` per key, after ``transform``.
        reward: ``(N,)`` float32, the reward received on arriving at ``obs`` (0 where ``is_first``).
        is_first: ``(N,)`` bool, ``obs`` is the first observation of an episode.
        action: ``(N, *A)`` the policy's actions (float32 from an agent or the default random policy).
        outs: the policy's extra outputs for this step (``{}`` for random actions).
        t: ``(N,)`` int64, agent steps since each env's episode started (0 at the first observation).
    """

    obs: Obs
    reward: np.ndarray
    is_first: np.ndarray
    action: np.ndarray
    outs: dict[str, Any]
    t: np.ndarray


@dataclass
class Episode:
    """What an episode callback receives when the episode of env ``index`` ends.

    Attributes:
        index: the env's index in ``[0, N)`` (0 for a single env).
        record: ``return`` (float, undiscounted sum of the env rewards, float64 arithmetic), ``length`` (int,
            env steps: ``info["env_steps"]`` at the end, else agent steps), ``steps`` (int, agent steps),
            ``success`` (float, max of ``info["success"]`` over the episode; only for envs that report it),
            ``shift`` (str) and ``severity`` (int) (the driver's labels), ``seed`` (the reset seed of the
            episode, ``None`` for an unseeded reset or an autoreset), ``index`` (int) and ``cut`` (bool: the
            driver stopped the episode, ``max_steps``/``until`` of :meth:`Driver.episode`, rather than the env).
        last_obs: the last observation of the episode, one env's arrays (no leading axis), after ``transform``.
        last_reward: float32, the reward received on arriving at ``last_obs`` (0 for a 0-step cut episode).
        terminated: the env ended the episode in a terminal state (no bootstrap); False for time limits and cuts.
    """

    index: int
    record: dict[str, Any]
    last_obs: Obs
    last_reward: np.float32
    terminated: bool


def random_policy(action_space: Any, rng: np.random.Generator, dtype: Any = np.float32) -> Policy:
    """A policy of uniform actions in ``[action_space.low, action_space.high]`` drawn from ``rng``.

    Each call draws ``rng.uniform(low, high, (N, *A))`` (float64, then cast to ``dtype``), the same stream as
    ``N`` consecutive draws of ``rng.uniform(low, high, A)``.

    Args:
        action_space: a gymnasium ``Box`` (one env's).
        rng: the generator; advanced by every call.
        dtype: dtype of the actions (float32 as agents produce; float64 keeps the draws unrounded).
    """
    low = np.asarray(action_space.low, np.float64)
    high = np.asarray(action_space.high, np.float64)

    def policy(obs: Obs, is_first: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        return rng.uniform(low, high, (len(is_first), *low.shape)).astype(dtype), {}

    return policy


class Driver:
    """Steps one env or a vector env with a policy (or random actions) and reports steps and episodes.

    Args:
        env: a gymnasium vector env (``num_envs`` sub-envs, ``SAME_STEP`` autoreset) or a single gymnasium env
            with dict observations.
        policy: :data:`Policy`; ``None`` acts at random (:func:`random_policy` with ``rng``).
        rng: the generator of the random policy (only with ``policy=None``).
        action_dtype: dtype of the random actions (only with ``policy=None``).
        transform: ``transform(obs) -> obs`` applied to every observation batch the driver sees (``(N, ...)``
            per key; the last observation of an episode is passed with a leading axis of 1). Must not modify
            its input in place.
        shift, severity: labels copied into every episode record (the shift itself is applied by the env
            wrapper or by ``transform``).
        on_step: callbacks ``fn(step: Step)``, called once per driver step before the env steps.
        on_episode: callbacks ``fn(episode: Episode)``, called once per ended episode after the env stepped.

    Attributes:
        num_envs: ``N``.
        obs: the current observations (:data:`Obs`), ``None`` before the first reset.
        steps, episodes: agent steps (summed over the envs) and ended episodes since construction.

    Raises:
        EnvError: ``policy=None`` without ``rng``.
    """

    def __init__(self, env: Any, policy: Policy | None = None, *, rng: np.random.Generator | None = None,
                 action_dtype: Any = np.float32, transform: Callable[[Obs], Obs] | None = None,
                 shift: str = "none", severity: int = 0, on_step: Iterable[Callable[[Step], Any]] = (),
                 on_episode: Iterable[Callable[[Episode], Any]] = ()) -> None:
        self.env = env
        self.vector = hasattr(env, "num_envs") and hasattr(env, "single_action_space")
        self.num_envs = int(env.num_envs) if self.vector else 1
        space = env.single_action_space if self.vector else env.action_space
        self.action_shape = tuple(space.shape)
        if policy is None:
            if rng is None:
                raise EnvError("a Driver without a policy acts at random and needs rng (a numpy Generator)")
            policy = random_policy(space, rng, action_dtype)
        self.policy = policy
        self.transform = transform
        self.shift, self.severity = str(shift), int(severity)
        self._on_step = list(on_step)
        self._on_episode = list(on_episode)
        self.obs: Obs | None = None
        self.steps = 0
        self.episodes = 0
        self._needs_reset = True
        n = self.num_envs
        self._is_first = np.ones(n, bool)
        self._reward = np.zeros(n, np.float32)
        self._return = np.zeros(n, np.float64)
        self._t = np.zeros(n, np.int64)
        self._env_steps = np.zeros(n, np.int64)
        self._success = np.zeros(n, np.float64)
        self._has_success = np.zeros(n, bool)
        self._has_env_steps = np.zeros(n, bool)
        self._seeds: list[int | None] = [None] * n

    def on_step(self, callback: Callable[[Step], Any]) -> None:
        """Add a step callback (called after those already registered)."""
        self._on_step.append(callback)

    def on_episode(self, callback: Callable[[Episode], Any]) -> None:
        """Add an episode callback (called after those already registered)."""
        self._on_episode.append(callback)

    # ------------------------------------------------------------------------------------------------ rollout
    def reset(self, seed: int | None = None) -> Obs:
        """Reset every env and start new episodes; returns the (transformed) first observations ``(N, ...)``.

        Args:
            seed: a vector env reseeds sub-env ``i`` with ``seed + i``; a single env with ``seed``; ``None``
                continues the envs' own streams. Recorded as the episodes' ``seed``.
        """
        obs, _ = self.env.reset(seed=seed)
        if not self.vector:
            obs = _batch(obs)
        self.obs = self._map(obs)
        n = self.num_envs
        self._seeds = [None if seed is None else int(seed) + i for i in range(n)]
        self._is_first = np.ones(n, bool)
        self._reward = np.zeros(n, np.float32)
        for i in range(n):
            self._clear(i)
        self._needs_reset = False
        return self.obs

    def step(self) -> list[Episode]:
        """One agent step of every env (resetting first when nothing was reset yet or a single env's episode
        ended); returns the episodes that ended on it, by ascending env index (also given to the episode
        callbacks).

        Raises:
            EnvError: the policy's action does not have shape ``(N, *A)``.
        """
        if self._needs_reset:
            self.reset()
        n, obs = self.num_envs, self.obs
        assert obs is not None
        action, outs = self.policy(obs, self._is_first)
        action = np.asarray(action)
        if action.shape != (n, *self.action_shape):
            raise EnvError(f"the policy returned actions of shape {action.shape}; the driver needs "
                           f"{(n, *self.action_shape)} (envs x action shape)")
        step = Step(obs, self._reward, self._is_first, action, outs, self._t.copy())
        for callback in self._on_step:
            callback(step)
        if self.vector:
            new_obs, reward, term, trunc, info = self.env.step(action)
        else:
            single, r, te, tr, info = self.env.step(action[0])
            new_obs, reward, term, trunc = _batch(single), np.array([r]), np.array([te]), np.array([tr])
        reward = np.asarray(reward)
        term, trunc = np.asarray(term, bool), np.asarray(trunc, bool)
        self._return += reward.astype(np.float64)
        self._t += 1
        self.steps += n
        done = term | trunc
        reward32 = reward.astype(np.float32)
        if "success" in info:  # a vector env's top-level info of an ended env belongs to the new episode (unset)
            mask = np.asarray(info.get("_success", np.ones(n, bool)), bool)
            self._success = np.maximum(self._success, np.where(mask, info["success"], 0.0))
            self._has_success |= mask
        if "env_steps" in info:
            mask = np.asarray(info.get("_env_steps", np.ones(n, bool)), bool)
            self._env_steps = np.where(mask, info["env_steps"], self._env_steps).astype(np.int64)
            self._has_env_steps |= mask
        self.obs = self._map(new_obs)
        ended: list[Episode] = []
        if self.vector:
            final_obs, final_info = info.get("final_obs"), info.get("final_info", {})
            for i in np.flatnonzero(done):
                i = int(i)
                if "success" in final_info:
                    self._success[i] = max(self._success[i], float(final_info["success"][i]))
                    self._has_success[i] = True
                if "env_steps" in final_info:
                    self._env_steps[i] = int(final_info["env_steps"][i])
                    self._has_env_steps[i] = True
                last = self._map(_batch(final_obs[i]))
                ended.append(self._end(i, _unbatch(last), reward32[i], bool(term[i]), cut=False,
                                       success="success" in final_info))
                self._seeds[i] = None  # the vector env reset it without a seed
        elif done[0]:
            ended.append(self._end(0, _unbatch(self.obs), reward32[0], bool(term[0]), cut=False,
                                   success=bool(self._has_success[0])))
            self._needs_reset = True
        self._is_first = done.copy()
        self._reward = np.where(done, 0.0, reward32).astype(np.float32)
        for episode in ended:
            for callback in self._on_episode:
                callback(episode)
        return ended

    def episode(self, seed: int | None = None, max_steps: int | None = None,
                until: Callable[[], bool] | None = None) -> Episode:
        """Run one episode of a single env from ``reset(seed)`` to its end and return it.

        Args:
            seed: the reset seed (``None``: the env's own stream).
            max_steps: cut the episode after this many agent steps (>= 0; ``None``: no limit).
            until: cut the episode as soon as ``until()`` is True, checked before every step (after the
                callbacks of the previous step ran).

        Returns:
            The :class:`Episode` (also given to the episode callbacks); ``record["cut"]`` says whether
            ``max_steps``/``until`` ended it (then ``last_obs`` is the current observation).

        Raises:
            EnvError: a vector env (it resets itself; use :meth:`run`), or ``max_steps`` < 0.
        """
        if self.vector:
            raise EnvError("Driver.episode runs one episode of a single env; a vector env autoresets: use "
                           "Driver.step or Driver.run")
        if max_steps is not None and max_steps < 0:
            raise EnvError(f"max_steps must be >= 0 agent steps, got {max_steps}")
        self.reset(seed)
        while True:
            if (max_steps is not None and self._t[0] >= max_steps) or (until is not None and until()):
                assert self.obs is not None
                episode = self._end(0, _unbatch(self.obs), self._reward[0], False, cut=True,
                                    success=bool(self._has_success[0]))
                self._needs_reset = True
                for callback in self._on_episode:
                    callback(episode)
                return episode
            ended = self.step()
            if ended:
                return ended[0]

    def run(self, steps: int = 0, episodes: int = 0) -> list[Episode]:
        """Step until at least ``steps`` agent steps (summed over the envs) were taken and ``episodes`` episodes
        ended in this call; returns the ended episodes in order."""
        out: list[Episode] = []
        taken = 0
        while taken < steps or len(out) < episodes:
            out += self.step()
            taken += self.num_envs
        return out

    def close(self) -> None:
        """Close the env."""
        self.env.close()

    # ------------------------------------------------------------------------------------------------ helpers
    def _map(self, obs: Obs) -> Obs:
        return obs if self.transform is None else self.transform(obs)

    def _clear(self, i: int) -> None:
        self._return[i], self._t[i], self._env_steps[i] = 0.0, 0, 0
        self._success[i], self._has_success[i], self._has_env_steps[i] = 0.0, False, False

    def _end(self, i: int, last_obs: Obs, last_reward: Any, terminated: bool, cut: bool,
             success: bool) -> Episode:
        steps = int(self._t[i])
        record: dict[str, Any] = {"return": float(self._return[i]),
                                  "length": int(self._env_steps[i]) if self._has_env_steps[i] else steps,
                                  "steps": steps}
        if success:
            record["success"] = float(self._success[i])
        record.update(shift=self.shift, severity=self.severity, seed=self._seeds[i], index=i, cut=cut)
        self.episodes += 1
        self._clear(i)
        return Episode(i, record, last_obs, np.float32(last_reward), bool(terminated))


def _batch(obs: dict[str, Any]) -> Obs:
    return {k: np.asarray(v)[None] for k, v in obs.items()}


def _unbatch(obs: Obs) -> Obs:
    return {k: v[0] for k, v in obs.items()}

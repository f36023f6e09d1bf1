"""An :class:`~mbrl.agent.Agent` as a policy of :class:`envs.driver.Driver` (``policy(obs, is_first)``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class AgentPolicy:
    """Acts with ``agent`` for ``num_envs`` envs and keeps its recurrent policy state between calls.

    Args:
        agent: an :class:`~mbrl.agent.Agent` (anything with ``act``, ``initial_state`` and ``wm.obs_keys``).
        num_envs: ``N``, the envs of the driver.
        mode: ``sample`` draws from the policy, ``mode`` takes its mode (:meth:`Agent.act`).
        outs: ask the agent for its extra outputs (``features``: ``(N, F)`` backbone features of the image, a
            tensor on the agent's device, when the agent caches features) and return them as ``outs``.

    Attributes:
        state: the policy state (:meth:`Agent.initial_state`); :meth:`reset` restores the initial one. The
            caller may replace it (training's random prefill swaps in the random action it took).
    """

    def __init__(self, agent: Any, num_envs: int, mode: str = "sample", outs: bool = False) -> None:
        self.agent, self.num_envs, self.mode, self.outs = agent, int(num_envs), mode, bool(outs)
        self.reset()

    def reset(self) -> None:
        """Start from the agent's initial state (as before the first step of an episode)."""
        self.state = self.agent.initial_state(self.num_envs)

    def __call__(self, obs: dict[str, np.ndarray], is_first: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """``obs`` per key ``(N, ...)`` (the agent's ``obs_keys``), ``is_first`` ``(N,)`` bool ->
        ``(action (N, A) float32 numpy, outs)``."""
        extra: dict[str, torch.Tensor] | None = {} if self.outs else None
        obs_t = {k: torch.from_numpy(obs[k]) for k in self.agent.wm.obs_keys}
        action, self.state = self.agent.act(obs_t, torch.from_numpy(is_first), self.state, self.mode, out=extra)
        return action.cpu().numpy(), extra or {}

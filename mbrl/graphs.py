"""The update as a CUDA graph (``compile=on`` on CUDA, ``cuda_graphs=auto``): a whole training update (world
model, imagination, actor-critic losses, their backward passes and the three optimiser steps) captured once and
replayed, so an update costs a few launches instead of thousands (the GPU update was launch-bound: 3.78
updates/s on an H200; TorchRL's DreamerV3 captures its learner the same way, pytorch/rl#4217).

What makes the update capturable (each tested on the CPU, ``tests/test_graphs.py``):

- **static inputs**: each replay batch is copied into the same preallocated tensors (:class:`GraphedStep`);
- **no host sync**: metrics stay on the device, the non-finite flags and the gradient zeroing of a skipped update
  are device operations (:mod:`mbrl.optim`), the return normaliser's percentiles are a sort and a gather
  (:func:`mbrl.actor_critic.percentiles`; ``torch.quantile`` checks its ``q`` on the host);
- **device-side optimiser numbers**: ``Optimizer.set_capturable``: LaProp's steps, bias corrections, the warm-up's
  learning rates and the update counters are device tensors, so a replay is a new update, not a copy of the
  captured one; the host's update counters advance by ``host_step`` after each replay;
- **sampling from uniform noise**: the latents are drawn by inverse CDF from ``torch.rand`` and the policy from
  ``torch.randn`` (no ``multinomial``), which CUDA graphs replay with fresh random numbers (torch's philox offsets).

The first ``warmup`` calls run eagerly on a side stream (``torch.compile`` compiles its regions there), the next
captures and replays. Outputs (metrics, replay-context latents) are copied out of the graph's memory after each
replay, one clone per tensor. Off CUDA, or with ``cuda_graphs=off``, a :class:`GraphedStep` copies the batch into its
static tensors and runs the update as it is: the same data path, which the CPU tests compare with the plain update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from envs.errors import ConfigError

Metrics = dict[str, Tensor]
StepFn = Callable[[dict[str, Tensor], dict[str, Tensor] | None], Metrics]


class GraphedStep:
    """One training update (``step(batch, out) -> metrics``) run from static input tensors, captured as a CUDA
    graph after ``warmup`` eager calls when ``capture`` is true.

    Args:
        step: the update: :meth:`mbrl.agent.Agent.train_step` or :meth:`mbrl.members.MemberBatch.train_step`
            (``batch`` entries ``(B, T, ...)`` or ``(E, B, T, ...)``; ``out`` receives replay-context latents).
        host_step: called after each replay to advance the host-side counters that the captured Python code
            advanced once (:meth:`mbrl.optim.Optimizer.host_step` of each optimiser).
        capture: capture a CUDA graph (CUDA only); False: run ``step`` on the static tensors every call.
        warmup: eager calls before the capture (compiles ``torch.compile`` regions, allocates optimiser state).

    Raises:
        ConfigError: ``capture`` without CUDA; a batch whose keys, shapes or dtypes differ from the first one's.
    """

    def __init__(self, step: StepFn, host_step: Callable[[], None], capture: bool, warmup: int = 3) -> None:
        if capture and not torch.cuda.is_available():
            raise ConfigError("CUDA graphs need a CUDA device; use cuda_graphs=off")
        self.step, self.host_step, self.capture, self.warmup = step, host_step, capture, warmup
        self.static: dict[str, Tensor] | None = None
        self.calls = 0
        self.graph: Any = None
        self._out: Metrics | None = None
        self._latents: dict[str, Tensor] = {}

    def _copy_in(self, batch: dict[str, Tensor]) -> None:
        if self.static is None:
            self.static = {k: v.detach().clone() for k, v in batch.items()}
            return
        if batch.keys() != self.static.keys():
            raise ConfigError(f"a graphed update got batch keys {sorted(batch)}, captured with {sorted(self.static)}")
        for k, v in batch.items():
            dst = self.static[k]
            if v.shape != dst.shape or v.dtype != dst.dtype:
                raise ConfigError(f"a graphed update got {k} {tuple(v.shape)} {v.dtype}, captured with "
                                  f"{tuple(dst.shape)} {dst.dtype}; batch shapes must not change")
            dst.copy_(v, non_blocking=True)

    def __call__(self, batch: dict[str, Tensor], out: dict[str, Tensor] | None = None) -> Metrics:
        """One update on ``batch``; fills ``out`` like the wrapped step. Returns the metrics (fresh tensors)."""
        self._copy_in(batch)
        static = self.static
        assert static is not None
        if not self.capture:
            self.calls += 1
            return self.step(static, out)
        if self.calls < self.warmup:  # eager on a side stream, as torch's whole-network capture recipe
            self.calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                metrics = self.step(static, out)
            torch.cuda.current_stream().wait_stream(side)
            return metrics
        if self.graph is None:
            self.graph = torch.cuda.CUDAGraph()
            latents: dict[str, Tensor] = {}
            with torch.cuda.graph(self.graph):
                self._out = self.step(static, latents if out is not None else None)
            self._latents = latents
            self.calls += 1
            self.graph.replay()  # the capture recorded the update without running it; the host already stepped
        else:
            self.calls += 1
            self.graph.replay()
            self.host_step()
        assert self._out is not None
        if out is not None:
            out.update({k: v.clone() for k, v in self._latents.items()})
        return {k: v.clone() for k, v in self._out.items()}


def graphs_enabled(setting: str, compile_: str, device: torch.device | str) -> bool:
    """Whether a run captures its updates: ``cuda_graphs=auto`` with ``compile=on`` on a CUDA device, or ``on``.

    Raises:
        ConfigError: ``cuda_graphs=on`` without a CUDA device.
    """
    cuda = torch.device(device).type == "cuda"
    if setting == "on" and not cuda:
        raise ConfigError("cuda_graphs=on needs device=cuda; use cuda_graphs=auto (graphs on CUDA with compile=on) "
                          "or off")
    return cuda and (setting == "on" or (setting == "auto" and compile_ == "on"))


class GraphedUpdates:
    """Mixin of the two things that train (:class:`mbrl.agent.Agent`, :class:`mbrl.members.MemberBatch`):
    :meth:`update` runs their ``train_step`` captured as a CUDA graph where :meth:`wants_graphs` says so (decided
    at the first update), else ``train_step`` itself. They define ``train_step(batch, out)``, ``host_step()`` and
    ``wants_graphs()``."""

    _graphed: GraphedStep | bool | None = None

    def wants_graphs(self) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def update(self, batch: dict[str, Tensor], out: dict[str, Tensor] | None = None) -> Metrics:
        """One training update as the run asks (same arguments and result as ``train_step``)."""
        if self._graphed is None:
            on = self.wants_graphs()
            self._graphed = GraphedStep(self.train_step, self.host_step, capture=True) if on else False  # type: ignore[attr-defined]
        if self._graphed is False:
            return self.train_step(batch, out)  # type: ignore[attr-defined]
        return self._graphed(batch, out)

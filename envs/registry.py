"""Environment names: ``"suite:task"``, e.g. ``"dmc:walker_walk"``.

Suites:

* ``dmc`` -- the DeepMind Control Suite. The task part is ``<domain>_<task>``
  exactly as in ``dm_control.suite.ALL_TASKS`` (e.g. ``ball_in_cup_catch``,
  ``point_mass_easy``, ``humanoid_CMU_run``), except the ``lqr`` domain
  (unbounded actions). Domains may contain underscores, so the domain is
  matched against the known domains, longest first.

The dmc table is derived lazily from ``dm_control.suite.ALL_TASKS`` on first
use (importing dm_control takes ~1 s) and cached.
"""

from __future__ import annotations

import functools

from envs.errors import EnvError

__all__ = ["SUITES", "default_camera", "dmc_domains", "list_envs", "parse_env_name"]

#: Known suite prefixes.
SUITES: tuple[str, ...] = ("dmc",)

# DreamerV3 renders quadruped from camera 2; every other dmc domain uses 0.
# ``lqr`` is left out: its action spec is +-1e10, so [-1, 1] rescaling is meaningless.
_EXCLUDED_DOMAINS: frozenset[str] = frozenset({"lqr"})
_DEFAULT_CAMERA: dict[str, int] = {"quadruped": 2}


@functools.lru_cache(maxsize=1)
def dmc_domains() -> dict[str, tuple[str, ...]]:
    """Return ``{domain: (task, ...)}`` for every dm_control suite task (sorted)."""
    from dm_control import suite  # lazy: MUJOCO_GL must be set first (envs/__init__)

    table: dict[str, list[str]] = {}
    for domain, task in suite.ALL_TASKS:
        if domain in _EXCLUDED_DOMAINS:
            continue
        table.setdefault(domain, []).append(task)
    return {d: tuple(sorted(ts)) for d, ts in sorted(table.items())}


def _dmc_names() -> list[str]:
    return [f"dmc:{d}_{t}" for d, ts in dmc_domains().items() for t in ts]


def list_envs() -> list[str]:
    """Return every valid env name, sorted, e.g. ``["dmc:acrobot_swingup", ...]``."""
    return sorted(_dmc_names())


def default_camera(domain: str) -> int:
    """Return the DreamerV3 default camera id for a dmc ``domain`` (quadruped: 2, else 0)."""
    return _DEFAULT_CAMERA.get(domain, 0)


def _parse_dmc(name: str, rest: str) -> tuple[str, str]:
    domains = dmc_domains()
    for domain in sorted(domains, key=len, reverse=True):
        if rest.startswith(domain + "_"):
            task = rest[len(domain) + 1 :]
            if task in domains[domain]:
                return domain, task
            hint = f" (domain '{domain}' has tasks: {', '.join(domains[domain])})"
            break
    else:
        hint = ""
    raise EnvError(
        f"unknown env {name!r}{hint}; known dmc tasks: {', '.join(_dmc_names())}"
    )


def parse_env_name(name: str) -> tuple[str, str, str]:
    """Split an env name into ``(suite, domain, task)``.

    Example: ``parse_env_name("dmc:ball_in_cup_catch") == ("dmc", "ball_in_cup", "catch")``.

    Raises:
        EnvError: if ``name`` is not a ``"suite:task"`` string, the suite is
            unknown (message lists the suites) or the task is unknown (message
            lists the known tasks of that suite).
    """
    if not isinstance(name, str) or ":" not in name:
        raise EnvError(
            f"env name must look like 'suite:task' (e.g. 'dmc:walker_walk'), got {name!r}; "
            f"known suites: {', '.join(SUITES)}"
        )
    suite, rest = name.split(":", 1)
    if suite == "dmc":
        domain, task = _parse_dmc(name, rest)
        return suite, domain, task
    raise EnvError(
        f"unknown suite {suite!r} in env name {name!r}; known suites: {', '.join(SUITES)}"
    )

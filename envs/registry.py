"""Environment names: ``"suite:task"``, e.g. ``"dmc:walker_walk"``.

Suites:

* ``dmc`` -- the DeepMind Control Suite. The task part is ``<domain>_<task>``
  exactly as in ``dm_control.suite.ALL_TASKS`` (e.g. ``ball_in_cup_catch``,
  ``point_mass_easy``, ``humanoid_CMU_run``), except the ``lqr`` domain
  (unbounded actions). Domains may contain underscores, so the domain is
  matched against the known domains, longest first.
* ``metaworld`` -- Meta-World v3 MT1 tasks (optional dependency,
  ``pip install metaworld==3.1.1``). The task part is the Meta-World env name
  without ``-v3`` (e.g. ``reach``, ``pick-place``, ``button-press-topdown``);
  the ``-v3`` suffix is accepted too. :func:`parse_env_name` returns
  ``("metaworld", "mt1", task)``.
* ``driving`` -- server-free driving: ``driving:carracing`` is gymnasium's Box2D
  ``CarRacing-v3`` (:class:`envs.driving.CarRacingEnv`; needs
  ``pip install "gymnasium[box2d]"``). :func:`parse_env_name` returns
  ``("driving", "box2d", "carracing")``.
* ``carla`` -- ``carla:<Town>`` (e.g. ``carla:Town04``), the CARLA 0.9.16 client
  env :class:`envs.carla.CarlaEnv`. Needs ``pip install carla==0.9.16`` **and a
  running CARLA server** (``./CarlaUE4.sh -RenderOffScreen -carla-rpc-port=2000``);
  the names are listed even without either. :func:`parse_env_name` returns
  ``("carla", "town", "<Town>")``.

Each suite is one :class:`envs.base.BaseEnv` subclass, registered by one line of :data:`SUITE_CLASSES`
(``suite -> "module:Class"``, imported on first use); the class lists and parses its task names
(``task_names``/``parse_task``), says whether it has a state vector (``has_state``) and its standard episode
length (``default_time_limit``), and :func:`envs.make_env` builds it with ``from_task``.

The dmc table is derived lazily from ``dm_control.suite.ALL_TASKS`` and the
metaworld table from ``metaworld.env_dict.ALL_V3_ENVIRONMENTS`` on first use
(each import takes ~1-2 s) and cached. Without the metaworld package,
:func:`list_envs` omits the metaworld suite and every ``metaworld:`` name
raises :class:`EnvError` naming the pip command.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from typing import TYPE_CHECKING

from envs.errors import EnvError

if TYPE_CHECKING:
    from envs.base import BaseEnv

__all__ = ["CARLA_TOWNS", "DRIVING_TASKS", "METAWORLD_PIP", "SUITES", "SUITE_CLASSES", "default_camera",
           "dmc_domains", "dmc_task_names", "list_envs", "metaworld_available", "metaworld_tasks",
           "check_state_obs", "parse_dmc_task", "parse_env_name", "parse_metaworld_task", "state_suites", "suite_class"]

#: The env class of every suite, ``suite -> "module:Class"`` (a :class:`envs.base.BaseEnv` subclass, imported
#: lazily). Adding a suite = its env module + one line here.
SUITE_CLASSES: dict[str, str] = {
    "dmc": "envs.dmc:DMCEnv",
    "metaworld": "envs.metaworld:MetaWorldEnv",
    "driving": "envs.driving:CarRacingEnv",
    "carla": "envs.carla:CarlaEnv",
}
#: Known suite prefixes.
SUITES: tuple[str, ...] = tuple(SUITE_CLASSES)
#: Tasks of the ``driving`` suite (no server needed).
DRIVING_TASKS: tuple[str, ...] = ("carracing",)
#: Towns of the ``carla`` suite (the maps of the standard CARLA 0.9.16 package; need a running server).
CARLA_TOWNS: tuple[str, ...] = (
    "Town01", "Town02", "Town03", "Town04", "Town05", "Town06", "Town07", "Town10HD",
)
#: How to install the optional metaworld suite (the version pins mujoco 3.3.0, as dm_control 1.0.28 does).
METAWORLD_PIP = "pip install metaworld==3.1.1"

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


def dmc_task_names() -> tuple[str, ...]:
    """The ``<domain>_<task>`` parts of the ``dmc:`` names."""
    return tuple(f"{d}_{t}" for d, ts in dmc_domains().items() for t in ts)


@functools.lru_cache(maxsize=1)
def _metaworld_table() -> tuple[str, ...] | str:
    """Sorted MT1 v3 task names without ``-v3``, or the import error message if metaworld is unusable."""
    try:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return tuple(sorted(name.removesuffix("-v3") for name in ALL_V3_ENVIRONMENTS))


def metaworld_available() -> bool:
    """Whether the optional ``metaworld`` package can be imported."""
    return isinstance(_metaworld_table(), tuple)


def metaworld_tasks() -> tuple[str, ...]:
    """Return the Meta-World MT1 v3 task names (sorted, without ``-v3``), e.g. ``("assembly", ...)``.

    Raises:
        EnvError: metaworld is not installed (the message names the pip command).
    """
    table = _metaworld_table()
    if isinstance(table, str):
        raise EnvError(f"the metaworld suite needs the metaworld package, which cannot be imported ({table}); "
                       f"install it with `{METAWORLD_PIP}`")
    return table


def suite_class(suite: str) -> type[BaseEnv]:
    """The env class of a known ``suite`` (see :data:`SUITE_CLASSES`); imports its module (cheap: no simulator
    is imported at module import time)."""
    module, _, name = SUITE_CLASSES[suite].partition(":")
    return getattr(importlib.import_module(module), name)


def state_suites() -> tuple[str, ...]:
    """The suites with a state observation vector (``obs="state"`` / ``"pixels+state"``)."""
    return tuple(s for s in SUITES if suite_class(s).has_state)


def check_state_obs(obs: str, name: str) -> None:
    """Refuse a state mode (``obs`` ``state`` / ``pixels+state``) for an env ``name`` (``"suite:task"``) whose suite
    has no state vector (:func:`state_suites`).

    Raises:
        EnvError: the message names the env and the suites that have a state vector.
    """
    if obs == "pixels":
        return
    suites = state_suites()
    if name.split(":", 1)[0] not in suites:
        raise EnvError(f"obs={obs!r} is not available for {name}; suites with a state observation: "
                       f"{', '.join(suites)}")


def list_envs() -> list[str]:
    """Return every valid env name, sorted, e.g. ``["dmc:acrobot_swingup", ..., "metaworld:reach", ...]``.

    The ``metaworld:`` names are omitted when the metaworld package is not installed.
    """
    return sorted(f"{suite}:{task}" for suite in SUITES for task in suite_class(suite).task_names())


def default_camera(domain: str) -> int:
    """Return the DreamerV3 default camera id for a dmc ``domain`` (quadruped: 2, else 0)."""
    return _DEFAULT_CAMERA.get(domain, 0)


def parse_dmc_task(name: str, rest: str) -> tuple[str, str]:
    """``(domain, task)`` of ``rest`` = ``<domain>_<task>`` (domains matched longest first); EnvError if unknown."""
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
        f"unknown env {name!r}{hint}; known dmc tasks: {', '.join(f'dmc:{t}' for t in dmc_task_names())}"
    )


def parse_metaworld_task(name: str, rest: str) -> str:
    """The MT1 task of ``rest`` (``-v3`` accepted); EnvError if unknown (with a close match) or not installed."""
    tasks = metaworld_tasks()
    task = rest.removesuffix("-v3")
    if task in tasks:
        return task
    close = difflib.get_close_matches(task, tasks, n=1)
    hint = f" (did you mean 'metaworld:{close[0]}'?)" if close else ""
    raise EnvError(
        f"unknown env {name!r}{hint}; known metaworld tasks: {', '.join(f'metaworld:{t}' for t in tasks)}"
    )


def parse_env_name(name: str) -> tuple[str, str, str]:
    """Split an env name into ``(suite, domain, task)``.

    Examples: ``parse_env_name("dmc:ball_in_cup_catch") == ("dmc", "ball_in_cup", "catch")``,
    ``parse_env_name("metaworld:pick-place") == ("metaworld", "mt1", "pick-place")``.

    Raises:
        EnvError: if ``name`` is not a ``"suite:task"`` string, the suite is
            unknown (message lists the suites), the task is unknown (message
            lists the known tasks of that suite), or the suite's package is
            not installed (message names the pip command).
    """
    if not isinstance(name, str) or ":" not in name:
        raise EnvError(
            f"env name must look like 'suite:task' (e.g. 'dmc:walker_walk'), got {name!r}; "
            f"known suites: {', '.join(SUITES)}"
        )
    suite, rest = name.split(":", 1)
    if suite not in SUITE_CLASSES:
        raise EnvError(f"unknown suite {suite!r} in env name {name!r}; known suites: {', '.join(SUITES)}")
    domain, task = suite_class(suite).parse_task(name, rest)
    return suite, domain, task

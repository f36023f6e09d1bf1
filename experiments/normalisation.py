"""Per-env constants of normalised return ``(R - R_random) / (R_max - R_random)`` and where each comes from.

- ``R_max``: the largest achievable return by construction of the reward —
  dm_control: rewards lie in [0, 1] per control step and episodes are 1000 steps (Tassa et al. 2018, §2), so
  1000; Meta-World v3: rewards lie in [0, 10] per step (Yu et al. 2019; McLean et al. 2025, Meta-World+) over
  our 500-step episodes, so 5000; CarRacing-v3: +1000/N per track tile and −0.1 per frame (gymnasium docs), so
  below 1000; CARLA: Jones et al. 2025's constant (their §4: R_max 2780, R_rand −37.41).
- ``R_random``: the mean return of the uniform-random policy, measured with ``benchmarks/random_returns.py``
  (10 episodes, seeds 0–9, action repeat 2, each suite's standard episode length; dreamshift 0.1.0), except
  CARLA (Jones et al. 2025).

An env without an entry has no normalised score: the leaderboard then ranks it on raw return and says so.
"""

from __future__ import annotations

from typing import NamedTuple


class Constants(NamedTuple):
    r_random: float
    r_max: float
    source: str


_MEASURED = "R_random measured by benchmarks/random_returns.py (10 episodes)"
_DMC = f"R_max 1000 (Tassa et al. 2018); {_MEASURED}"
_MW = f"R_max 5000 (10 per step x 500 steps, Meta-World v3 rewards); {_MEASURED}"

# env -> (R_random, R_max, source)
CONSTANTS: dict[str, Constants] = {
    "dmc:cartpole_balance": Constants(323.9, 1000.0, _DMC),
    "dmc:cartpole_swingup": Constants(40.0, 1000.0, _DMC),
    "dmc:walker_stand": Constants(131.7, 1000.0, _DMC),
    "dmc:walker_walk": Constants(43.2, 1000.0, _DMC),
    "dmc:walker_run": Constants(24.7, 1000.0, _DMC),
    "dmc:cheetah_run": Constants(7.7, 1000.0, _DMC),
    "dmc:finger_spin": Constants(1.8, 1000.0, _DMC),
    "dmc:reacher_easy": Constants(78.9, 1000.0, _DMC),
    "dmc:ball_in_cup_catch": Constants(0.0, 1000.0, _DMC),
    "dmc:manipulator_bring_ball": Constants(0.3, 1000.0, _DMC),
    "dmc:hopper_stand": Constants(3.4, 1000.0, _DMC),
    "dmc:pendulum_swingup": Constants(0.0, 1000.0, _DMC),
    "dmc:acrobot_swingup": Constants(1.8, 1000.0, _DMC),
    "dmc:quadruped_walk": Constants(197.7, 1000.0, _DMC),
    "metaworld:reach": Constants(629.2, 5000.0, _MW),
    "metaworld:push": Constants(32.2, 5000.0, _MW),
    "metaworld:pick-place": Constants(7.7, 5000.0, _MW),
    "metaworld:door-open": Constants(271.8, 5000.0, _MW),
    "metaworld:drawer-close": Constants(868.6, 5000.0, _MW),
    "driving:carracing": Constants(-48.9, 1000.0, "R_max 1000 (+1000/N per track tile, gymnasium CarRacing-v3 "
                                   f"docs); {_MEASURED}"),
    "carla:Town04": Constants(-37.41, 2780.0, "Jones et al. 2025, Sec. 4 (CARLA 0.9.15, Town04)"),
}


def constants(env: str) -> Constants | None:
    """The normalisation constants of ``env`` (``suite:task``), or ``None`` when none are known."""
    return CONSTANTS.get(env)

"""Version-compatibility fixes for dm_control, applied lazily by :class:`envs.DMCEnv`.

* dm_control <= 1.0.28 ``suite/quadruped.py`` calls ``np.in1d``, which numpy 2.4
  removed, so every ``dmc:quadruped_*`` task crashes at ``reset()``. When numpy
  lacks ``in1d`` we replace ``quadruped.Physics._get_sensor_names`` with an
  identical method that uses ``np.isin``. Nothing is changed otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["patch_dm_control"]

_patched = False


def _get_sensor_names(self: Any, *sensor_types: Any) -> list[str]:
    # Same as dm_control's quadruped.Physics._get_sensor_names, with np.isin.
    try:
        return self._sensor_types_to_names[sensor_types]
    except KeyError:
        [sensor_ids] = np.where(np.isin(self.model.sensor_type, sensor_types))
        names = [self.model.id2name(s_id, "sensor") for s_id in sensor_ids]
        self._sensor_types_to_names[sensor_types] = names
        return names


def patch_dm_control() -> None:
    """Apply the fixes above once per process (no-op when not needed)."""
    global _patched
    if _patched:
        return
    _patched = True
    if hasattr(np, "in1d"):
        return
    from dm_control.suite import quadruped

    quadruped.Physics._get_sensor_names = _get_sensor_names

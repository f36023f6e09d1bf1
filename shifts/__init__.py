"""Graded visual shifts (severity 0 = clean to 5 = strongest) applied to an env's image observations.

Modules:

- :mod:`shifts.base`: the :class:`~shifts.base.Shift` abstraction, the kind registry (``make_shift``,
  ``kinds``, ``supports``), :class:`~shifts.base.ShiftWrapper` and :class:`~shifts.base.ShiftError`;
- :mod:`shifts.scene`: scene-level kinds that edit the MuJoCo model/scene (colours, textures, lights, camera,
  distractors, background), with :mod:`shifts._procedural` drawing their patterns;
- :mod:`shifts.pixel`: pixel-level ImageNet-C corruptions of the rendered frame (any env);
- :mod:`shifts.driving`: CARLA weather and the appearance analogues for the driving envs;
- :mod:`shifts.suites`: the named evaluation suites of ``(kind, severity)`` conditions;
- :mod:`shifts.gallery`: a PNG grid of one frame under every kind and severity (``dreamshift shifts gallery``).

Layers above use them: a trained run is evaluated on every condition of a suite by :mod:`mbrl.runs.evaluate`
(``dreamshift evaluate RUN --suite``); how far each severity moves the frames is measured by
:mod:`experiments.analysis.calibration` (``dreamshift analyze calibration``).

The package imports nothing at import time; import the module you need (the registry loads the kinds on
first use). Every bad-input error is a :class:`~shifts.base.ShiftError` (a ``ValueError`` and an
``envs.errors.DreamshiftError``).
"""

"""Headless OpenGL backend selection for MuJoCo / dm_control rendering.

dm_control picks its OpenGL backend from the ``MUJOCO_GL`` environment variable
*once, when* ``dm_control.mujoco`` *is first imported*. Therefore
:func:`select_gl_backend` must run before that import; ``envs/__init__.py``
calls it on package import and every module of this package imports
dm_control lazily (inside functions), so ``import envs`` first is enough.

Selection order:

1. ``MUJOCO_GL`` already set (non-empty): respected as is, no probing.
2. Otherwise ``egl`` then ``osmesa`` are probed by creating a tiny offscreen
   GL context in a *subprocess* (a broken driver may crash the process, and a
   failed backend cannot be unloaded in-process). The first that works is
   written to ``os.environ["MUJOCO_GL"]`` so that subprocesses (e.g. the
   workers of :func:`envs.make_vector_env`) inherit it without probing again.

The result (or the failure) is cached for the life of the process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from envs.errors import EnvError

__all__ = ["CANDIDATE_BACKENDS", "select_gl_backend"]

#: Backends probed, in order, when ``MUJOCO_GL`` is not set.
CANDIDATE_BACKENDS: tuple[str, ...] = ("egl", "osmesa")

_APT_PACKAGES = "libegl1 libgl1 libosmesa6"
_PROBE_TIMEOUT_S = 60.0
_PROBE_CODE = (
    "import mujoco\nctx = mujoco.GLContext(8, 8)\nctx.make_current()\nctx.free()\n"
)

_selected: str | None = None
_failure: EnvError | None = None


def _probe(backend: str) -> str | None:
    """Try to create a GL context with ``backend`` in a subprocess.

    Returns ``None`` on success, else a short reason string.
    """
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE_CODE],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    if proc.returncode == 0:
        return None
    lines = [ln.strip() for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {proc.returncode}"


def select_gl_backend() -> str:
    """Choose (once per process) and return the MuJoCo OpenGL backend name.

    Sets ``os.environ["MUJOCO_GL"]`` when it was unset. Cheap after the first
    call (cached; the first call costs ~0.3 s per probed backend, only when
    ``MUJOCO_GL`` is unset).

    Returns:
        The backend name, e.g. ``"egl"`` or ``"osmesa"`` (or whatever the user
        put in ``MUJOCO_GL``).

    Raises:
        EnvError: if ``MUJOCO_GL`` is unset and neither EGL nor OSMesa can
            create a context; the message names the apt packages to install.
    """
    global _selected, _failure
    if _selected is not None:
        return _selected
    if _failure is not None:
        raise _failure

    requested = os.environ.get("MUJOCO_GL", "").strip()
    if requested:
        _selected = requested
        return _selected

    render_module = sys.modules.get("dm_control._render")
    if render_module is not None:
        # dm_control was imported before us and already fixed its backend.
        backend = getattr(render_module, "BACKEND", None)
        if backend:
            _selected = str(backend)
            return _selected

    reasons = []
    for backend in CANDIDATE_BACKENDS:
        reason = _probe(backend)
        if reason is None:
            os.environ["MUJOCO_GL"] = backend
            _selected = backend
            return _selected
        reasons.append(f"{backend}: {reason}")

    _failure = EnvError(
        "no headless OpenGL backend works for MuJoCo rendering ("
        + "; ".join(reasons)
        + f"); install one with `apt-get install {_APT_PACKAGES}` "
        "or set MUJOCO_GL to a working backend (egl, osmesa, glfw)"
    )
    raise _failure


def check_renders(env: Any, name: str) -> None:
    """Create ``env``'s camera now (``env._ensure_camera()``) so that a broken GL setup fails at construction,
    not at the first reset; on failure close ``env`` and raise.

    Raises:
        EnvError: rendering failed; the message names ``name``, the GL backend and the packages to install.
    """
    try:
        env._ensure_camera()
    except Exception as exc:
        env.close()
        raise EnvError(
            f"could not render {name} with MUJOCO_GL={select_gl_backend()!r} ({type(exc).__name__}: {exc}); "
            "install `libegl1 libgl1 libosmesa6` or set MUJOCO_GL=egl or MUJOCO_GL=osmesa"
        ) from exc

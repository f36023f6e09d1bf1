"""What each env suite needs and whether this machine has it (``dreamshift envs list`` prints it)."""

from __future__ import annotations

import importlib.util
import os

from envs.carla import _probe_tcp
from envs.errors import EnvError
from envs.registry import METAWORLD_PIP, metaworld_available
from envs.rendering import select_gl_backend


def suite_status(carla_host: str | None = None, carla_port: int | None = None) -> dict[str, str]:
    """One line per suite: ``available ...`` or ``missing: <what> (<how to get it>)``.

    The CARLA line probes ``host:port`` (``CARLA_HOST``/``CARLA_PORT``, default localhost:2000) with a 0.5 s
    TCP connect; nothing else touches the network.
    """
    out = {}
    try:
        out["dmc"] = f"available (MUJOCO_GL={select_gl_backend()})"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        out["dmc"] = f"missing: rendering ({exc})"
    out["metaworld"] = "available" if metaworld_available() else f"missing: metaworld (`{METAWORLD_PIP}`)"
    out["driving"] = ("available (gymnasium CarRacing-v3, no server)" if importlib.util.find_spec("Box2D")
                      else "missing: Box2D (`pip install \"gymnasium[box2d]\"`)")
    if importlib.util.find_spec("carla") is None:
        out["carla"] = "missing: CARLA client (`pip install carla==0.9.16`) and a running CARLA server"
    else:
        host = carla_host or os.environ.get("CARLA_HOST", "localhost")
        port = int(carla_port or os.environ.get("CARLA_PORT", "2000"))
        try:
            _probe_tcp(host, port, 0.5)
            out["carla"] = f"available (server at {host}:{port})"
        except EnvError:
            out["carla"] = (f"client installed; missing: a CARLA server at {host}:{port} "
                            f"(start it with ./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port})")
    return out

"""Scene-level shifts for MuJoCo envs: they change what the renderer draws, never the physics.

Two mechanisms, both written against the raw ``mujoco.MjModel`` / ``mujoco.MjData`` / ``mujoco.MjvScene`` so
that any MuJoCo env (dm_control here, Meta-World later) can use them:

- **model edits** (``color``, ``texture``): visual-only model arrays (``geom_rgba``, ``mat_rgba``,
  ``tex_data``) are edited at every reset. The first time a model is seen its pristine arrays are stored
  (keyed by the model object, shared by all shift instances), and every reset restores them before the new
  episode's values are applied, so nothing drifts across episodes. :meth:`SceneShift.remove` restores them.
- **render hooks** (``lighting``, ``camera``, ``distractors``): ``hook(model, data, scene)`` callables in the
  env's ``render_hooks`` edit the ``mjvScene`` after ``mjv_updateScene`` and before the GL render (GL camera,
  scene lights, extra visual-only geoms). The scene is rebuilt from the model every frame, so these cannot
  drift either. ``background`` is an ``image_hooks`` callable compositing over a segmentation render.

Per-episode randomness comes from ``Shift.episode_rng`` and is drawn identically for every severity, so the
severity only scales the same perturbation (hence monotonic growth).

Severity table (``s`` = severity 1-5; "u" = a per-episode random factor in [0.6, 1] with a random sign):

==============  ==========================================================================================
kind            parameters
==============  ==========================================================================================
``color``       every material RGB and every geom RGB that overrides its material moves the fraction
                ``s / 5`` of the way to a random target colour (the farthest of 4 uniform draws from the RGB
                cube, typically 0.7-1.2 away; colours in [0, 1]); alpha unchanged.
``texture``     every model texture (dm_control: floor ``grid`` and ``skybox``) is blended with a random
                procedural pattern (checker / stripes / waves / noise / rings, two random colours), blend
                weight ``0.2 s`` (s=5: replaced), ``2 + 2 s`` periods per 2D texture (``1 + s`` per cube face).
``lighting``    all scene lights incl. the headlight: ambient/diffuse/specular times a per-channel gain
                ``1 + s (0.2 + 0.1 d)`` (brighter) or ``1 - s (0.15 + 0.025 d)`` (darker; random), ``d`` a
                random unit RGB tint direction; directions rotated by ``6 s`` degrees, non-head lights moved
                by ``0.05 s * extent`` (model ``stat.extent``, metres). (Larger spot-light rotations made
                the pixel change non-monotonic: the lit floor patch moves away while the gain grows.)
``camera``      about the point where the view ray meets the model's centre of mass: azimuth ``6 s u``
                degrees, elevation ``4 s u`` degrees, roll ``2 s u`` degrees, distance times ``1 + 0.08 s u``,
                field of view times ``1 + 0.06 s u``; the headlight follows the camera.
``distractors`` ``(2, 3, 5, 7, 10)[s-1]`` random primitives (sphere/box/capsule/cylinder/ellipsoid, random
                colour) in view, 35-80 % of the way to the subject, size ``(0.02 + 0.008 s) D`` (``D`` =
                camera-to-subject distance); static for s <= 2, moving for s >= 3 (bouncing across the view
                at ``0.5 (s - 2)`` half-views per simulated second, spinning), positions a function of
                ``data.time``.
``background``  background pixels blended with a procedural pattern (kinds as ``texture``), weight
                ``0.2 s`` (s=5: replaced), ``2 + 1.5 s`` periods across the image; static for s <= 2, for
                s >= 3 scrolling at ``0.1 (s - 2)`` image widths per simulated second.
==============  ==========================================================================================

Background rule (``background``): a pixel is *foreground* if the segmentation render shows a model geom of a
body other than the world body (the agent, objects) or a non-model scene geom (e.g. ``distractors``);
*background* is the skybox/empty space and every world-body geom (floor, static scenery such as cartpole's
rails). The segmentation costs one extra render per frame.

``camera`` and ``distractors`` use the GL camera of the frame and the point on its view ray nearest the
model's centre of mass (``data.subtree_com[0]``) as the subject; azimuth turns about the world z axis.

Cost (walker, 64x64, software EGL on a busy 2-core CPU; step + render time vs. clean, severity 3): ``color``,
``texture``, ``camera``, ``lighting`` about x1.0-1.2 (hooks take < 1 ms), ``distractors`` x1.4 (the extra
geoms), ``background`` x2 (the segmentation render). ``texture`` costs ~80-130 ms per reset (pattern and
blend ~25 ms; uploading the 800x4800 skybox to GL ~45 ms).

Hook order follows the order of the shifts in the :class:`~shifts.base.ShiftWrapper`. Use at most one shift
per kind per env; call :meth:`SceneShift.remove` to use the env clean again.
"""

from __future__ import annotations

import weakref
from typing import Any, ClassVar

import numpy as np

from envs.driving import Appearance
from shifts._procedural import Pattern
from shifts.base import Shift, ShiftError, register
from shifts.driving import carracing_appearance

__all__ = ["Background", "Camera", "Color", "Distractors", "Lighting", "SceneShift", "Texture",
           "foreground_mask"]

# pristine copies of edited model arrays: {MjModel: {field: array}}
_ORIGINALS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DEFAULT_GEOM_RGBA = np.array([0.5, 0.5, 0.5, 1.0], np.float32)
_MJOBJ_GEOM = 5  # mujoco.mjtObj.mjOBJ_GEOM


def _mj(env: Any) -> tuple[Any, Any]:
    """Raw ``(mujoco.MjModel, mujoco.MjData)`` of a dm_control-style (``env.physics``) or raw MuJoCo env."""
    physics = getattr(env, "physics", None)
    if physics is not None:
        return physics.model.ptr, physics.data.ptr
    if hasattr(env, "model") and hasattr(env, "data"):
        return env.model, env.data
    raise ShiftError(f"scene shifts need a MuJoCo env (with .physics or .model/.data), got {type(env).__name__}")


def _restore(model: Any, fields: tuple[str, ...]) -> None:
    """Store the pristine ``fields`` of ``model`` the first time, else copy them back into the model."""
    store = _ORIGINALS.setdefault(model, {})
    for name in fields:
        array = getattr(model, name)
        if name in store:
            array[...] = store[name]
        else:
            store[name] = array.copy()


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """``(3, 3)`` rotation by ``angle`` radians about ``axis`` (Rodrigues)."""
    x, y, z = _unit(np.asarray(axis, np.float64))
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _far_colors(rng: np.random.Generator, rgb: np.ndarray, draws: int = 4) -> np.ndarray:
    """Per row of ``rgb`` ``(n, 3)``, the farthest of ``draws`` uniform random RGB colours: ``(n, 3)``."""
    candidates = rng.uniform(0.0, 1.0, (draws, *rgb.shape))
    best = np.linalg.norm(candidates - rgb, axis=-1).argmax(axis=0)
    return candidates[best, np.arange(len(rgb))]


def _subject_distance(model: Any, data: Any, pos: np.ndarray, forward: np.ndarray) -> float:
    """Distance (m) along the view ray to the model's centre of mass (at least ``0.25 * stat.extent``)."""
    return max(float(np.dot(data.subtree_com[0] - pos, forward)), 0.25 * float(model.stat.extent))


def _all_geoms(scene: Any) -> Any:
    # dm_control's MjvScene subclass truncates ``geoms`` to ``ngeom``; the base property gives all ``maxgeom``.
    import mujoco

    return mujoco.MjvScene.geoms.fget(scene)


def foreground_mask(segmentation: np.ndarray, geom_is_foreground: np.ndarray) -> np.ndarray:
    """Foreground pixels of a segmentation render (rule in the module docstring).

    Args:
        segmentation: ``(H, W, 2) int32`` ``(object id, mjtObj type)`` per pixel, ``(-1, -1)`` = nothing.
        geom_is_foreground: ``(ngeom,) bool`` per model geom.

    Returns:
        ``(H, W) bool``.
    """
    objid, objtype = segmentation[..., 0], segmentation[..., 1]
    is_geom = objtype == _MJOBJ_GEOM
    geom_fg = geom_is_foreground[np.clip(objid, 0, len(geom_is_foreground) - 1)]
    return np.where(is_geom, geom_fg, objtype != -1)


class SceneShift(Shift):
    """Base of scene shifts: restores ``fields`` at every reset, calls :meth:`setup`, installs the hooks that
    the subclass overrides (:meth:`render_hook` into ``env.render_hooks``, :meth:`image_hook` into
    ``env.image_hooks``)."""

    level: ClassVar[str] = "scene"
    #: raw ``MjModel`` arrays this kind edits (restored from the pristine copy at every reset)
    fields: ClassVar[tuple[str, ...]] = ()

    #: kinds with an appearance analogue on driving:carracing (shifts/driving.py)
    env_suites: ClassVar[tuple[str, ...] | None] = ("dmc", "metaworld")

    def on_reset(self, env: Any, rng: np.random.Generator) -> None:
        if hasattr(env, "set_appearance"):  # driving:carracing: its appearance analogue
            env.set_appearance(carracing_appearance(self.kind, self.severity, rng, Appearance()), now=True)
            return
        model, _ = _mj(env)
        _restore(model, self.fields)
        self.setup(env, model, rng)
        for name, method in (("render_hooks", "render_hook"), ("image_hooks", "image_hook")):
            if getattr(type(self), method) is getattr(SceneShift, method):
                continue  # not overridden
            hook = getattr(self, method)
            hooks = getattr(env, name, None)
            if hooks is None:
                raise ShiftError(f"shift {self.kind!r} needs an env with `{name}` (e.g. envs.DMCEnv)")
            if hook not in hooks:
                hooks.append(hook)

    def remove(self, env: Any) -> None:
        """Undo the shift on ``env``: uninstall its hooks and restore the pristine model arrays."""
        if hasattr(env, "set_appearance"):
            env.set_appearance(Appearance(), now=True)
            return
        for name, hook in (("render_hooks", self.render_hook), ("image_hooks", self.image_hook)):
            hooks = getattr(env, name, [])
            while hook in hooks:
                hooks.remove(hook)
        _restore(_mj(env)[0], self.fields)

    def setup(self, env: Any, model: Any, rng: np.random.Generator) -> None:
        """Draw the episode's parameters (and edit ``fields``); the model arrays are pristine here."""

    def render_hook(self, model: Any, data: Any, scene: Any) -> None:
        """Edit the ``mujoco.MjvScene`` of a frame (after ``mjv_updateScene``, before the GL render)."""

    def image_hook(self, image: np.ndarray) -> np.ndarray:
        """Map a rendered ``(H, W, 3) uint8`` frame."""
        return image


@register
class Color(SceneShift):
    """Material and geom RGB moved ``severity / 5`` of the way to random far target colours."""

    kind = "color"
    env_suites = ("dmc", "metaworld", "driving")
    fields = ("geom_rgba", "mat_rgba")

    def setup(self, env: Any, model: Any, rng: np.random.Generator) -> None:
        fraction = self.severity / 5
        mats, geoms = model.mat_rgba[:, :3], model.geom_rgba[:, :3]
        mat_target, geom_target = _far_colors(rng, mats), _far_colors(rng, geoms)  # drawn for every severity
        mats += fraction * (mat_target - mats)
        # MuJoCo draws a geom with its material's colour unless the geom rgba differs from the default
        own = (model.geom_matid < 0) | np.any(model.geom_rgba != _DEFAULT_GEOM_RGBA, axis=1)
        geoms[own] += fraction * (geom_target[own] - geoms[own])


@register
class Texture(SceneShift):
    """Every model texture blended (weight ``0.2 * severity``) with a random procedural pattern."""

    kind = "texture"
    env_suites = ("dmc", "metaworld", "driving")
    fields = ("tex_data",)

    def setup(self, env: Any, model: Any, rng: np.random.Generator) -> None:
        weight = round(256 * 0.2 * self.severity)  # blend weight in 1/256
        for tex in range(model.ntex):
            pattern = Pattern.draw(rng)
            height, width, nchan = int(model.tex_height[tex]), int(model.tex_width[tex]), int(model.tex_nchannel[tex])
            start = int(model.tex_adr[tex])
            data = model.tex_data[start:start + height * width * nchan].reshape(height, width, nchan)
            if model.tex_type[tex] != 0 and height % width == 0:  # cube / skybox: the same pattern on each face
                data = data.reshape(height // width, width, width, nchan)
                image = pattern.render_uint8(width, width, 1 + self.severity)
            else:  # mjTEXTURE_2D
                image = pattern.render_uint8(height, width, 2 + 2 * self.severity)
            if nchan < 3:
                image = image.mean(axis=-1, keepdims=True).astype(np.uint8)
            chans = min(nchan, 3)
            mixed = data[..., :chans].astype(np.uint16)  # (1 - w) * old + w * pattern, in 1/256 fixed point
            mixed *= 256 - weight
            mixed += image[..., :chans].astype(np.uint16) * weight
            mixed >>= 8
            data[..., :chans] = mixed
        _upload_textures(env, model)

    def remove(self, env: Any) -> None:
        super().remove(env)
        if not hasattr(env, "set_appearance"):
            _upload_textures(env, _mj(env)[0])


def _upload_textures(env: Any, model: Any) -> None:
    """Upload all of ``model``'s textures to the env's GL context (dm_control ``physics.contexts``).

    Nothing to do while the env has no GL context yet (e.g. ``obs="state"`` before any ``render()``): creating
    the context later uploads the model's current textures, so none is created here."""
    import mujoco

    physics = getattr(env, "physics", None)
    if physics is None:
        raise ShiftError("shift 'texture' needs a dm_control env (physics.contexts) to upload textures")
    if getattr(physics, "_contexts", True) is None:  # dm_control creates it lazily on first access
        return
    contexts = physics.contexts
    with contexts.gl.make_current() as ctx:
        for tex in range(model.ntex):
            ctx.call(mujoco.mjr_uploadTexture, model, contexts.mujoco.ptr, tex)


@register
class Lighting(SceneShift):
    """Scene lights (incl. headlight) dimmed/brightened, tinted, rotated and moved with severity."""

    kind = "lighting"
    env_suites = ("dmc", "metaworld", "driving")
    _MAX_LIGHTS = 16

    def setup(self, env: Any, model: Any, rng: np.random.Generator) -> None:
        s = self.severity
        brighter = rng.random() < 0.5
        tint = _unit(rng.normal(size=3))
        # per-channel gain, every channel moving the same way (monotonic in s): brighter 1 + s (0.2 + 0.1 d),
        # darker 1 - s (0.15 + 0.025 d) (>= 0.125 at s=5), d = random unit RGB tint direction
        self._gain = 1 + s * (0.2 + 0.1 * tint) if brighter else 1 - s * (0.15 + 0.025 * tint)
        self._angle = np.deg2rad(6 * s)
        self._axes = rng.normal(size=(self._MAX_LIGHTS, 3))
        self._offsets = _unit(rng.normal(size=(self._MAX_LIGHTS, 3))) * 0.05 * s * float(model.stat.extent)

    def render_hook(self, model: Any, data: Any, scene: Any) -> None:
        for i in range(min(scene.nlight, self._MAX_LIGHTS)):
            light = scene.lights[i]
            for color in (light.ambient, light.diffuse, light.specular):
                color[:] = color * self._gain
            direction = np.asarray(light.dir, np.float64)
            axis = np.cross(direction, self._axes[i])  # perpendicular: rotates by exactly the angle
            light.dir[:] = _rotation(axis, self._angle) @ direction
            if not light.headlight:
                light.pos[:] = light.pos + self._offsets[i]


@register
class Camera(SceneShift):
    """Rendering camera orbited (azimuth/elevation/roll), dollied and zoomed with severity."""

    kind = "camera"
    env_suites = ("dmc", "metaworld", "driving")

    def setup(self, env: Any, model: Any, rng: np.random.Generator) -> None:
        u = rng.uniform(0.6, 1.0, 5) * rng.choice([-1.0, 1.0], 5)
        s = self.severity
        self._azimuth, self._elevation, self._roll = np.deg2rad([6 * s * u[0], 4 * s * u[1], 2 * s * u[2]])
        self._distance = 1 + 0.08 * s * u[3]
        self._fov = 1 + 0.06 * s * u[4]

    def render_hook(self, model: Any, data: Any, scene: Any) -> None:
        cam = scene.camera[0]
        pos, forward, up = (np.asarray(v, np.float64) for v in (cam.pos, cam.forward, cam.up))
        dist = _subject_distance(model, data, pos, forward)
        pivot = pos + dist * forward
        rot = _rotation([0, 0, 1], self._azimuth) @ _rotation(np.cross(forward, up), self._elevation)
        new_forward = rot @ forward
        rot = _rotation(new_forward, self._roll) @ rot
        dolly = (1 - self._distance) * dist * new_forward
        half = np.tan(self._fov * np.arctan(cam.frustum_top / cam.frustum_near)) * cam.frustum_near
        zoom = half / cam.frustum_top
        for glcam in scene.camera:  # both eyes (identical unless stereo)
            glcam.pos[:] = pivot + rot @ (np.asarray(glcam.pos, np.float64) - pivot) + dolly
            glcam.forward[:] = rot @ np.asarray(glcam.forward, np.float64)
            glcam.up[:] = rot @ np.asarray(glcam.up, np.float64)
            glcam.frustum_top *= zoom
            glcam.frustum_bottom *= zoom
            glcam.frustum_center *= zoom
            glcam.frustum_width *= zoom
        for i in range(scene.nlight):  # the headlight follows the camera
            light = scene.lights[i]
            if light.headlight:
                light.pos[:] = scene.camera[0].pos
                light.dir[:] = scene.camera[0].forward


@register
class Distractors(SceneShift):
    """Visual-only primitives added to the scene in view of the camera; moving for severity >= 3."""

    kind = "distractors"
    _COUNTS = (0, 2, 3, 5, 7, 10)
    _MAX = 10

    def setup(self, env: Any, model: Any, rng: np.random.Generator) -> None:
        import mujoco

        g = mujoco.mjtGeom
        shapes = np.array([g.mjGEOM_SPHERE, g.mjGEOM_BOX, g.mjGEOM_CAPSULE, g.mjGEOM_CYLINDER, g.mjGEOM_ELLIPSOID])
        n = self._MAX
        self._types = [int(t) for t in rng.choice(shapes, n)]
        self._rgba = np.concatenate([rng.uniform(0, 1, (n, 3)), np.ones((n, 1))], axis=1).astype(np.float32)
        self._size = rng.uniform(0.7, 1.3, (n, 3))
        self._xy0 = rng.uniform(-0.8, 0.8, (n, 2))
        self._depth = rng.uniform(0.35, 0.8, n)
        self._velocity = _unit(rng.normal(size=(n, 2))) * rng.uniform(0.5, 1.0, (n, 1))
        self._quat = _unit(rng.normal(size=(n, 4)))
        self._spin = rng.normal(size=(n, 3)) * 2.0  # rad/s
        self._geoms: tuple[Any, Any] | None = None  # (scene, all its geoms)

    def render_hook(self, model: Any, data: Any, scene: Any) -> None:
        import mujoco

        s = self.severity
        t = float(data.time) if s >= 3 else 0.0
        speed = 0.5 * (s - 2)
        cam = scene.camera[0]
        pos, forward, up = (np.asarray(v, np.float64) for v in (cam.pos, cam.forward, cam.up))
        right = np.cross(forward, up)
        dist = _subject_distance(model, data, pos, forward)
        tan_half = cam.frustum_top / cam.frustum_near
        if self._geoms is None or self._geoms[0] is not scene:
            self._geoms = (scene, _all_geoms(scene))  # building the 1000 geom views costs ~2 ms: cache
        geoms = self._geoms[1]
        mat = np.empty(9)
        for k in range(self._COUNTS[s]):
            if scene.ngeom >= scene.maxgeom:
                break
            xy = self._xy0[k] + speed * t * self._velocity[k]
            xy = 0.85 - np.abs((xy + 0.85) % 3.4 - 1.7)  # bounce inside [-0.85, 0.85]
            depth = self._depth[k] * dist
            where = pos + depth * (forward + tan_half * (xy[0] * right + xy[1] * up))
            quat = np.empty(4)
            mujoco.mju_mulQuat(quat, self._quat[k], _axis_angle_quat(self._spin[k] * t))
            mujoco.mju_quat2Mat(mat, quat)
            geom = geoms[scene.ngeom]
            mujoco.mjv_initGeom(geom, self._types[k], self._size[k] * dist * (0.02 + 0.008 * s), where, mat,
                                self._rgba[k])
            geom.category = mujoco.mjtCatBit.mjCAT_DECOR
            geom.objtype, geom.objid, geom.segid = int(mujoco.mjtObj.mjOBJ_UNKNOWN), -1, scene.ngeom
            scene.ngeom += 1


def _axis_angle_quat(rotvec: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    return np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * rotvec / angle])


@register
class Background(SceneShift):
    """Background pixels (segmentation rule in the module docstring) blended with a procedural pattern."""

    kind = "background"

    def setup(self, env: Any, model: Any, rng: np.random.Generator) -> None:
        if not callable(getattr(env, "render_segmentation", None)):
            raise ShiftError("shift 'background' needs an env with render_segmentation() (e.g. envs.DMCEnv)")
        self._env = env
        self._data = _mj(env)[1]
        self._pattern = Pattern.draw(rng)
        self._direction = _unit(rng.normal(size=2))
        self._geom_fg = np.asarray(model.geom_bodyid) != 0
        self._static: np.ndarray | None = None  # cached pattern (H, W, 3) float32 in [0, 255] for s <= 2

    def image_hook(self, image: np.ndarray) -> np.ndarray:
        s = self.severity
        height, width = image.shape[:2]
        periods = 2 + 1.5 * s
        if s >= 3:
            shift = 0.1 * (s - 2) * float(self._data.time) * periods * self._direction
            pattern = 255.0 * self._pattern.render(height, width, periods, (shift[0], shift[1]))
        else:
            if self._static is None or self._static.shape[:2] != (height, width):
                self._static = 255.0 * self._pattern.render(height, width, periods)
            pattern = self._static
        weight = 0.2 * s
        background = ~foreground_mask(self._env.render_segmentation(), self._geom_fg)
        out = image.copy()
        out[background] = np.rint((1 - weight) * image[background] + weight * pattern[background]).astype(np.uint8)
        return out

"""Pixel-level shifts (:mod:`shifts.pixel`) on real dm_control frames: severity 0 is the clean env bit for bit,
the change grows with severity, per-episode randomness is reproducible, rewards are untouched, and the ops
agree with the ImageNet-C reference implementations (skimage HSV, PIL resize/JPEG)."""

from __future__ import annotations

import io

import numpy as np
import pytest

import envs
from shifts import pixel
from shifts.base import ShiftError, ShiftWrapper, kinds, make_shift

PIXEL_KINDS = ["brightness", "contrast", "defocus_blur", "fog", "gaussian_noise", "impulse_noise", "jpeg",
               "motion_blur", "pixelate", "saturate", "shot_noise"]
RANDOM_KINDS = {"fog", "gaussian_noise", "impulse_noise", "motion_blur", "shot_noise"}
ENV = "dmc:walker_walk"


@pytest.fixture(scope="module")
def env():
    e = envs.make_env(ENV, size=64)
    yield e
    e.close()


@pytest.fixture(scope="module")
def frame(env) -> np.ndarray:
    return env.reset(seed=0)[0]["image"]


def rollout(env, seed: int = 3, steps: int = 3) -> tuple[list[np.ndarray], list[float], list[dict]]:
    """Images, rewards and infos of a reset + ``steps`` fixed actions."""
    actions = np.random.default_rng(0).uniform(-1, 1, (steps,) + env.action_space.shape)
    obs, info = env.reset(seed=seed)
    images, rewards, infos = [obs["image"]], [], [info]
    for a in actions:
        obs, r, _, _, info = env.step(a)
        images.append(obs["image"])
        rewards.append(r)
        infos.append(info)
    return images, rewards, infos


def test_every_pixel_kind_is_registered():
    assert kinds("pixel") == PIXEL_KINDS
    for kind in PIXEL_KINDS:
        shift = make_shift(kind, 3)
        assert shift.level == "pixel" and len(shift.table) == 5
        assert shift.random == (kind in RANDOM_KINDS)


@pytest.mark.parametrize("kind", PIXEL_KINDS)
def test_severity_zero_is_the_clean_env_bit_for_bit(env, kind):
    clean, clean_rewards, _ = rollout(env)
    shifted, rewards, _ = rollout(ShiftWrapper(env, [make_shift(kind, 0)]))
    assert rewards == clean_rewards
    for a, b in zip(clean, shifted, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    image = clean[0]
    assert make_shift(kind, 0).apply(image, 0) is image


@pytest.mark.parametrize("kind", PIXEL_KINDS)
def test_change_grows_with_severity(frame, kind):
    change = [np.abs(make_shift(kind, s, seed=0).apply(frame, 0).astype(int) - frame).mean() for s in (1, 3, 5)]
    assert 0 < change[0] < change[1] < change[2], change


@pytest.mark.parametrize("kind", PIXEL_KINDS)
def test_dtype_shape_and_input_checks(frame, kind):
    for image in (frame, np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)):
        out = make_shift(kind, 5).apply(image, 0)
        assert out.dtype == np.uint8 and out.shape == image.shape and out.flags.writeable
    with pytest.raises(ShiftError, match="uint8"):
        make_shift(kind, 3).apply(frame.astype(np.float32), 0)
    with pytest.raises(ShiftError, match="0-5"):
        make_shift(kind, 6)


@pytest.mark.parametrize("kind", PIXEL_KINDS)
def test_deterministic_per_seed_and_episode_seed(env, kind):
    def episode(shift_seed: int, episode_seed: int) -> list[np.ndarray]:
        wrapped = ShiftWrapper(env, [make_shift(kind, 3, seed=shift_seed)])
        rollout(wrapped, seed=99, steps=1)  # another episode first: episodes must not depend on history
        return rollout(wrapped, seed=episode_seed, steps=2)[0]

    first = episode(0, 5)
    assert all(np.array_equal(a, b) for a, b in zip(first, episode(0, 5), strict=True))
    other_seed = episode(1, 5)
    if kind in RANDOM_KINDS:
        assert not all(np.array_equal(a, b) for a, b in zip(first, other_seed, strict=True))
        # the same clean frame in another episode gets other noise / fog / blur direction
        shift = make_shift(kind, 3)
        outs = []
        for episode_seed in (5, 6):
            shift.on_reset(env.unwrapped, shift.episode_rng(episode_seed))
            outs.append(shift.apply(first[0], 0))
        assert not np.array_equal(*outs)
    else:
        assert all(np.array_equal(a, b) for a, b in zip(first, other_seed, strict=True))


@pytest.mark.parametrize("kind", sorted(RANDOM_KINDS - {"fog", "motion_blur"}))
def test_noise_is_fresh_every_frame(frame, kind):
    shift = make_shift(kind, 5)
    assert not np.array_equal(shift.apply(frame, 0), shift.apply(frame, 1))


def test_rewards_and_infos_are_untouched(env):
    clean_images, clean_rewards, clean_infos = rollout(env, steps=5)
    for kind in PIXEL_KINDS:
        images, rewards, infos = rollout(ShiftWrapper(env, [make_shift(kind, 5)]), steps=5)
        assert rewards == clean_rewards and infos == clean_infos, kind
        assert not np.array_equal(images[-1], clean_images[-1]), kind


def test_severity_tables_follow_tiny_imagenet_c():
    assert pixel.GaussianNoise.table == (0.04, 0.08, 0.12, 0.15, 0.18)
    assert pixel.ShotNoise.table == (250, 100, 50, 30, 15)
    assert pixel.ImpulseNoise.table == (0.01, 0.02, 0.05, 0.08, 0.14)
    assert pixel.Contrast.table == (0.4, 0.3, 0.2, 0.1, 0.05)
    assert pixel.Jpeg.table == (65, 58, 50, 40, 25)
    assert pixel.Pixelate.table == (0.9, 0.8, 0.7, 0.6, 0.5)


def test_noise_statistics():
    grey = np.full((64, 64, 3), 128, np.uint8)
    for severity, sigma in enumerate(pixel.GaussianNoise.table, 1):
        out = make_shift("gaussian_noise", severity).apply(grey, 0).astype(float)
        assert abs(out.mean() - 128) < 1.0 and abs(out.std() / (255 * sigma) - 1) < 0.05
    for severity, p in enumerate(pixel.ImpulseNoise.table, 1):
        out = make_shift("impulse_noise", severity).apply(grey, 0)
        assert abs((out == 0).mean() - p / 2) < 0.3 * p / 2 + 0.002
        assert abs((out == 255).mean() - p / 2) < 0.3 * p / 2 + 0.002
        assert ((out == 0) | (out == 255) | (out == 128)).all()
    for severity, c in enumerate(pixel.ShotNoise.table, 1):
        out = make_shift("shot_noise", severity).apply(grey, 0).astype(float)
        # Poisson(c x / 255) * 255 / c: mean x, variance x * 255 / c
        assert abs(out.mean() - 128) < 1.5 and abs(out.var() / (128 * 255 / c) - 1) < 0.1


def test_hsv_shifts_match_skimage(frame):
    color = pytest.importorskip("skimage.color")
    rng = np.random.default_rng(2)
    images = [frame, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)]
    images[1][:2] = 0  # black and grey pixels have no hue
    images[1][2:4] = 90
    for image in images:
        for kind, channel, fn in [
            ("brightness", 2, lambda v, c: np.clip(v + c, 0, 1)),
            ("saturate", 1, lambda s, c: np.clip(s * c[0] + c[1], 0, 1)),
        ]:
            for severity in range(1, 6):
                param = make_shift(kind, severity).param
                hsv = color.rgb2hsv(image / 255.0)
                hsv[..., channel] = fn(hsv[..., channel], param)
                ref = np.rint(np.clip(color.hsv2rgb(hsv), 0, 1) * 255)
                out = make_shift(kind, severity).apply(image, 0)
                assert np.abs(out - ref).max() <= 1, (kind, severity)


def test_pixelate_and_jpeg_match_pil(frame):
    from PIL import Image

    for severity, c in enumerate(pixel.Pixelate.table, 1):
        n = int(64 * c)
        ref = np.asarray(Image.fromarray(frame).resize((n, n), Image.BOX).resize((64, 64), Image.BOX))
        assert np.array_equal(make_shift("pixelate", severity).apply(frame, 0), ref)
    for severity, quality in enumerate(pixel.Jpeg.table, 1):
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
        ref = np.asarray(Image.open(buf).convert("RGB"))
        assert np.array_equal(make_shift("jpeg", severity).apply(frame, 0), ref)


def test_blur_kernels():
    # defocus: ImageNet-C's aliased disk; radius 3 -> 29 pixels of equal weight (sigma 0.1 anti-aliasing ~ none)
    taps = pixel._defocus_taps(3.0, 0.1)
    assert len(taps) == 1 and len(taps[0][1]) == 29 and taps[0][0] == pytest.approx(1 / 29)
    # motion: one-sided Gaussian weights along the angle, starting at the pixel itself
    taps = dict((off, w) for w, offs in pixel._motion_taps(10, 1.0, 0.0) for off in offs)
    assert set(taps) == {(0, i) for i in range(5)}
    assert taps[(0, 1)] / taps[(0, 0)] == pytest.approx(np.exp(-0.5), rel=1e-6)
    flat = np.full((16, 16, 3), 77, np.uint8)  # blurs keep a constant image (weights sum to 1, borders padded)
    for kind in ("defocus_blur", "motion_blur"):
        for severity in range(1, 6):
            assert np.array_equal(make_shift(kind, severity).apply(flat, 0), flat)


def test_fog_is_static_within_an_episode(frame):
    shift = make_shift("fog", 4)
    shift.on_reset(None, shift.episode_rng(1))
    assert np.array_equal(shift.apply(frame, 0), shift.apply(frame, 7))
    plasma = pixel.plasma_fractal(np.random.default_rng(0), 64, 2.0)
    assert plasma.shape == (64, 64) and plasma.min() == 0 and plasma.max() == 1

"""Forgetting: k-NN accuracy (k = 5, cosine; :mod:`experiments.analysis.knn`) of the encoder's pooled features
(CLS token / pooler output of ViTs, global average pool of CNNs: ``backbone_tokens(...)[0]``) on a labelled image
set, for the pretrained and the fine-tuned encoder (Jones et al. 2025: ImageNet k-NN 65.9 % frozen DINOv2,
39.8 % partial, 4.9 % full fine-tuning).

Image sets:

- default, offline: frames of our own dm_control envs labelled by task (:data:`DEFAULT_ENVS`, eight tasks of
  eight different domains, so the label is recoverable from the image). Training frames come from episodes
  seeded ``seed, seed+1, ...``, test frames from episodes seeded ``seed + 1000, ...`` (random actions, one frame
  every 5 agent steps), all at the run's ``image_size``. This set is easy (a random-init encoder already
  classifies much of it); read the *change* between pretrained and fine-tuned, and compare with the ``random``
  control. It measures whether fine-tuning kept features that tell scenes apart, not ImageNet semantics.
- ``--dataset DIR``: an ImageFolder tree (``DIR/<class>/<image>``, or ``DIR/train/<class>/...`` +
  ``DIR/val/<class>/...``); without a train/val split, a seeded 70/30 split per class. Images are
  centre-cropped to a square and resized to ``size``.
- ``--dataset hf:NAME``: a Hugging Face ``datasets`` dataset with ``image`` and ``label`` columns (``train`` and
  ``validation``/``test`` splits), when ``datasets`` is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from envs.errors import ConfigError
from experiments.analysis.frames import collect_frames
from experiments.analysis.knn import knn_accuracy

DEFAULT_ENVS = ("dmc:cartpole_balance", "dmc:walker_walk", "dmc:cheetah_run", "dmc:reacher_easy",
                "dmc:finger_spin", "dmc:ball_in_cup_catch", "dmc:pendulum_swingup", "dmc:hopper_stand")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
TEST_SEED_OFFSET = 1000


@dataclass
class LabelledImages:
    """A labelled image set split into train (the k-NN memory) and test.

    Attributes:
        name: what it is (for the report); classes: class names, label ``i`` = ``classes[i]``.
        train_images, test_images: ``(N, H, W, 3)`` / ``(M, H, W, 3)`` uint8.
        train_labels, test_labels: ``(N,)`` / ``(M,)`` int64.
    """

    name: str
    classes: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def env_images(env_names: tuple[str, ...] | list[str] = DEFAULT_ENVS, train_per_class: int = 20,
               test_per_class: int = 10, size: int = 64, seed: int = 0, stride: int = 5) -> LabelledImages:
    """The default set: frames of ``env_names`` labelled by env (see the module docstring).

    Raises:
        ConfigError: fewer than 2 envs or non-positive counts; EnvError: unknown env.
    """
    if len(env_names) < 2 or train_per_class < 1 or test_per_class < 1:
        raise ConfigError("the env image set needs >= 2 envs and >= 1 train and test frame per env")
    parts: dict[str, list[np.ndarray]] = {"train": [], "test": [], "ytrain": [], "ytest": []}
    for label, name in enumerate(env_names):
        for split, n, s in (("train", train_per_class, seed), ("test", test_per_class, seed + TEST_SEED_OFFSET)):
            frames = collect_frames(name, n, size=size, seed=s, stride=stride).images
            parts[split].append(frames)
            parts["y" + split].append(np.full(len(frames), label, np.int64))
    return LabelledImages(f"env frames ({len(env_names)} dm_control tasks)", list(env_names),
                          np.concatenate(parts["train"]), np.concatenate(parts["ytrain"]),
                          np.concatenate(parts["test"]), np.concatenate(parts["ytest"]))


def _load_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        side = min(w, h)
        im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
        return np.asarray(im.resize((size, size), Image.BILINEAR), np.uint8)


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def image_folder(path: Path | str, size: int = 64, max_per_class: int = 100, test_fraction: float = 0.3,
                 seed: int = 0) -> LabelledImages:
    """An ImageFolder tree as a :class:`LabelledImages` (layout in the module docstring).

    Args:
        max_per_class: at most this many images per class and split (seeded choice).

    Raises:
        ConfigError: not a directory, fewer than 2 classes, or a class without images in a split.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"--dataset {str(path)!r} is not a directory (expected an ImageFolder tree "
                          f"DIR/<class>/<image>) nor hf:<datasets name>")
    rng = np.random.default_rng(seed)
    split_dirs = {s: root / s for s in ("train", "val")}
    pre_split = all(d.is_dir() for d in split_dirs.values())
    classes = [d.name for d in _class_dirs(split_dirs["train"] if pre_split else root)]
    if len(classes) < 2:
        raise ConfigError(f"--dataset {str(path)!r}: need >= 2 class directories, found {classes}")
    out: dict[str, list[Any]] = {"xtr": [], "ytr": [], "xte": [], "yte": []}
    for label, cls in enumerate(classes):
        if pre_split:
            train_files, test_files = _files(split_dirs["train"] / cls), _files(split_dirs["val"] / cls)
        else:
            files = _files(root / cls)
            files = [files[i] for i in rng.permutation(len(files))]
            cut = int(round(len(files) * (1 - test_fraction)))
            train_files, test_files = files[:cut], files[cut:]
        if not train_files or not test_files:
            raise ConfigError(f"--dataset {str(path)!r}: class {cls!r} has no train or no test images")
        for key, files in (("tr", train_files[:max_per_class]), ("te", test_files[:max_per_class])):
            out["x" + key] += [_load_image(f, size) for f in files]
            out["y" + key] += [label] * len(files)
    return LabelledImages(f"ImageFolder {root}", classes, np.stack(out["xtr"]), np.asarray(out["ytr"], np.int64),
                          np.stack(out["xte"]), np.asarray(out["yte"], np.int64))


def hf_images(name: str, size: int = 64, max_per_class: int = 50, seed: int = 0) -> LabelledImages:
    """A Hugging Face ``datasets`` dataset (``image`` + ``label`` columns) as a :class:`LabelledImages`.

    Raises:
        ConfigError: ``datasets`` is not installed, the dataset cannot be loaded, or it lacks the columns.
    """
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"--dataset hf:{name} needs the `datasets` package (pip install datasets), which is not "
                          f"installed; or pass an ImageFolder directory") from None
    from PIL import Image

    try:
        ds = datasets.load_dataset(name)
    except Exception as exc:  # noqa: BLE001 - network, missing dataset, bad name: one user error
        raise ConfigError(f"cannot load dataset {name!r} with `datasets`: {' '.join(str(exc).split())[:200]}") from None
    test_split = next((s for s in ("validation", "val", "test") if s in ds), None)
    if "train" not in ds or test_split is None:
        raise ConfigError(f"dataset {name!r} needs a train and a validation/test split, has {list(ds)}")
    columns = ds["train"].column_names
    image_col = next((c for c in ("image", "img") if c in columns), None)
    label_col = next((c for c in ("label", "labels", "fine_label") if c in columns), None)
    if image_col is None or label_col is None:
        raise ConfigError(f"dataset {name!r} needs image and label columns, has {columns}")
    rng = np.random.default_rng(seed)

    def take(split: Any) -> tuple[np.ndarray, np.ndarray]:
        labels = np.asarray(split[label_col], np.int64)
        keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:max_per_class]
                               for c in np.unique(labels)])
        images = []
        for i in keep:
            im = split[int(i)][image_col]
            im = im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im))
            images.append(np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.uint8))
        return np.stack(images), labels[keep]

    xtr, ytr = take(ds["train"])
    xte, yte = take(ds[test_split])
    names = getattr(ds["train"].features.get(label_col), "names", None) or [str(c) for c in range(ytr.max() + 1)]
    return LabelledImages(f"datasets {name}", list(names), xtr, ytr, xte, yte)


def load_images(dataset: str | None, size: int = 64, seed: int = 0, envs: list[str] | None = None) -> LabelledImages:
    """The image set named by ``--dataset`` (``None``: the env frames of ``envs`` or :data:`DEFAULT_ENVS`)."""
    if not dataset:
        return env_images(tuple(envs) if envs else DEFAULT_ENVS, size=size, seed=seed)
    if dataset.startswith("hf:"):
        return hf_images(dataset[3:], size=size, seed=seed)
    return image_folder(dataset, size=size, seed=seed)


@torch.no_grad()
def pooled_features(encoder: Any, images: np.ndarray | Tensor, batch_size: int = 32) -> Tensor:
    """``(N, H, W, 3)`` uint8 images -> ``(N, D)`` float32 pooled backbone features (CLS / pooler / average
    pool; ``encoder.backbone_tokens(preprocess(x))[0]``) of a :class:`encoders.backbone.BackboneEncoder`."""
    x = torch.as_tensor(images)
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    encoder.eval()
    out = [encoder.backbone_tokens(encoder.preprocess(x[i: i + batch_size]))[0].float()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def knn_forgetting(encoders: dict[str, Any], data: LabelledImages, k: int = 5) -> dict[str, float]:
    """k-NN accuracy in ``[0, 1]`` of each encoder's pooled features on ``data`` (``{role: accuracy}``)."""
    ytr, yte = torch.from_numpy(data.train_labels), torch.from_numpy(data.test_labels)
    return {role: knn_accuracy(pooled_features(enc, data.train_images), ytr, pooled_features(enc, data.test_images),
                               yte, k)
            for role, enc in encoders.items()}

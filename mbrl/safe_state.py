"""Pickle-free storage of nested training state: tensors in safetensors files, everything else in JSON.

Neither format can carry code, so opening a checkpoint someone shared never runs anything (``torch.load`` of a
pickle runs whatever its ``__reduce__`` methods name). :func:`split` turns a nested structure (dicts, lists,
tuples, tensors, numpy arrays and JSON scalars, e.g. an optimiser ``state_dict``) into a JSON tree plus a flat
``{key: tensor}`` dict; :func:`join` rebuilds the structure exactly: tensors keep dtype, shape and values (they
come back on the CPU, with their strides: a fused optimiser needs its moments laid out like the parameters, e.g.
channels_last), tuples stay tuples, integer dict keys stay integers, Python ints and floats are exact
(JSON numbers written with ``repr``; NaN and infinities as ``NaN``/``Infinity``).

JSON markers: ``{"__tensor__": key}`` (a tensor of the safetensors file, plus ``"stride"`` when it is not
contiguous), ``{"__array__": key}`` (a numpy array stored as a tensor), ``{"__tuple__": [...]}``, and
``{"__items__": [[key, value], ...]}`` (a dict whose keys are not all strings, or use a reserved name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.files import atomic_write

_MARKERS = ("__tensor__", "__array__", "__tuple__", "__items__")


def split(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """The JSON tree of ``obj``; its tensors are added to ``tensors`` under ``prefix/<path>`` keys.

    Raises:
        TypeError: a value that is neither a tensor, a numpy array/scalar, a container nor a JSON scalar.
        ValueError: two tensors would get the same key.
    """
    if isinstance(obj, torch.Tensor):
        ref = {"__tensor__": _put(tensors, prefix, obj)}
        if not obj.is_contiguous():  # e.g. channels_last moments of a conv weight: keep the memory layout
            ref["stride"] = list(obj.stride())
        return ref
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError(f"{prefix}: numpy object arrays cannot be stored without pickle")
        return {"__array__": _put(tensors, prefix, torch.from_numpy(np.ascontiguousarray(obj)))}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [split(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [split(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: split(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[split(k, f"{prefix}/key{i}", tensors), split(v, f"{prefix}/{k}", tensors)]
                              for i, (k, v) in enumerate(obj.items())]}
    raise TypeError(f"{prefix}: cannot store a {type(obj).__name__} without pickle")


def _put(tensors: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> str:
    if key in tensors:
        raise ValueError(f"two tensors of the state map to the key {key!r}")
    tensors[key] = value
    return key


def join(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Rebuild what :func:`split` stored.

    Raises:
        KeyError: a tensor key missing from ``tensors``; ValueError/TypeError: a malformed tree.
    """
    if isinstance(tree, list):
        return [join(v, tensors) for v in tree]
    if isinstance(tree, dict):
        if "__tensor__" in tree and set(tree) <= {"__tensor__", "stride"}:
            t = tensors[tree["__tensor__"]]
            stride = tuple(int(x) for x in tree.get("stride", t.stride()))
            if stride != t.stride():
                t = torch.empty_strided(t.shape, stride, dtype=t.dtype).copy_(t)
            return t
        if len(tree) == 1:
            (key, value), = tree.items()
            if key == "__array__":
                return tensors[value].numpy()
            if key == "__tuple__":
                return tuple(join(v, tensors) for v in value)
            if key == "__items__":
                return {_hashable(join(k, tensors)): join(v, tensors) for k, v in value}
        if any(k in _MARKERS for k in tree):
            raise ValueError(f"malformed state entry {sorted(tree)}")
        return {k: join(v, tensors) for k, v in tree.items()}
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"unexpected {type(tree).__name__} in a stored state")


def _hashable(key: Any) -> Any:
    if isinstance(key, (list, dict)):
        raise TypeError("a stored dict key must be a scalar or a tuple")
    return key


def cpu_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` detached, on the CPU and contiguous, each with its own storage (safetensors refuses tensors
    that share memory, e.g. tied weights or views of one buffer); tensors already on the CPU are copied only
    when their storage is shared or they are not contiguous."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, t in tensors.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        ptr = t.untyped_storage().data_ptr()
        whole = t.is_contiguous() and t.storage_offset() == 0 and \
            t.numel() * t.element_size() == t.untyped_storage().nbytes()
        if (ptr in seen and t.numel()) or not whole:
            t = t.clone(memory_format=torch.contiguous_format)
        seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def write_tensors(path: Path | str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Atomically write ``tensors`` as a safetensors file (see :func:`cpu_tensors`); returns ``path``."""
    from safetensors.torch import save

    data = save(cpu_tensors(tensors), metadata=metadata)
    return atomic_write(path, lambda f: f.write(data))


def read_tensors(path: Path | str) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (read fully into memory, on the CPU; the file is closed).

    Raises:
        OSError: the file cannot be read; ValueError (``safetensors.SafetensorError``): it is not a valid
            safetensors file.
    """
    from safetensors.torch import load

    data = Path(path).read_bytes()
    try:
        return load(data)
    except Exception as exc:  # SafetensorError is not a ValueError subclass
        raise ValueError(f"not a valid safetensors file ({exc})") from None

"""Exact, pickle-free storage of a sweep unit's result: tensors and arrays into safetensors, the
structure around them (lists, tuples, dicts, our result dataclasses, numbers, strings) into JSON.

A results folder may come from anywhere (a shared drive, a colleague), so reading one never
unpickles: a dataclass is rebuilt only if it is one of this library's own (``hooked_avllm.*``),
field by field, and nothing else is called. What cannot be stored exactly (a function, a tokenizer,
an object array) raises a ``TypeError`` naming its type and where it sits, when the result is saved.

Example:
    >>> import torch
    >>> tensors, skeleton = encode({"scores": torch.arange(3.0), "names": ("a", "b"), "n": 2})
    >>> decode(tensors, skeleton)
    {'scores': tensor([0., 1., 2.]), 'names': ('a', 'b'), 'n': 2}
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["decode", "encode"]

_OWN = "hooked_avllm."


def encode(obj: Any) -> tuple[dict[str, Tensor], Any]:
    """``(tensors, skeleton)``: the tensors (CPU, contiguous) under generated names, and a JSON-able
    skeleton that :func:`decode` turns back into ``obj``."""
    tensors: dict[str, Tensor] = {}
    return tensors, _encode(obj, tensors, "result")


def decode(tensors: dict[str, Tensor], skeleton: Any) -> Any:
    """The object :func:`encode` took apart."""
    return _decode(skeleton, tensors)


def _encode(obj: Any, tensors: dict[str, Tensor], where: str) -> Any:
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"float": repr(obj)}  # nan/inf kept exactly, JSON stays standard
    if isinstance(obj, Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"tensor": key}
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError(f"{where} is a numpy array of Python objects, which cannot be stored exactly; return numbers")
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj)).clone()
        return {"ndarray": key}
    if isinstance(obj, np.generic):
        return {"numpy": obj.dtype.str, "value": _encode(obj.item(), tensors, where)}
    if isinstance(obj, list):
        return {"list": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return {"tuple": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, dict):
        return {"dict": [[_encode(k, tensors, f"{where} key"), _encode(v, tensors, f"{where}[{k!r}]")] for k, v in obj.items()]}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type) and type(obj).__module__.startswith(_OWN):
        cls = type(obj)
        names = list(vars(obj)) if hasattr(obj, "__dict__") else [f.name for f in dataclasses.fields(obj)]
        return {"dataclass": f"{cls.__module__}:{cls.__qualname__}",
                "fields": {n: _encode(getattr(obj, n), tensors, f"{where}.{n}") for n in names}}
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, which a results folder cannot store "
                    "exactly (it stores tensors, arrays, numbers, strings, lists, tuples, dicts and hooked_avllm's result "
                    "dataclasses); run this sweep without resume=")


def _decode(node: Any, tensors: dict[str, Tensor]) -> Any:
    if node is None or isinstance(node, (bool, int, str, float)):
        return node
    if not isinstance(node, dict) or len(node) == 0:
        raise ValueError(f"a results folder holds an unreadable entry {node!r}; delete the folder and run again")
    if "float" in node:
        return float(node["float"])
    if "tensor" in node:
        return tensors[node["tensor"]]
    if "ndarray" in node:
        return tensors[node["ndarray"]].numpy()
    if "numpy" in node:
        return np.dtype(node["numpy"]).type(_decode(node["value"], tensors))
    if "list" in node:
        return [_decode(v, tensors) for v in node["list"]]
    if "tuple" in node:
        return tuple(_decode(v, tensors) for v in node["tuple"])
    if "dict" in node:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in node["dict"]}
    if "dataclass" in node:
        cls = _own_dataclass(node["dataclass"])
        obj = object.__new__(cls)  # field by field, as saved: no __init__ or __post_init__ runs
        for name, value in node["fields"].items():
            object.__setattr__(obj, name, _decode(value, tensors))
        return obj
    raise ValueError(f"a results folder holds an unreadable entry {sorted(node)}; delete the folder and run again")


def _own_dataclass(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    if not module_name.startswith(_OWN):
        raise ValueError(f"a results folder names the class {path!r}, which is not one of hooked_avllm's; it is not loaded")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        raise ValueError(f"a results folder names {path!r}, which is not a result dataclass; it is not loaded")
    return obj

"""The one architecture registry: every folder under ``hooked_avllm/architectures/`` whose package
defines ``FAMILY`` (an :class:`~hooked_avllm.architectures.base.Architecture`) is a family, found
by its checkpoints' ``model_type``. Adding a family is adding a folder: nothing here lists them.

Example:
    >>> {"qwen2_5_omni", "qwen2_5_vl"} <= {a.name for a in supported()}
    True
    >>> architecture_for("qwen2_5_omni_thinker").name
    'qwen2_5_omni'
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from pathlib import Path

from hooked_avllm.architectures.base import Architecture

_PACKAGE = "hooked_avllm.architectures"
_FOLDER = Path(__file__).parent


@lru_cache(maxsize=1)
def families() -> tuple[Architecture, ...]:
    """Every registered family, by name (a folder's ``FAMILY``; folders without one, such as the
    shared Qwen pipeline ``qwen/``, are not families)."""
    found = []
    for info in pkgutil.iter_modules([str(_FOLDER)]):
        if info.ispkg:
            try:
                module = importlib.import_module(f"{_PACKAGE}.{info.name}")
            except Exception as error:  # a broken folder is named, not silently left out
                raise ImportError(f"the family folder hooked_avllm/architectures/{info.name} does not import: {error}") from error
            family = getattr(module, "FAMILY", None)
            if family is not None:
                if not isinstance(family, Architecture):
                    raise TypeError(f"{_PACKAGE}.{info.name}.FAMILY must be an Architecture, got {type(family).__name__}")
                found.append(family)
    names = [f.name for f in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RuntimeError(f"two family folders declare the name(s) {duplicates}")
    return tuple(sorted(found, key=lambda f: f.name))


@lru_cache(maxsize=1)
def by_model_type() -> dict[str, Architecture]:
    """``model_type`` in ``config.json`` (and ``AVLLMConfig.architecture``) -> family."""
    table: dict[str, Architecture] = {}
    for family in families():
        for model_type in family.model_types:
            if model_type in table:
                raise RuntimeError(f"model_type {model_type!r} is claimed by {table[model_type].name} and {family.name}")
            table[model_type] = family
    return table


def architecture_for(model_type: str) -> Architecture:
    """The family of a ``model_type`` (a ``config.json`` value or ``AVLLMConfig.architecture``)."""
    family = by_model_type().get(model_type)
    if family is None:
        raise ValueError(
            f"unknown architecture: model_type {model_type!r}. Supported: {sorted(by_model_type())} "
            "(hooked_avllm.architectures.supported() lists them with their hub ids)"
        )
    return family


def supported() -> list[Architecture]:
    """Every registered family (``.name``, ``.model_types``, ``.hub_ids``, ``.description``)."""
    return list(families())


__all__ = ["architecture_for", "by_model_type", "families", "supported"]

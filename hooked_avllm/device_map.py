"""Models split over several devices, through accelerate's device-map machinery.

:func:`plan_device_map` turns ``"auto"`` / ``"balanced"`` / ``"balanced_low_0"`` / ``"sequential"``
(with an optional ``max_memory``) into a placement with ``accelerate.infer_auto_device_map``,
keeping every decoder block and every tower whole (a tower's attention segments and rotary
angles live on one device); a dict is checked instead (every parameter placed, known devices).
:func:`dispatch` then attaches accelerate's hooks that move each module's inputs to its device,
so the residual stream hops from device to device between blocks, hooks see each layer's
activations on that layer's device, and the KV cache of each layer stays there.

Placement values follow accelerate: a GPU index or ``"cuda:1"``, ``"cpu"``, ``"disk"``. As in
accelerate, ``"cpu"`` entries of a map whose embedding sits on a GPU are *offloaded* (kept in CPU
memory, run on the GPU); with the embedding on the CPU they run on the CPU.

Example:
    >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())  # doctest: +SKIP
    >>> plan = plan_device_map(model, "auto", max_memory={0: "20GiB", 1: "20GiB"})  # doctest: +SKIP
    >>> model = dispatch(model, plan)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hooked_avllm.vocabulary import TOWER_SLOTS

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def _accelerate():
    try:
        import accelerate
    except ImportError as err:
        raise ImportError(
            "device_map needs accelerate: pip install 'hooked_avllm[multi-gpu]' (or pip install accelerate)"
        ) from err
    return accelerate


def no_split_classes(model: nn.Module) -> list[str]:
    """Module classes a placement must keep on one device: the decoder blocks and each tower."""
    names = {type(block).__name__ for block in model.blocks}
    names |= {type(getattr(model, slot)).__name__ for slot in TOWER_SLOTS if getattr(model, slot, None) is not None}
    return sorted(names)


def _owner(name: str, plan: dict[str, Any]) -> str | None:
    """The plan entry covering parameter ``name`` (the longest matching module prefix)."""
    best = None
    for key in plan:
        if key == "" or name == key or name.startswith(key + "."):
            if best is None or len(key) > len(best):
                best = key
    return best


def plan_device_map(
    model: nn.Module,
    device_map: str | dict[str, Any] = "auto",
    max_memory: dict[Any, int | str] | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """A placement ``{module name: device}`` for ``model`` (built on the meta device or anywhere).

    ``device_map``: a strategy name (:data:`STRATEGIES`) or a dict. ``max_memory``: per device
    limits (``{0: "70GiB", 1: "70GiB", "cpu": "200GiB"}``); without it accelerate reads the free
    memory of the visible GPUs. ``dtype``: the dtype the weights will have (for sizes).
    """
    if isinstance(device_map, dict):
        params = [name for name, _ in model.named_parameters()]
        unplaced = [name for name in params if _owner(name, device_map) is None]
        if unplaced:
            raise ValueError(
                f"device_map does not place {len(unplaced)} parameters (e.g. {unplaced[:3]}); give every top-level "
                f"module a device (modules: {[n for n, _ in model.named_children()]}) or use device_map='auto'"
            )
        for key, device in device_map.items():
            if not (isinstance(device, int) or device in ("cpu", "disk") or str(device).startswith(("cuda", "mps", "xpu"))):
                raise ValueError(f"device_map[{key!r}] = {device!r} is not a device: use a GPU index, 'cuda:N', 'cpu' or 'disk'")
        return dict(device_map)
    if device_map not in STRATEGIES:
        raise ValueError(f"device_map={device_map!r}: use one of {STRATEGIES} or a dict of module name -> device")
    acc = _accelerate()
    no_split = no_split_classes(model)
    if device_map != "sequential":
        max_memory = acc.utils.get_balanced_memory(
            model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype,
            low_zero=device_map == "balanced_low_0",
        )
    return acc.infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)


def main_device(plan: dict[str, Any]) -> Any:
    """Where the embedding sits: the device inputs are sent to and outputs come back on."""
    owner = _owner("embed.weight", plan)
    return plan[owner] if owner is not None else next(iter(plan.values()))


def materialize(model: nn.Module, plan: dict[str, Any], dtype: torch.dtype) -> None:
    """Give every (meta) parameter empty storage on its planned device (``"disk"`` -> CPU)."""
    acc = _accelerate()
    for name, param in list(model.named_parameters(remove_duplicate=False)):
        device = plan[_owner(name, plan)]
        device = "cpu" if device == "disk" else device
        acc.utils.set_module_tensor_to_device(model, name, device, value=torch.empty(param.shape, dtype=dtype, device=device))


def dispatch(model: nn.Module, plan: dict[str, Any], offload_dir: str | None = None) -> nn.Module:
    """Attach accelerate's device hooks for ``plan`` (see the module docstring); ``model.hf_device_map``
    records the plan and ``model.cfg.device`` is the embedding's device."""
    acc = _accelerate()
    model = acc.dispatch_model(model, device_map=plan, main_device=main_device(plan), offload_dir=offload_dir)
    model.hf_device_map = dict(plan)
    model.cfg._device = torch.device(_index_to_device(main_device(plan)))
    return model


def _index_to_device(device: Any) -> str:
    return f"cuda:{device}" if isinstance(device, int) else str(device)


def devices_of(model: nn.Module) -> dict[str, str]:
    """``{parameter name: device}`` as the parameters sit now (a check that a plan was applied)."""
    return {name: str(p.device) for name, p in model.named_parameters()}


__all__ = ["STRATEGIES", "devices_of", "dispatch", "main_device", "materialize", "no_split_classes", "plan_device_map"]

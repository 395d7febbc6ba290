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

Checked before any weight moves: every key of a hand-written map is a module (or parameter) of the
model (a typo gets the closest names), every device exists on this machine (a strategy may plan
for GPUs this machine lacks, e.g. on the meta device; :func:`materialize` and :func:`dispatch`
refuse such a plan), ``"disk"`` entries come with an empty ``offload_dir``. An offloaded block or
tower loads all its weights at the start of its forward (accelerate's ``preload_module_classes``):
its modules read child weights directly (the MoE router's ``gate.weight``, per-head attention
results' ``out.weight``), which accelerate's per-leaf loading would leave on the meta device.

Example:
    >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())  # doctest: +SKIP
    >>> plan = plan_device_map(model, "auto", max_memory={0: "20GiB", 1: "20GiB"})  # doctest: +SKIP
    >>> model = dispatch(model, plan)  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
from pathlib import Path
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


def available_devices() -> list[str]:
    """The placements this machine offers: ``cpu``, ``disk``, and each visible accelerator.

    Example:
        >>> available_devices()[:2]
        ['cpu', 'disk']
    """
    found = ["cpu", "disk"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        found += [f"xpu:{i}" for i in range(xpu.device_count())]
    return found


def check_device(device: Any, what: str = "device", allow_disk: bool = False) -> None:
    """Raise a ``ValueError`` naming ``what``, ``device`` and this machine's devices unless ``device``
    (a GPU index, ``"cuda:N"``, ``"mps"``, ``"cpu"``, a ``torch.device``; ``"disk"`` when
    ``allow_disk``) exists here (a ``TypeError`` for a value that is no kind of device).

    Example:
        >>> check_device("cpu")
        >>> check_device("cuda:99")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: device='cuda:99' is not on this machine, which has ['cpu'...
    """
    here = available_devices() if allow_disk else [d for d in available_devices() if d != "disk"]
    kinds = "a GPU index, 'cuda:N', 'cpu'" + (" or 'disk'" if allow_disk else "")
    if isinstance(device, bool) or not isinstance(device, (int, str, torch.device)):
        raise TypeError(f"{what}={device!r} is not a device (a {type(device).__name__}); use {kinds}")
    if allow_disk and device == "disk":
        return
    try:
        parsed = torch.device(f"cuda:{device}" if isinstance(device, int) and device >= 0 else device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{what}={device!r} is not a device; use {kinds} (this machine has {here})") from None
    if parsed.type == "meta":
        raise ValueError(f"{what}={device!r}: the meta device holds no values, so nothing would be loaded or computed; "
                         f"use one of {here}")
    if parsed.type == "cpu":
        return
    name = parsed.type if parsed.type == "mps" else f"{parsed.type}:{parsed.index or 0}"
    if name not in here:
        raise ValueError(f"{what}={device!r} is not on this machine, which has {here}; use one of these (or run where "
                         "that device exists)")


def preload_classes(model: nn.Module) -> list[str]:
    """Module classes whose instances load every weight below them at the start of their forward
    when offloaded: the blocks and towers (:func:`no_split_classes`) and any module with children
    of its own that hold weights (such modules may read a child's weight without calling the
    child: the MoE router, per-head attention results, relative position buckets)."""
    names = set(no_split_classes(model))
    for module in model.modules():
        if module is model or isinstance(module, (nn.ModuleList, nn.ModuleDict)):
            continue  # containers have no forward (their hook would never load anything)
        if any(True for child in module.children() for _ in child.parameters()):
            names.add(type(module).__name__)
    return sorted(names)


def _check_keys(model: nn.Module, device_map: dict[str, Any]) -> None:
    """Every key of a hand-written map names a module or parameter of ``model`` ("" the whole model)."""
    known = {name for name, _ in model.named_modules()} | {name for name, _ in model.named_parameters()}
    for key in device_map:
        if not isinstance(key, str):
            raise TypeError(f"device_map key {key!r} is not a module name (a string such as 'blocks.0')")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known - {""}), n=3, cutoff=0.6)
            hint = f"did you mean {close}?" if close else f"top-level modules: {[n for n, _ in model.named_children()]}"
            raise ValueError(f"device_map names {key!r}, which is not a module of this model; {hint}")


def check_plan(plan: dict[str, Any]) -> None:
    """Every device of ``plan`` exists on this machine (see :func:`check_device`)."""
    for key, device in plan.items():
        check_device(device, what=f"device_map[{key!r}]", allow_disk=True)


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
        _check_keys(model, device_map)
        params = [name for name, _ in model.named_parameters()]
        unplaced = [name for name in params if _owner(name, device_map) is None]
        if unplaced:
            raise ValueError(
                f"device_map does not place {len(unplaced)} parameters (e.g. {unplaced[:3]}); give every top-level "
                f"module a device (modules: {[n for n, _ in model.named_children()]}) or use device_map='auto'"
            )
        for key, device in device_map.items():
            if isinstance(device, bool) or not (isinstance(device, (int, torch.device)) or device in ("cpu", "disk")
                                                or str(device).startswith(("cuda", "mps", "xpu"))):
                raise ValueError(f"device_map[{key!r}] = {device!r} is not a device: use a GPU index, 'cuda:N', 'cpu' or 'disk'")
        check_plan(device_map)
        return dict(device_map)
    if not isinstance(device_map, str) or device_map not in STRATEGIES:
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
    check_plan(plan)
    acc = _accelerate()
    for name, param in list(model.named_parameters(remove_duplicate=False)):
        device = plan[_owner(name, plan)]
        device = "cpu" if device == "disk" else device
        acc.utils.set_module_tensor_to_device(model, name, device, value=torch.empty(param.shape, dtype=dtype, device=device))


def dispatch(model: nn.Module, plan: dict[str, Any], offload_dir: str | None = None) -> nn.Module:
    """Attach accelerate's device hooks for ``plan`` (see the module docstring); ``model.hf_device_map``
    records the plan and ``model.cfg.device`` is the embedding's device. ``offload_dir``: an empty
    (or new) folder for the ``"disk"`` entries' weights."""
    check_plan(plan)
    _check_offload_dir(plan, offload_dir)
    acc = _accelerate()
    model = acc.dispatch_model(model, device_map=plan, main_device=main_device(plan), offload_dir=offload_dir,
                               preload_module_classes=preload_classes(model))
    model.hf_device_map = dict(plan)
    model.cfg._device = torch.device(_index_to_device(main_device(plan)))
    return model


def _check_offload_dir(plan: dict[str, Any], offload_dir: str | None) -> None:
    """``"disk"`` entries need a folder, and one without an earlier offload: accelerate would read
    the weights it finds there (another model's, or this one's before an edit) instead of these."""
    on_disk = [key for key, device in plan.items() if device == "disk"]
    if not on_disk:
        return
    if main_device(plan) == "disk":
        raise ValueError(
            f"device_map puts the embedding on 'disk' ({on_disk}); the embedding's device is where the model runs: "
            "put 'embed' on 'cpu' or a GPU and offload blocks to 'disk'"
        )
    if offload_dir is None:
        raise ValueError(
            f"device_map puts {on_disk} on 'disk' but no offload_dir was given: pass offload_dir='some/empty/folder' "
            "(from_pretrained(..., offload_dir=...) or hooked_avllm.device_map.dispatch(model, plan, offload_dir=...))"
        )
    if (Path(offload_dir) / "index.json").exists():
        raise ValueError(
            f"offload_dir={str(offload_dir)!r} already holds offloaded weights (index.json) of an earlier dispatch; "
            "accelerate would read those instead of this model's: pass an empty folder (or delete that one)"
        )


def _index_to_device(device: Any) -> str:
    return f"cuda:{device}" if isinstance(device, int) else str(device)


def devices_of(model: nn.Module) -> dict[str, str]:
    """``{parameter name: device}`` as the parameters sit now (a check that a plan was applied)."""
    return {name: str(p.device) for name, p in model.named_parameters()}


__all__ = ["STRATEGIES", "available_devices", "check_device", "check_plan", "devices_of", "dispatch", "main_device",
           "materialize", "no_split_classes", "plan_device_map", "preload_classes"]

"""A family's converter as a table: checkpoint prefix -> the name map of the tower (or LLM) that
lives under it. Every name map takes a tensor name relative to its prefix and the config of its
part, and returns where the tensor goes (a list of :class:`~weights_conversion.targets.Target`;
``[]``: known and deliberately not loaded; ``None``: not a name of that part).

Example:
    >>> from weights_conversion.targets import Target
    >>> table = PrefixTable(parts=(Part("model.", lambda rest, text: [Target(f"llm.{rest}")], config="text"),),
    ...                     skipped=("talker.",))
    >>> from types import SimpleNamespace
    >>> cfg = SimpleNamespace(text=SimpleNamespace(tie_word_embeddings=False), vision=None, audio=None)
    >>> table.tensor_targets("model.norm.weight", cfg), table.tensor_targets("talker.x", cfg)
    ([Target(param='llm.norm.weight', rows=None, shape=None, index=None)], [])
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from weights_conversion.targets import Target

NameMap = Callable[[str, Any], "list[Target] | None"]


@dataclass(frozen=True)
class Part:
    """Tensors under ``prefix`` go through ``name_map(rest, part_config)``; ``config`` names the
    part of the model config the map reads (``"text"``, ``"vision"``, ``"audio"``, or ``None`` for
    the whole config). A part whose config is ``None`` (a model built without that tower) has no
    tensors: its names are unknown."""

    prefix: str
    name_map: NameMap
    config: str | None = None


def unembedding_targets(rest: str, text: Any) -> list[Target] | None:
    """The LM head: the unembedding, or skipped when the config ties it to the embedding."""
    if rest != "":
        return None
    return [] if text.tie_word_embeddings else [Target("unembed.weight")]


@dataclass(frozen=True)
class PrefixTable:
    """A family's checkpoint layout. ``parts`` are tried in order (put longer prefixes first);
    names starting with a ``skipped`` prefix (a talker, a TTS head) are dropped on purpose, as are
    names matching an ``ignored`` pattern (buffers such as ``rotary_emb.inv_freq``).
    ``implicit_zeros(cfg)`` lists parameter slices the checkpoint leaves out (a key projection
    without bias); ``extra_weight_files(config_json)`` names state dicts beside the shards (pickled
    ones are read with ``torch.load(weights_only=True)``; a tensor both there and in a shard is refused)."""

    parts: tuple[Part, ...]
    skipped: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    zeros: Callable[[Any], list[Target]] | None = None
    extra_files: Callable[[dict], list[str]] | None = None
    _ignored: tuple[re.Pattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ignored", tuple(re.compile(p) for p in self.ignored))

    def tensor_targets(self, name: str, cfg: Any) -> list[Target] | None:
        """Where checkpoint tensor ``name`` goes (``[]``: skipped on purpose, ``None``: unknown)."""
        if name.startswith(self.skipped) or any(p.fullmatch(name) for p in self._ignored):
            return []
        for part in self.parts:
            if name.startswith(part.prefix):
                sub = cfg if part.config is None else getattr(cfg, part.config)
                return None if sub is None else part.name_map(name[len(part.prefix):], sub)
        return None

    def implicit_zeros(self, cfg: Any) -> list[Target]:
        """Parameter slices the checkpoint has no tensor for, written as zeros."""
        return self.zeros(cfg) if self.zeros is not None else []

    def extra_weight_files(self, config_json: dict) -> list[str]:
        """State-dict files beside the shards that hold weights too (``.bin``/``.pt`` read with
        ``torch.load(weights_only=True)``, ``.safetensors`` as such)."""
        return self.extra_files(config_json) if self.extra_files is not None else []


__all__ = ["NameMap", "Part", "PrefixTable", "unembedding_targets"]

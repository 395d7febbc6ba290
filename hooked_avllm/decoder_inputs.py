"""The one place where token ids, prepared inputs or a Hugging Face processor's dict become what
the decoder takes: embeddings with every media row scattered in, position ids, the attention mask,
the kind of every position, the rows media add after decoder layers, and the layout they all come
from.

Every input goes through one path: its :class:`~hooked_avllm.inputs.TokenLayout` (the inputs' own,
or the one the family reads from bare ids and media tensors), then positions, kinds and media
positions from that layout. So ``model(ids)``, ``model.run_with_cache(ids)`` and
``model.generate(ids)`` see the same positions, computed by the same code.

Example:
    >>> import torch
    >>> from hooked_avllm import AVLLMConfig, HookedAVLLM
    >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
    >>> llm = decoder_inputs(model, torch.tensor([[1, 2, 3]]))
    >>> llm.embeds.shape, llm.position_ids.shape, llm.kinds.tolist()
    (torch.Size([1, 3, 64]), torch.Size([3, 1, 3]), [[0, 0, 0]])
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.layout import TokenLayout, carried_layout, rope_deltas
from hooked_avllm.inputs.model_inputs import ModelInputs
from hooked_avllm.vocabulary import MEDIA_KINDS


@dataclass
class Injection:
    """Rows added to the residual stream after decoder layer ``layer`` at the positions ``where``
    (Qwen3-Omni's DeepStack adds vision-layer features to the visual positions this way)."""

    layer: int
    where: Bool[Tensor, "batch pos"]
    rows: Float[Tensor, "n_true d_model"]

    def repeat(self, n: int) -> "Injection":
        """The same injection for a batch repeated ``n`` times along its rows."""
        return Injection(self.layer, self.where.repeat(n, 1), self.rows.repeat(n, 1))


@dataclass
class DecoderInputs:
    """What the decoder takes for one batch (see the module docstring); ``decoder_kwargs()`` are
    the keyword arguments of ``model.run_decoder``."""

    embeds: Float[Tensor, "batch pos d_model"]
    position_ids: Tensor  # [rows, batch, pos]: 1 row for 1D rotary, 3 for M-RoPE
    attention_mask: Int[Tensor, "batch pos"]
    kinds: Int[Tensor, "batch pos"]  # kind codes (hooked_avllm.vocabulary)
    n_prompt: int
    input_ids: Int[Tensor, "batch pos"]  # the loss's targets
    layout: TokenLayout
    injections: list[Injection] = field(default_factory=list)

    def decoder_kwargs(self) -> dict[str, Any]:
        kwargs = dict(embeds=self.embeds, position_ids=self.position_ids, attention_mask=self.attention_mask,
                      kinds=self.kinds, n_prompt=self.n_prompt, input_ids=self.input_ids)
        if self.injections:  # only families that inject (DeepStack) add the key
            kwargs["injections"] = self.injections
        return kwargs


@dataclass
class Arguments:
    """A forward's inputs after normalisation: ids ``[batch, pos]``, mask, the layout if the inputs
    carry one, explicit position ids if given, and the media under the family's names."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    layout: TokenLayout | None
    position_ids: Tensor | None
    media: dict[str, Any]


def arguments(model: Any, input_ids: Any = None, attention_mask: Tensor | None = None, *,
              position_ids: Tensor | None = None, layout: Any = None, **media: Any) -> Arguments:
    """Normalise a forward's inputs: prepared inputs, a dict (a Hugging Face processor's output)
    or token ids with the family's media tensors as keyword arguments. Reference argument names
    the family declares (``second_per_grid_ts``) are mapped to ours, ones it ignores are dropped,
    and any other name is refused with the list of accepted ones."""
    if isinstance(input_ids, ModelInputs):
        layout = input_ids.layout if layout is None else layout
        attention_mask = input_ids.attention_mask if attention_mask is None else attention_mask
        media = {**input_ids.media, **media}
        input_ids = input_ids.input_ids
    elif isinstance(input_ids, Mapping):
        given = dict(input_ids)
        layout = carried_layout(input_ids) if layout is None else layout
        input_ids = given.pop("input_ids", None)
        attention_mask = given.pop("attention_mask", None) if attention_mask is None else attention_mask
        position_ids = given.pop("position_ids", None) if position_ids is None else position_ids
        media = {**given, **media}
    spec = model.architecture.input_spec(model.cfg)
    named: dict[str, Any] = {}
    for name, value in media.items():
        name = spec.aliases.get(name, name)
        if name in spec.ignored:
            continue
        if name not in spec.media_names:
            raise TypeError(
                f"unexpected argument {name!r}; a {spec.family} model's forward takes input_ids, attention_mask, "
                f"position_ids, layout and the media {list(spec.media_names)}"
            )
        if value is not None:
            named[name] = value
    if input_ids is None:
        raise ValueError("input_ids are required (prompt token ids with media placeholders expanded), or prepared inputs")
    if not isinstance(input_ids, Tensor):
        raise TypeError(f"input_ids must be a tensor of token ids or prepared inputs (model.prepare); got {type(input_ids).__name__}")
    if input_ids.ndim == 1:
        input_ids = input_ids[None]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    layout = layout if isinstance(layout, TokenLayout) and tuple(layout.shape) == tuple(input_ids.shape) else None
    return Arguments(input_ids, attention_mask, layout, position_ids, named)


def layout_for(model: Any, args: Arguments) -> TokenLayout:
    """The inputs' own layout, or the one the family reads from the ids and media."""
    if args.layout is not None:
        return args.layout
    layout = model.architecture.layout_of(model, args.input_ids, args.attention_mask, args.media)
    return layout.to(args.input_ids.device) if layout.attention_mask.device != args.input_ids.device else layout


def decoder_inputs(model: Any, *inputs: Any, **kwargs: Any) -> DecoderInputs:
    """The decoder's inputs for ``inputs`` (what ``model.forward`` takes): the towers run here, once."""
    args = arguments(model, *inputs, **kwargs)
    layout = layout_for(model, args)
    embeds, injections = embed_media(model, args.input_ids, layout, args.media)
    position_ids = args.position_ids if args.position_ids is not None else layout.position_ids
    return DecoderInputs(
        embeds=embeds, position_ids=position_ids.to(args.input_ids.device), attention_mask=args.attention_mask,
        kinds=layout.kind_codes().to(args.input_ids.device), n_prompt=layout.n_prompt, input_ids=args.input_ids,
        layout=layout, injections=injections,
    )


def embed_media(model: Any, input_ids: Tensor, layout: TokenLayout, media: dict[str, Any]) -> tuple[Tensor, list[Injection]]:
    """Token embeddings with every media row at its layout position, and the decoder-layer
    injections the family's media give (``encode_media``'s ``"injections"``: ``(layer, kind, rows)``)."""
    embeds = model.embed(input_ids)
    feats = dict(model.architecture.encode_media(model, media))
    injected = feats.pop("injections", [])
    where = {kind: getattr(layout, kind).to(input_ids.device) for kind in MEDIA_KINDS}
    for kind in MEDIA_KINDS:
        n_slots = int(where[kind].sum())
        n_rows = feats[kind].shape[0] if kind in feats else 0
        if n_slots != n_rows:
            raise ValueError(
                f"the prompt has {n_slots} {kind} positions but the {kind} inputs give {n_rows} {kind} tokens; expand "
                f"the placeholders with the processor (or model.prepare) for these inputs"
            )
        if n_rows:
            embeds[where[kind]] = feats[kind].to(embeds.device, embeds.dtype)  # a tower may sit on another device
    injections = []
    for layer, kind, rows in injected:
        if int(where[kind].sum()) != rows.shape[0]:
            raise ValueError(f"an injection of {rows.shape[0]} rows at the {kind} positions does not match the layout")
        injections.append(Injection(layer, where[kind], rows))
    return embeds, injections


class InputMethods:
    """The model's methods over its inputs (mixed into :class:`~hooked_avllm.HookedAVLLM`)."""

    def llm_inputs(self, *inputs: Any, **kwargs: Any) -> dict[str, Any]:
        """What the LLM gets for these inputs: the keyword arguments of :meth:`run_decoder`
        (``embeds`` [batch, pos, d_model] with media scattered in, ``position_ids`` [rows, batch,
        pos], ``attention_mask``, ``kinds`` [batch, pos], ``n_prompt``, ``input_ids``, and
        ``injections`` where the family's media add rows after decoder layers). The towers run
        here, once; analyses re-run the decoder on these with edited embeddings or batches.

        Example:
            >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())  # doctest: +SKIP
            >>> model.run_decoder(**model.llm_inputs(torch.tensor([[1, 2, 3]])), return_type="logits").shape  # doctest: +SKIP
            torch.Size([1, 3, 256])
        """
        return decoder_inputs(self, *inputs, **kwargs).decoder_kwargs()

    def decoder_inputs(self, *inputs: Any, **kwargs: Any) -> DecoderInputs:
        """:func:`decoder_inputs` of these inputs (with their layout)."""
        return decoder_inputs(self, *inputs, **kwargs)

    def layout_for(self, *inputs: Any, **kwargs: Any) -> TokenLayout:
        """The layout of these inputs (the forward's arguments), without running any tower."""
        return layout_for(self, arguments(self, *inputs, **kwargs))

    def layout_of(self, input_ids: Int[Tensor, "batch pos"], attention_mask: Tensor | None = None, *,
                  strict: bool = True, **media: Any) -> TokenLayout | None:
        """The :class:`~hooked_avllm.inputs.TokenLayout` of bare ids + media tensors, as the family
        reads them. ``strict=False`` returns ``None`` with a warning when the ids do not parse.

        Example:
            >>> model.layout_of(**processor_outputs, use_audio_in_video=True).audio.sum()  # doctest: +SKIP
        """
        try:
            return layout_for(self, arguments(self, input_ids, attention_mask, **media))
        except InputError as error:
            if strict:
                raise
            warnings.warn(f"these inputs have no layout (modality selection is off): {error}", stacklevel=2)
            return None

    def to_inputs(self, input_ids: Any, attention_mask: Tensor | None = None, **media: Any) -> ModelInputs:
        """Prepared inputs (with their layout) from bare ids and media tensors, e.g. a Hugging Face
        processor's output: ``model.to_inputs(**processor_outputs)``.

        Example:
            >>> inputs = model.to_inputs(**processor(text=..., videos=..., return_tensors="pt"))  # doctest: +SKIP
        """
        args = arguments(self, input_ids, attention_mask, **media)
        layout = layout_for(self, args)
        return ModelInputs(args.input_ids, args.attention_mask, layout, args.media, self.architecture.input_spec(self.cfg))

    def compute_position_ids(self, input_ids: Int[Tensor, "batch pos"], attention_mask: Tensor | None = None,
                             *media_args: Any, **media: Any) -> tuple[Tensor, Int[Tensor, "batch 1"]]:
        """Position ids ``[rows, batch, pos]`` of a prompt by the family's rule (from its layout)
        and each row's rope delta (max position + 1 - real length)."""
        if media_args:  # the old positional order of the Qwen media
            names = ("image_grid_thw", "video_grid_thw", "video_second_per_grid", "feature_attention_mask",
                     "input_features", "use_audio_in_video")
            media.update({k: v for k, v in zip(names, media_args) if v is not None})
        layout = self.layout_for(input_ids, attention_mask, **{k: v for k, v in media.items() if v is not None})
        return layout.position_ids, rope_deltas(layout.position_ids, layout.attention_mask)

    def load_video(self, source: Any, **kwargs: Any) -> Any:
        """A video (path or frames) loaded with this model's own preprocessing (the family's frame
        sampling and sizing; ``with_audio=``, ``audio=`` to attach a sound track), for ``prepare``.

        Example:
            >>> frames = model.load_video("car.mp4", with_audio=False, audio=load_audio("dog.wav"))  # doctest: +SKIP
        """
        return self.architecture.load_video(self, source, **kwargs)

    def load_image(self, source: Any, **kwargs: Any) -> Any:
        """An image loaded with this model's own preprocessing, for ``prepare(images=...)``."""
        return self.architecture.load_image(self, source, **kwargs)

    def encode_media(self, **media: Any) -> dict[str, Float[Tensor, "token d_model"]]:
        """The towers and projectors on these media tensors: LLM-space rows per kind (``"audio"``,
        ``"video"``, ``"image"``), items in sequence order, one row per media position.

        Example:
            >>> rows = model.encode_media(**inputs.media)  # doctest: +SKIP
        """
        return self.architecture.encode_media(self, media)

    def embed_inputs(self, *inputs: Any, **kwargs: Any) -> Float[Tensor, "batch pos d_model"]:
        """Token embeddings with every media row scattered into its position (``hook_embed``'s input)."""
        return decoder_inputs(self, *inputs, **kwargs).embeds


__all__ = ["Arguments", "DecoderInputs", "InputMethods", "Injection", "arguments", "decoder_inputs", "embed_media", "layout_for"]

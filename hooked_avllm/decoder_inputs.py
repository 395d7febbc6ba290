"""The one place where token ids, prepared inputs or a Hugging Face processor's dict become what
the decoder takes: embeddings with every media row scattered in, position ids, the attention mask,
the kind of every position, the rows media add after decoder layers, and the layout they all come
from.

Every input goes through one path: its :class:`~hooked_avllm.inputs.TokenLayout` (the inputs' own,
or the one the family reads from bare ids and media tensors), then positions, kinds and media
positions from that layout. So ``model(ids)``, ``model.run_with_cache(ids)`` and
``model.generate(ids)`` see the same positions, computed by the same code.

This is also where the tensors are checked, once, for every family: token ids (integers, ``[batch,
pos]``, not empty, inside the vocabulary), the attention mask (the ids' shape, 0/1, a real token in
every row), media tensors (finite), and bare ids holding media placeholders with no media. Each
error names the argument and the value and says what to do.

Example:
    >>> import torch
    >>> from hooked_avllm import AVLLMConfig, HookedAVLLM
    >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
    >>> llm = decoder_inputs(model, torch.tensor([[1, 2, 3]]))
    >>> llm.embeds.shape, llm.position_ids.shape, llm.kinds.tolist()
    (torch.Size([1, 3, 64]), torch.Size([3, 1, 3]), [[0, 0, 0]])
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hooked_avllm.components.upload import upload
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

    def repeat(self, n: int) -> "DecoderInputs":
        """The batch repeated ``n`` times along its rows (row ``i * batch + b`` is row ``b``); the
        layout stays the one batch's."""
        return DecoderInputs(self.embeds.repeat(n, 1, 1), self.position_ids.repeat(1, n, 1), self.attention_mask.repeat(n, 1),
                             self.kinds.repeat(n, 1), self.n_prompt, self.input_ids.repeat(n, 1), self.layout,
                             [i.repeat(n) for i in self.injections])

    def head(self, n: int) -> "DecoderInputs":
        """The first ``n`` positions (a prefix to prefill; ``n_prompt`` stays the whole prompt's).
        An injection must lie within them."""
        for injection in self.injections:
            if bool(injection.where[:, n:].any()):
                raise ValueError(f"an injection after decoder layer {injection.layer} reaches past position {n - 1}; "
                                 "prefill a prefix that holds every injected position")
        return DecoderInputs(self.embeds[:, :n], self.position_ids[..., :n], self.attention_mask[:, :n], self.kinds[:, :n],
                             self.n_prompt, self.input_ids[:, :n], self.layout,
                             [Injection(i.layer, i.where[:, :n], i.rows) for i in self.injections])


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
    and any other name is refused with the list of accepted ones. The ids and the mask are
    checked (:func:`check_token_ids`, :func:`check_attention_mask`)."""
    given_mask = attention_mask is not None  # a mask of the user's own, beside prepared inputs' layout
    if isinstance(input_ids, ModelInputs):
        layout = input_ids.layout if layout is None else layout
        attention_mask = input_ids.attention_mask if attention_mask is None else attention_mask
        media = {**input_ids.media, **media}
        input_ids = input_ids.input_ids
    elif isinstance(input_ids, Mapping):
        given = dict(input_ids)
        given_mask = given_mask or given.get("attention_mask") is not None
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
            close = difflib.get_close_matches(name, [*spec.media_names, "input_ids", "attention_mask", "position_ids"], n=1)
            raise TypeError(
                f"unexpected argument {name!r}{f' (did you mean {close[0]!r}?)' if close else ''}; a {spec.family} model's "
                f"forward takes input_ids, attention_mask, position_ids, layout and the media {list(spec.media_names)}"
            )
        if value is not None:
            named[name] = value
    if input_ids is None:
        raise ValueError("input_ids are required (prompt token ids with media placeholders expanded), or prepared inputs")
    input_ids = check_token_ids(input_ids, model.embed.num_embeddings)
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else check_attention_mask(attention_mask, input_ids)
    layout = layout if isinstance(layout, TokenLayout) and tuple(layout.shape) == tuple(input_ids.shape) else None
    own = layout.attention_mask if layout is not None else None
    if own is not None and given_mask and not torch.equal(attention_mask.long(), own.long().to(attention_mask.device)):
        raise ValueError(
            "attention_mask differs from the prepared inputs' own mask (their layout's padding); prepared inputs carry "
            "their mask: drop attention_mask=, or prepare the inputs again"
        )
    return Arguments(input_ids, attention_mask, layout, position_ids, named)


def check_token_ids(input_ids: Any, n_vocab: int) -> Int[Tensor, "batch pos"]:
    """``input_ids`` as ``[batch, pos]`` integer ids inside the vocabulary ``[0, n_vocab)``, or an
    error naming what is wrong (text, float ids, a third axis, no token, ``-100`` labels, ids of
    another vocabulary).

    Example:
        >>> check_token_ids(torch.tensor([5, 6]), 256).tolist()
        [[5, 6]]
        >>> check_token_ids(torch.tensor([[5, -100]]), 256)
        Traceback (most recent call last):
        ...
        ValueError: input_ids hold -100 at [row 0, position 1]: -100 is the label id losses ignore, not a token; pad with the pad id and attention_mask 0 instead
    """
    if isinstance(input_ids, str) or (isinstance(input_ids, (list, tuple)) and any(isinstance(x, str) for x in input_ids)):
        raise TypeError(
            f"input_ids must be token ids, not text ({str(input_ids)[:40]!r}); tokenize plain text with model.to_tokens(...), "
            "or build a prompt (with media) with model.prepare(prompt, video=..., audio=...)"
        )
    if not isinstance(input_ids, Tensor):
        raise TypeError(f"input_ids must be a tensor of token ids or prepared inputs (model.prepare); got {type(input_ids).__name__}")
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must hold integer token ids; got dtype {input_ids.dtype}: convert them with input_ids.long()")
    if input_ids.ndim == 1:
        input_ids = input_ids[None]
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, pos] (or [pos]); got shape {tuple(input_ids.shape)}: one row of ids per prompt")
    if input_ids.numel() == 0:
        raise ValueError(f"input_ids are empty (shape {tuple(input_ids.shape)}); give at least one token in every row")
    outside = (input_ids < 0) | (input_ids >= n_vocab)
    if bool(outside.any()):
        row, pos = (int(i) for i in torch.nonzero(outside)[0])
        value = int(input_ids[row, pos])
        if value == -100:
            raise ValueError(
                f"input_ids hold -100 at [row {row}, position {pos}]: -100 is the label id losses ignore, not a token; "
                "pad with the pad id and attention_mask 0 instead"
            )
        raise ValueError(
            f"input_ids hold {value} at [row {row}, position {pos}]; token ids must lie in [0, {n_vocab}) (this model's "
            "vocabulary): were they made by another model's tokenizer?"
        )
    return input_ids


def check_attention_mask(attention_mask: Any, input_ids: Int[Tensor, "batch pos"]) -> Tensor:
    """``attention_mask`` checked against its ids: their shape (a ``[pos]`` mask of one row is
    taken as ``[1, pos]``), 1 for real tokens and 0 for padding, and a real token in every row.

    Example:
        >>> check_attention_mask(torch.tensor([[1, 2]]), torch.tensor([[5, 6]]))
        Traceback (most recent call last):
        ...
        ValueError: attention_mask must hold 1 (real token) and 0 (padding) only; got the values [2]
    """
    if not isinstance(attention_mask, Tensor):
        raise TypeError(f"attention_mask must be a tensor [batch, pos] of 0/1; got {type(attention_mask).__name__}")
    if attention_mask.ndim == 1 and input_ids.shape[0] == 1:
        attention_mask = attention_mask[None]
    if tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids are {tuple(input_ids.shape)}; give "
            "one 0/1 per token id ([batch, pos], 0 at padding)"
        )
    binary = (attention_mask == 0) | (attention_mask == 1)
    if not bool(binary.all()):
        values = sorted({float(v) if attention_mask.is_floating_point() else int(v) for v in attention_mask[~binary].tolist()})
        raise ValueError(f"attention_mask must hold 1 (real token) and 0 (padding) only; got the values {values[:5]}")
    empty = ~attention_mask.bool().any(-1)
    if bool(empty.any()):
        raise ValueError(
            f"row {int(torch.nonzero(empty)[0])} of attention_mask is all padding (0); every row needs at least one real "
            "token (drop the empty row)"
        )
    return attention_mask


def check_media_finite(media: dict[str, Any]) -> None:
    """Raise when a float media tensor holds NaN or infinity (the towers would pass them on to NaN
    logits without a word), naming the tensor and how many values are not finite.

    Example:
        >>> check_media_finite({"input_features": torch.tensor([[0.0, float("nan")]])})
        Traceback (most recent call last):
        ...
        hooked_avllm.inputs.errors.InputError: input_features holds 1 NaN and 0 infinite value(s) (of 2); the towers would give NaN logits: check the media it was computed from (a corrupt or empty file?) before running
    """
    for name, value in media.items():
        if not isinstance(value, Tensor) or not value.is_floating_point():
            continue
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(value).sum())
            raise InputError(
                f"{name} holds {n_nan} NaN and {int((~finite).sum()) - n_nan} infinite value(s) (of {value.numel()}); "
                "the towers would give NaN logits: check the media it was computed from (a corrupt or empty file?) "
                "before running"
            )


def check_placeholders_have_media(model: Any, args: Arguments) -> None:
    """Bare ids whose real positions hold media placeholders, given with no media tensor at all:
    raise rather than embed the placeholders as words (or fail in a family's parser)."""
    if any(isinstance(v, Tensor) for v in args.media.values()):
        return  # the family's parser checks the ids against the media given
    tokens = model.cfg.tokens
    kinds: dict[int, list[str]] = {}
    for kind in ("image", "video", "audio"):
        token = getattr(tokens, kind, None)
        if token is not None:
            kinds.setdefault(int(token), []).append(kind)
    if not kinds:
        return
    real = args.attention_mask.bool().to(args.input_ids.device)
    found = []
    for token, names in kinds.items():
        count = int(((args.input_ids == token) & real).sum())
        if count:
            found.append(f"{count} {'/'.join(names)} placeholder(s) (id {token})")
    if found:
        raise InputError(
            f"input_ids hold {', '.join(found)} but no media were given; pass the media tensors with the ids (a "
            "processor's output: model(**processor_outputs)) or build the inputs with model.prepare(prompt, video=..., "
            "audio=..., images=...)"
        )


SMALL = 4096  # elements: a media tensor this small is metadata (grids, lengths, masks); larger ones are data


def on_host(args: Arguments) -> Arguments:
    """``args`` with the ids, the mask and the small media tensors (grids, seconds per grid,
    feature masks) copied to the host, the data (pixels, features) left where it is: what a
    family's layout reads. Unchanged when the inputs carry their layout (nothing to read).

    Example:
        >>> args = Arguments(torch.tensor([[1, 2]]), torch.ones(1, 2), None, None, {"pixel_values": torch.zeros(2, 3)})
        >>> on_host(args).input_ids.device.type
        'cpu'
    """
    if args.layout is not None:
        return args
    def metadata(value: Any) -> bool:
        return isinstance(value, Tensor) and value.numel() <= (64 * SMALL if not value.is_floating_point() else SMALL)

    media = {name: value.cpu() if metadata(value) else value for name, value in args.media.items()}
    return replace(args, input_ids=args.input_ids.cpu(), attention_mask=args.attention_mask.cpu(), media=media)


def layout_for(model: Any, args: Arguments) -> TokenLayout:
    """The inputs' own layout, or the one the family reads from the ids and media."""
    if args.layout is not None:
        return args.layout
    check_placeholders_have_media(model, args)
    layout = model.architecture.layout_of(model, args.input_ids, args.attention_mask, args.media)
    return layout.to(args.input_ids.device) if layout.attention_mask.device != args.input_ids.device else layout


def decoder_inputs(model: Any, *inputs: Any, **kwargs: Any) -> DecoderInputs:
    """The decoder's inputs for ``inputs`` (what ``model.forward`` takes): the towers run here, once."""
    args = arguments(model, *inputs, **kwargs)
    check_media_finite(args.media)
    # The towers first, the layout second: on a GPU the towers' kernels are queued and run while the
    # host reads the layout from the ids (Python work of milliseconds). Where a tower fails, the
    # layout is read first, so that a mismatch between ids and media is named in its own words.
    host = on_host(args)  # what the layout reads, on the host before any tower: reading it then waits for no GPU work
    try:
        feats = dict(model.architecture.encode_media(model, args.media))
    except Exception:
        layout_for(model, host)
        raise
    host_layout = layout_for(model, host)
    layout = host_layout
    if layout.attention_mask.device != args.input_ids.device:
        layout = layout.to(args.input_ids.device)
    embeds, injections = place_media(model.embed(args.input_ids), feats, layout, host_layout)
    position_ids = args.position_ids if args.position_ids is not None else layout.position_ids
    return DecoderInputs(
        embeds=embeds, position_ids=position_ids.to(args.input_ids.device), attention_mask=args.attention_mask,
        kinds=layout.kind_codes().to(args.input_ids.device), n_prompt=layout.n_prompt, input_ids=args.input_ids,
        layout=layout, injections=injections,
    )


def embed_media(model: Any, input_ids: Tensor, layout: TokenLayout, media: dict[str, Any]) -> tuple[Tensor, list[Injection]]:
    """Token embeddings with every media row at its layout position, and the decoder-layer
    injections the family's media give (``encode_media``'s ``"injections"``: ``(layer, kind, rows)``)."""
    return place_media(model.embed(input_ids), dict(model.architecture.encode_media(model, media)), layout)


def place_media(embeds: Float[Tensor, "batch pos d_model"], feats: dict[str, Any], layout: TokenLayout,
                host_layout: TokenLayout | None = None) -> tuple[Tensor, list[Injection]]:
    """``embeds`` with the towers' rows ``feats`` (``encode_media``'s output) at their layout
    positions, and the decoder-layer injections they give (``"injections"``: ``(layer, kind, rows)``).

    The counts and positions are read from ``host_layout`` (the same layout on the host, where the
    caller has it) and the rows copied with an index, so that on a GPU the host queues the decoder
    behind the towers instead of waiting for them; without it, ``layout`` is read (one wait)."""
    feats = dict(feats)
    injected = feats.pop("injections", [])
    on_host = host_layout if host_layout is not None else layout
    host = {kind: getattr(on_host, kind).cpu() for kind in MEDIA_KINDS}
    counts = {kind: int(host[kind].sum()) for kind in MEDIA_KINDS}
    flat = embeds.flatten(0, 1)  # [batch * pos, d_model], a view: copies into it land in embeds
    for kind in MEDIA_KINDS:
        n_slots = counts[kind]
        n_rows = feats[kind].shape[0] if kind in feats else 0
        if n_slots and not n_rows:
            raise InputError(
                f"the prompt has {n_slots} {kind} positions but no {kind} inputs were given; pass the {kind} with the ids, "
                f"or build the inputs with model.prepare(prompt, {kind if kind != 'image' else 'images'}=...)"
            )
        if n_slots != n_rows:
            raise ValueError(
                f"the prompt has {n_slots} {kind} positions but the {kind} inputs give {n_rows} {kind} tokens; expand "
                f"the placeholders with the processor (or model.prepare) for these inputs"
            )
        if n_rows:  # a tower may sit on another device
            positions = upload(host[kind].flatten().nonzero()[:, 0], embeds.device)
            flat.index_copy_(0, positions, feats[kind].to(embeds.device, embeds.dtype))
    injections = []
    for layer, kind, rows in injected:
        if counts[kind] != rows.shape[0]:
            raise ValueError(f"an injection of {rows.shape[0]} rows at the {kind} positions does not match the layout")
        injections.append(Injection(layer, getattr(layout, kind).to(embeds.device), rows))
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


__all__ = ["Arguments", "DecoderInputs", "InputMethods", "Injection", "arguments", "check_attention_mask", "check_media_finite",
           "check_placeholders_have_media", "check_token_ids", "decoder_inputs", "embed_media", "layout_for"]

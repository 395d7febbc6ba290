"""What one model family declares, as one object the generic :class:`~hooked_avllm.HookedAVLLM` asks.

A family is a folder under ``hooked_avllm/architectures/`` whose ``__init__`` exposes ``FAMILY``, an
instance of a subclass of :class:`Architecture` that fills in:

- identity: ``name``, the ``model_types`` of its ``config.json``, known ``hub_ids``, a ``description``;
- weights: ``converter``, its :mod:`weights_conversion` module (a prefix table of name maps);
- config: ``config_from_hf`` (the checkpoint's ``config.json``) and ``config_from_dict``, in the
  folder's ``config.py``;
- composition: ``build_towers`` (encoders and projectors by slot, from shared towers); the decoder
  blocks and rotary come from the text config (:mod:`hooked_avllm.components.block_factory`), and
  ``injection_layers`` names the layers after which media add rows to the stream;
- inputs: ``input_spec`` (its :class:`~hooked_avllm.inputs.spec.InputSpec`: media names, position
  rule, batching), ``encode_media`` (media tensors -> LLM-space rows per kind), ``layout_of`` (the
  layout of bare token ids with media tensors), ``prepare`` (prompt + media files -> inputs),
  ``preprocessor`` and ``load_tokenizer``;
- frame heatmaps: ``video_frames_per_group`` and ``video_frame_grid`` (scores of video tokens
  on the frames they came from).

The model never names a family; generic code asks this object.

Example:
    >>> from hooked_avllm.architectures import architecture_for
    >>> architecture_for("qwen2_5_vl").name
    'qwen2_5_vl'
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from hooked_avllm.components.block_factory import decoder_block, decoder_rotary
from hooked_avllm.components.rotary import Rotary
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.frame_grid import FrameGrid, layout_frame_grid
from hooked_avllm.inputs.layout import TokenLayout, carried_layout
from hooked_avllm.inputs.segments import Segment
from hooked_avllm.inputs.spec import InputSpec
from hooked_avllm.inputs.tokenizer import load_tokenizer
from hooked_avllm.vocabulary import MEDIA_KINDS, TOWER_SLOTS

if TYPE_CHECKING:  # annotations only
    from hooked_avllm.inputs.model_inputs import ModelInputs

__all__ = ["MEDIA_KINDS", "TOWER_SLOTS", "Architecture"]


class Architecture:
    """One model family: its config, composition, inputs and weights (see the module docstring)."""

    name: str = ""
    model_types: tuple[str, ...] = ()
    hub_ids: tuple[str, ...] = ()
    description: str = ""
    converter: ModuleType | None = None  # weights_conversion.<family>

    # ------------------------------------------------------------------ config
    def config_from_hf(self, config_json: dict) -> AVLLMConfig:
        """Parse the checkpoint's ``config.json`` (the family's ``config.py``)."""
        raise NotImplementedError(f"{self.name}: config_from_hf is not defined for this family")

    def config_from_checkpoint(self, config_json: dict, folder: Path) -> AVLLMConfig:
        """The config of checkpoint ``folder`` whose ``config.json`` is ``config_json``: that file
        alone by default; a family whose layout ids live in the tokenizer's files reads those too."""
        return self.config_from_hf(config_json)

    def config_from_dict(self, d: dict) -> AVLLMConfig:
        """The inverse of ``AVLLMConfig.to_dict`` for this family."""
        return AVLLMConfig.from_dict(d)

    # ------------------------------------------------------------------ composition
    def build_towers(self, cfg: AVLLMConfig) -> dict[str, nn.Module]:
        """Encoders and projectors by slot (``vision``, ``vision_proj``, ``audio``, ``audio_proj``);
        a slot left out stays ``None`` on the model."""
        return {}

    def injection_layers(self, cfg: AVLLMConfig) -> tuple[int, ...]:
        """Decoder layers after which the family's media add rows to the residual stream
        (``encode_media``'s ``"injections"``); those layers get ``hook_injection``. None by default."""
        return ()

    def build_block(self, cfg: AVLLMConfig, layer: int) -> nn.Module:
        """Decoder layer ``layer``, chosen by the text config (:func:`decoder_block`)."""
        return decoder_block(cfg.text, layer, receives_injection=layer in self.injection_layers(cfg))

    def rotary(self, cfg: AVLLMConfig, position_ids: Int[Tensor, "rows batch pos"]) -> Rotary:
        """The decoder's rotary angles, chosen by the text config (:func:`decoder_rotary`)."""
        return decoder_rotary(cfg.text, position_ids)

    # ------------------------------------------------------------------ inputs
    def input_spec(self, cfg: AVLLMConfig) -> InputSpec:
        """The family's input contract (media names, position rule, batching, padding id)."""
        pad = cfg.tokens.pad if cfg.tokens.pad is not None else 0
        return InputSpec(family=self.name, pad_token_id=pad, max_positions=cfg.text.max_position_embeddings)

    def encode_media(self, model: Any, media: dict[str, Any]) -> dict[str, Float[Tensor, "token d_model"]]:
        """Run the towers on the media tensors: LLM-space rows per media kind, items in sequence
        order (row-major over the batch), one row per media position of that kind; optionally
        ``"injections"``: ``(layer, kind, rows)`` added after decoder ``layer`` at that kind's positions."""
        present = sorted(k for k, v in media.items() if isinstance(v, Tensor))
        if present:
            raise ValueError(f"the {self.name} family takes no media inputs, but {present} were given")
        return {}

    def layout_of(self, model: Any, input_ids: Tensor, attention_mask: Tensor | None, media: dict[str, Any]) -> TokenLayout:
        """The layout of bare token ids (and media tensors). By default text only: ids holding
        media placeholders, or media tensors, are refused (such inputs carry their layout: build
        them with ``model.prepare``)."""
        tokens = model.cfg.tokens
        given = sorted(k for k, v in media.items() if isinstance(v, Tensor))
        placeholders = sorted({t for t in (tokens.image, tokens.video, tokens.audio) if t is not None})
        holds = bool(torch.isin(input_ids, torch.tensor(placeholders, device=input_ids.device)).any()) if placeholders else False
        if given or holds:
            raise InputError(
                f"{self.name} inputs with media carry their layout: build them with model.prepare(...) "
                f"(these ids hold media placeholders or come with {given})"
            )
        return text_layout(input_ids, attention_mask, self.input_spec(model.cfg))

    # ------------------------------------------------------------------ frame heatmaps
    def video_frames_per_group(self, cfg: AVLLMConfig) -> int:
        """How many consecutive input frames one frame group of video tokens covers (1 by default)."""
        return 1

    def video_frame_grid(self, model: Any, inputs: Any, scores: Tensor, batch: int = 0, video: int = 0) -> FrameGrid:
        """Per-position (or per-video-token) ``scores`` of video ``video`` in row ``batch`` on that
        video's frames. By default each token's score at the cell the layout records for it; a
        family whose video tokens are not patches routes the scores onto the patches itself."""
        layout = carried_layout(inputs)
        if layout is None:
            raise InputError("a frame grid needs inputs with their layout (model.prepare / model.to_inputs)")
        return layout_frame_grid(layout, scores, batch, video, frames_per_group=self.video_frames_per_group(model.cfg))

    def preprocessor(self, model: Any) -> Any:
        """The family's media preprocessing settings (``None`` for families whose ``prepare`` takes none)."""
        return None

    def load_video(self, model: Any, source: Any, **kwargs: Any) -> Any:
        """A video loaded (frames sampled and sized, sound track attached) with the family's
        preprocessing, ready for ``model.prepare(video=...)``; families whose ``prepare`` loads
        video files itself need none."""
        raise NotImplementedError(f"{self.name}: pass the video (a path or frames) to model.prepare(video=...)")

    def load_image(self, model: Any, source: Any, **kwargs: Any) -> Any:
        """An image loaded with the family's preprocessing, ready for ``model.prepare(images=...)``."""
        raise NotImplementedError(f"{self.name}: pass the image (a path, a PIL image or an array) to model.prepare(images=...)")

    def load_tokenizer(self, folder: Path) -> Any:
        """The checkpoint's tokenizer (remote code is never run), or ``None`` if the folder has none."""
        return load_tokenizer(folder)

    def prepare(self, model: Any, prompt: Any, video: Any = None, audio: Any = None, images: Any = None, **kwargs: Any) -> "ModelInputs":
        """A prompt and media files/arrays -> prepared inputs with their layout."""
        raise NotImplementedError(f"{self.name}: prepare is not available for this family")

    def __repr__(self) -> str:
        return f"<architecture {self.name}: model_type {', '.join(self.model_types)}>"


def text_layout(input_ids: Int[Tensor, "batch pos"], attention_mask: Tensor | None, spec: InputSpec) -> TokenLayout:
    """The layout of text-only ids (padding on one side), with the family's position rule.

    Example:
        >>> import torch
        >>> text_layout(torch.tensor([[0, 5, 6]]), torch.tensor([[0, 1, 1]]), InputSpec()).padding.tolist()
        [[True, False, False]]
    """
    ids = input_ids.cpu()
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.cpu()
    rows = [[Segment.text(row[m.bool()].tolist())] for row, m in zip(ids, mask)]
    left = bool(mask[:, -1].all())
    layout = TokenLayout.from_segments(rows, pad_id=spec.pad_token_id, padding_side="left" if left else "right", width=ids.shape[1],
                                       positions=lambda built: spec.layout_positions(built, {}))
    if not torch.equal(layout.attention_mask, mask.long()):
        raise InputError("the padding of these ids is neither left nor right; pad each row on one side")
    layout.input_ids = ids.long()  # as given, padding ids included
    return layout

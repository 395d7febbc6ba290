"""HookedAVLLM: the generic audio-visual LLM. Encoders by modality -> projectors -> media rows
scattered into the token embeddings by the layout -> a hooked decoder; what varies between model
families (towers, block, position rule, prompt builder) comes from the family object
(:mod:`hooked_avllm.architectures`), so nothing here names a family.

The LLM's hook names are TransformerLens's (``blocks.{l}.hook_resid_post``, ``ln_final``...), so
``cache["resid_post", 3]`` and ``transformer_lens.utils.get_act_name`` work unchanged. Encoders
live under ``vision.*`` and ``audio.*``, projectors under ``vision_proj.*`` and ``audio_proj.*``.
"""

from __future__ import annotations

import dataclasses
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

try:  # transformer-lens >= 3.9 exports it at the top (4.x only there); 3.0-3.8 from hook_points
    from transformer_lens import HookedRootModule
except ImportError:  # pragma: no cover - exercised under transformer-lens 3.0-3.8
    from transformer_lens.hook_points import HookedRootModule
from transformer_lens.hook_points import HookPoint

from hooked_avllm.architectures import MEDIA_KINDS, TOWER_SLOTS, Architecture, architecture_for
from hooked_avllm.cache import AVActivationCache
from hooked_avllm.components.attention import LayerKVCache
from hooked_avllm.components.hook_state import watched
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.layout import carried_layout
from hooked_avllm.loss import check_return_type, text_target_loss
from hooked_avllm.position_kinds import (
    GENERATED,
    PADDING,
    TEXT,
    ForwardContext,
    position_kinds,
)
from hooked_avllm.saes import SAEHost
from hooked_avllm.tokens import TokenMethods
from hooked_avllm.components import Attention, RMSNorm
from hooked_avllm.weight_views import WeightViews

MEDIA_ARGUMENTS = ("input_features", "feature_attention_mask", "pixel_values", "image_grid_thw",
                   "pixel_values_videos", "video_grid_thw", "video_second_per_grid", "use_audio_in_video")


def _batch_size(args: tuple, kwargs: dict) -> int | None:
    """Rows of the inputs of a forward call (token ids, prepared inputs or a dict of them), if known."""
    first = args[0] if args else kwargs.get("input_ids")
    ids = first if isinstance(first, Tensor) else getattr(first, "input_ids", None)
    if ids is None and isinstance(first, dict):
        ids = first.get("input_ids")
    if not isinstance(ids, Tensor):
        return None
    return ids.shape[0] if ids.ndim == 2 else 1


@dataclasses.dataclass
class Injection:
    """Rows added to the residual stream after decoder layer ``layer`` at the positions ``where``
    (Qwen3-Omni's DeepStack adds vision-layer features to the visual positions this way)."""

    layer: int
    where: Tensor  # [batch, pos] bool
    rows: Tensor  # [n_true, d_model]

    def repeat(self, n: int) -> "Injection":
        """The same injection for a batch repeated ``n`` times along its rows."""
        return Injection(self.layer, self.where.repeat(n, 1), self.rows.repeat(n, 1))


class HookedAVLLM(WeightViews, TokenMethods, SAEHost, HookedRootModule):
    """A hooked audio-visual LLM of any registered family (``hooked_avllm.architectures.supported()``).

    ``forward`` takes prepared inputs (``model.prepare``) or the family's tensor keyword arguments
    (for the Qwen families, a Hugging Face processor's output: ``model(**inputs)``). The LLM also shows
    TransformerLens's surface: its config fields (``cfg.n_layers``, ``cfg.normalization_type``...),
    weight views (``W_Q``, ``W_U``... in :mod:`hooked_avllm.weight_views`) and token helpers
    (:mod:`hooked_avllm.tokens`), so TransformerLens's cache methods and patching run on it.

    Example:
        >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
        >>> ids = torch.tensor([[1, 2, 3]])
        >>> logits, cache = model.run_with_cache(ids)
        >>> logits.shape, cache["resid_post", 1].shape
        (torch.Size([1, 3, 256]), torch.Size([1, 3, 64]))
    """

    def __init__(self, cfg: AVLLMConfig):
        super().__init__()
        self.cfg = dataclasses.replace(cfg)  # a copy per model: it records the model's device
        self.architecture: Architecture = architecture_for(cfg.architecture)
        t = cfg.text
        towers = self.architecture.build_towers(cfg)
        unknown = set(towers) - set(TOWER_SLOTS)
        if unknown:
            raise ValueError(f"{self.architecture.name}.build_towers returned unknown slots {sorted(unknown)}; use {TOWER_SLOTS}")
        for slot in TOWER_SLOTS:  # attributes, not a ModuleDict, so hook names stay vision.* / audio.*
            setattr(self, slot, towers.get(slot))
        self.embed = nn.Embedding(t.vocab_size, t.d_model)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]: token embeddings with media scattered in
        self.blocks = nn.ModuleList(self.architecture.build_block(cfg, layer) for layer in range(t.n_layers))
        self.ln_final = RMSNorm(t.d_model, t.rms_norm_eps)
        self.unembed = nn.Linear(t.d_model, t.vocab_size, bias=False)
        self.tie_weights()
        self.tokenizer = None
        self._forward_context: ForwardContext | None = None  # set while the LLM blocks run
        self._attention_edits: list = []  # knockout rules, token dropping (see edit_attention)
        self._edit_memo: tuple | None = None  # (context, edges ids, mask): layers with the same edits share it
        self._last_layout = None
        self.setup()

    @property
    def encoders(self) -> dict[str, tuple[nn.Module, nn.Module | None]]:
        """The towers by modality (``"vision"``, ``"audio"``), each with its projector into the LLM.

        Example:
            >>> sorted(HookedAVLLM.from_config(AVLLMConfig.tiny()).encoders)
            ['audio', 'vision']
        """
        return {name: (getattr(self, name), getattr(self, f"{name}_proj"))
                for name in ("vision", "audio") if getattr(self, name) is not None}

    @property
    def forward_context(self) -> ForwardContext | None:
        """What the positions of the running LLM forward are (kinds of every key position, the
        query offset, the decoding step); ``None`` outside the decoder. Hooks and attention edits
        read it.

        Example:
            >>> seen = []
            >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
            >>> hook = lambda x, hook: seen.append(model.forward_context.n_new)
            >>> _ = model.run_with_hooks(torch.tensor([[1, 2, 3]]), fwd_hooks=[("blocks.0.hook_resid_pre", hook)])
            >>> seen
            [3]
        """
        return self._forward_context

    # ------------------------------------------------------------------ construction

    def _apply(self, fn, *args, **kwargs):
        """Keep ``cfg.device`` and ``cfg.dtype`` (read by TransformerLens tools) where the weights are."""
        out = super()._apply(fn, *args, **kwargs)
        self.cfg._device = self.embed.weight.device
        self.cfg._dtype = self.embed.weight.dtype
        return out

    def tie_weights(self) -> None:
        """Share the unembedding with the embedding when the config ties them (moving a model
        between devices can untie parameters, so constructors call this again)."""
        if self.cfg.text.tie_word_embeddings:
            self.unembed.weight = self.embed.weight

    @classmethod
    def from_config(
        cls, cfg: AVLLMConfig | dict, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", seed: int | None = 0
    ) -> "HookedAVLLM":
        """A model with random weights (normal, std 0.02; norms at 1), for tests and benchmarks; in
        eval mode, as every constructor returns it.

        Example:
            >>> HookedAVLLM.from_config(AVLLMConfig.tiny(audio=False)).audio is None
            True
        """
        if isinstance(cfg, dict):
            cfg = architecture_for(cfg["architecture"]).config_from_dict(cfg)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.device("meta"):
            model = cls(cfg)
        model.to_empty(device=device)
        model.tie_weights()
        for name, param in model.named_parameters():
            with torch.no_grad():
                if name.endswith((".w", ".b")) and param.ndim == 1:
                    param.fill_(1.0 if name.endswith(".w") else 0.0)
                elif name.endswith("bias"):
                    param.zero_()
                else:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
        return model.to(dtype).eval()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        load_tokenizer: bool = True,
        device_map: str | dict[str, Any] | None = None,
        max_memory: dict[Any, int | str] | None = None,
        offload_dir: str | None = None,
    ) -> "HookedAVLLM":
        """Load a Hugging Face checkpoint (local folder or hub id) through our own converter.

        The family comes from ``config.json``'s ``model_type`` (``hooked_avllm.architectures.supported()``
        lists them; parts of a checkpoint that are not the thinker, such as Qwen2.5-Omni's talker,
        are skipped by name). Tensors are streamed one by one from the safetensors shards into the
        parameters; a state dict the family keeps beside them (VideoLLaMA2's ``audio_tower.bin``) is
        read with ``torch.load(weights_only=True)``. The model comes back in eval mode (as Hugging Face's
        ``from_pretrained`` does), which TransformerLens's patching requires.

        ``device_map`` (``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"`` or a dict
        of module name -> device, with ``max_memory`` per device) splits the model over several
        devices through accelerate (see :mod:`hooked_avllm.device_map`): each tensor is written
        straight to its device, blocks and towers stay whole, and accelerate's hooks move the
        activations; ``device`` is then ignored.

        Example:
            >>> model = HookedAVLLM.from_pretrained("Qwen/Qwen2.5-Omni-3B", dtype=torch.bfloat16, device="cuda")  # doctest: +SKIP
            >>> big = HookedAVLLM.from_pretrained("Qwen/Qwen3-Omni-30B-A3B-Instruct", dtype=torch.bfloat16, device_map="auto")  # doctest: +SKIP
        """
        from hooked_avllm.loading import load_pretrained

        return load_pretrained(cls, name_or_path, dtype=dtype, device=device, load_tokenizer=load_tokenizer,
                               device_map=device_map, max_memory=max_memory, offload_dir=offload_dir)

    def dispatch(self, device_map: str | dict[str, Any] = "auto", max_memory: dict[Any, int | str] | None = None) -> "HookedAVLLM":
        """Split this (already built) model over devices as ``from_pretrained(device_map=...)`` does.

        Example:
            >>> model = HookedAVLLM.from_config(cfg).dispatch("balanced", max_memory={0: "40GiB", 1: "40GiB"})  # doctest: +SKIP
        """
        from hooked_avllm.device_map import dispatch, plan_device_map

        return dispatch(self, plan_device_map(self, device_map, max_memory=max_memory, dtype=self.cfg.dtype))

    # ------------------------------------------------------------------ inputs

    @property
    def preprocessor(self) -> Any:
        """The media preprocessing settings this model's ``prepare`` uses (a
        :class:`~hooked_avllm.inputs.PreprocessorConfig`): pass it to ``load_video`` / ``load_image``
        to load media ahead of ``prepare``.

        Example:
            >>> HookedAVLLM.from_config(AVLLMConfig.tiny()).preprocessor.patch_size
            14
        """
        return self.architecture.preprocessor(self)

    def prepare(self, prompt, video=None, audio=None, images=None, use_audio_in_video: bool = True, **kwargs):
        """Media files/arrays and a prompt -> :class:`~hooked_avllm.inputs.ModelInputs` (tensors +
        ``TokenLayout``), with the checkpoint's tokenizer, chat template and preprocessing, as the
        family's prompt builder does it (``model.architecture.prepare``).
        The result goes straight into ``forward``, ``run_with_cache`` and ``generate``.

        Example:
            >>> inputs = model.prepare(prompt="Describe what you see and hear.", video="clip.mp4")  # doctest: +SKIP
            >>> logits, cache = model.run_with_cache(inputs)  # doctest: +SKIP
            >>> cache["blocks.20.hook_resid_post"][cache.layout.audio]  # doctest: +SKIP
        """
        inputs = self.architecture.prepare(
            self, prompt=prompt, video=video, audio=audio, images=images, use_audio_in_video=use_audio_in_video, **kwargs
        )
        device = self.embed.weight.device
        return inputs.to(device, self.embed.weight.dtype)

    # ------------------------------------------------------------------ hooks and caching

    def set_use_attn_result(self, enabled: bool) -> None:
        """Fire ``hook_result`` (per-head attention outputs, [batch, pos, head, d_model]) in every layer."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.use_attn_result = enabled
        self.cfg._use_attn_result = bool(enabled)

    def set_use_split_qkv_input(self, enabled: bool) -> None:
        """TransformerLens's per-head q/k/v input forks do not exist here; asking for them raises."""
        self._refuse_fork("use_split_qkv_input", enabled)

    def set_use_attn_in(self, enabled: bool) -> None:
        """TransformerLens's ``hook_attn_in`` fork does not exist here; asking for it raises."""
        self._refuse_fork("use_attn_in", enabled)

    def set_use_hook_mlp_in(self, enabled: bool) -> None:
        """TransformerLens's ``hook_mlp_in`` does not exist here (``blocks.{l}.ln2.hook_normalized`` is
        the MLP's input); asking for it raises."""
        self._refuse_fork("use_hook_mlp_in", enabled)

    @staticmethod
    def _refuse_fork(name: str, enabled: bool) -> None:
        if enabled:
            raise NotImplementedError(
                f"{name} is not supported: the attention reads one normalised residual per layer "
                "(blocks.{l}.ln1.hook_normalized); patch hook_q/hook_k/hook_v or hook_z per head instead"
            )

    @contextmanager
    def edit_attention(self, *edits: Any) -> Iterator["HookedAVLLM"]:
        """Apply attention edits (knockout rules, token dropping) to every forward and generation
        step inside the block. An edit has ``blocked(layer, context)`` returning a bool
        ``[batch, query, key]`` tensor of edges to remove (or ``None``); the model turns the union
        into an additive ``-inf`` mask for that layer (SDPA still runs: no pattern is materialised
        unless a pattern hook asks for it). A query always keeps its own position.

        Example:
            >>> from hooked_avllm.analysis.knockout import Knockout  # doctest: +SKIP
            >>> with model.edit_attention(Knockout("generated", "video", layers=range(18, 30))):  # doctest: +SKIP
            ...     tokens = model.generate(inputs, max_new_tokens=50)
        """
        self._attention_edits.extend(edits)
        try:
            yield self
        finally:
            for edit in edits:
                self._attention_edits.remove(edit)

    @property
    def has_attention_edits(self) -> bool:
        """Whether an ``edit_attention`` block is active."""
        return bool(self._attention_edits)

    def attention_edit_mask(self, layer: int, context: ForwardContext, dtype: torch.dtype) -> Tensor | None:
        """Additive mask ``[batch, 1, query, key]`` (0 or -inf) of the active edits at ``layer``
        (``None`` when no edit blocks an edge there); what the decoder hands the attention, and
        what analyses that recompute a pattern beside the fused kernel must add.

        Example:
            >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
            >>> model.has_attention_edits
            False
        """
        edges = [edit.blocked(layer, context) for edit in self._attention_edits]
        ids = tuple(id(e) for e in edges)
        memo = self._edit_memo
        if memo is not None and memo[0] is context and memo[1] == ids:
            return memo[2]  # the edits give the same edges as in the previous layer of this forward
        blocked = None
        for e in edges:
            if e is not None:
                blocked = e if blocked is None else blocked | e
        mask = None
        if blocked is not None:
            own = torch.arange(context.n_new, device=blocked.device)[:, None] + context.past
            blocked = blocked & (torch.arange(blocked.shape[-1], device=blocked.device)[None, :] != own)
            mask = torch.zeros(blocked.shape, dtype=dtype, device=blocked.device)
            mask = mask.masked_fill_(blocked, float("-inf"))[:, None]
        self._edit_memo = (context, ids, mask)
        return mask

    def run_with_cache(
        self, *model_args: Any, return_cache_object: bool = True, remove_batch_dim: bool = False, **kwargs: Any
    ) -> tuple[Any, AVActivationCache | dict[str, Tensor]]:
        """Run and cache activations; the cache is an :class:`AVActivationCache` (a TransformerLens
        ``ActivationCache``) that also knows which positions hold which modality (its
        ``.layout``: the inputs' own, or one parsed from the token ids and media metadata).

        Takes TransformerLens's arguments: ``names_filter``, ``device``, ``remove_batch_dim`` (batch
        1; the layout stays usable), ``incl_bwd`` (caches ``{name}_grad`` too; needs a scalar output,
        e.g. ``return_type="loss"``), ``return_cache_object=False`` for a plain dict.

        Example:
            >>> logits, cache = model.run_with_cache(inputs)  # doctest: +SKIP
            >>> loss, cache = model.run_with_cache(inputs, return_type="loss", incl_bwd=True)  # doctest: +SKIP
            >>> cache.select("blocks.3.hook_resid_post_grad", "audio").shape  # doctest: +SKIP
        """
        if remove_batch_dim and _batch_size(model_args, kwargs) not in (None, 1):
            raise ValueError(
                f"remove_batch_dim=True needs inputs of batch size 1; these have {_batch_size(model_args, kwargs)} rows "
                "(TransformerLens would keep row 0 only)"
            )
        self._last_layout = None  # set by forward
        out, cache_dict = super().run_with_cache(*model_args, remove_batch_dim=remove_batch_dim, **kwargs)
        if not return_cache_object:
            return out, cache_dict
        return out, AVActivationCache(cache_dict, self, layout=self._last_layout, has_batch_dim=not remove_batch_dim)

    def layout_of(
        self,
        input_ids: Int[Tensor, "batch pos"],
        attention_mask: Tensor | None = None,
        image_grid_thw: Tensor | None = None,
        video_grid_thw: Tensor | None = None,
        video_second_per_grid: Tensor | None = None,
        feature_attention_mask: Tensor | None = None,
        input_features: Tensor | None = None,
        use_audio_in_video: bool = False,
        *,
        strict: bool = True,
        **media: Any,
    ):
        """The :class:`~hooked_avllm.inputs.TokenLayout` of bare ids + media tensors, as the family
        reads them (Qwen: parsed from the placeholders). ``strict=False`` returns ``None`` with a
        warning when the ids do not parse (e.g. a cache of hand-made ids).

        Example:
            >>> model.layout_of(**processor_outputs, use_audio_in_video=True).audio.sum()  # doctest: +SKIP
        """
        media.update(image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
                     video_second_per_grid=video_second_per_grid, feature_attention_mask=feature_attention_mask,
                     input_features=input_features, use_audio_in_video=use_audio_in_video)
        try:
            return self.architecture.layout_of(self, input_ids, attention_mask, media)
        except InputError as error:
            if strict:
                raise
            warnings.warn(f"the cache has no layout (modality selection is off): {error}", stacklevel=3)
            return None

    # ------------------------------------------------------------------ forward

    def encode_media(self, **media: Any) -> dict[str, Float[Tensor, "token d_model"]]:
        """The towers and projectors on these media tensors: LLM-space rows per kind (``"audio"``,
        ``"video"``, ``"image"``), items in sequence order, one row per placeholder position.

        Example:
            >>> rows = model.encode_media(**inputs.model_kwargs())  # doctest: +SKIP
            >>> rows["audio"].shape  # doctest: +SKIP
        """
        return self.architecture.encode_media(self, media)

    def embed_inputs(
        self, input_ids: Int[Tensor, "batch pos"], layout: Any = None, **media: Any
    ) -> Float[Tensor, "batch pos d_model"]:
        """Token embeddings with every media row scattered into its position: the layout's media
        masks when it matches the ids, else the family's placeholder ids."""
        return self._embed_media(input_ids, layout, media)[0]

    def _embed_media(self, input_ids: Tensor, layout: Any, media: dict) -> tuple[Tensor, list[Injection]]:
        """The embeddings and the decoder-layer injections the family's media give: ``encode_media``
        may return ``"injections"``, a list of ``(layer, kind, rows)`` added after ``layer`` at the
        positions of ``kind`` (Qwen3-Omni's DeepStack)."""
        embeds = self.embed(input_ids)
        feats = dict(self.encode_media(**media))
        injected = feats.pop("injections", [])
        if not feats and not injected:
            return embeds, []
        if layout is not None and tuple(layout.shape) == tuple(input_ids.shape):
            where = {kind: getattr(layout, kind).to(input_ids.device) for kind in MEDIA_KINDS}
        else:
            where = self.architecture.placeholder_masks(self.cfg, input_ids)
        for kind in MEDIA_KINDS:
            if kind in feats:
                self._scatter(embeds, where.get(kind), feats[kind], kind)
        injections = []
        for layer, kind, rows in injected:
            if where.get(kind) is None or int(where[kind].sum()) != rows.shape[0]:
                raise ValueError(f"an injection of {rows.shape[0]} rows at the {kind} positions does not match the layout")
            injections.append(Injection(layer, where[kind], rows))
        return embeds, injections

    @staticmethod
    def _scatter(embeds: Tensor, where: Tensor | None, feats: Tensor, kind: str) -> None:
        n_slots = int(where.sum()) if where is not None else 0
        if n_slots != feats.shape[0]:
            raise ValueError(
                f"the prompt has {n_slots} {kind} placeholder tokens but the {kind} inputs give {feats.shape[0]} "
                f"{kind} tokens; expand the placeholders with the processor (or model.prepare) for these inputs"
            )
        embeds[where.to(embeds.device)] = feats.to(embeds.device, embeds.dtype)  # a tower may sit on another device

    def compute_position_ids(
        self,
        input_ids: Int[Tensor, "batch pos"],
        attention_mask: Tensor | None,
        image_grid_thw: Tensor | None = None,
        video_grid_thw: Tensor | None = None,
        video_second_per_grid: Tensor | None = None,
        feature_attention_mask: Tensor | None = None,
        input_features: Tensor | None = None,
        use_audio_in_video: bool = False,
        **media: Any,
    ) -> tuple[Int[Tensor, "rows batch pos"], Int[Tensor, "batch 1"]]:
        """Position ids of a prompt without a layout, by the family's rule (M-RoPE / TMRoPE rows,
        or one row of 1D positions), and each row's delta (max position + 1 - real length)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        media.update(image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
                     video_second_per_grid=video_second_per_grid, feature_attention_mask=feature_attention_mask,
                     input_features=input_features, use_audio_in_video=use_audio_in_video)
        positions = self.architecture.position_ids(self, input_ids, attention_mask, media)
        real = attention_mask.bool().to(positions.device)
        deltas = positions.masked_fill(~real[None], 0).amax(dim=(0, 2))[:, None] + 1 - real.sum(-1, keepdim=True)
        return positions, deltas

    def forward(
        self,
        *inputs: Any,
        return_type: Literal["logits", "loss", "both", "normalized", None] = "logits",
        loss_per_token: bool = False,
        **kwargs: Any,
    ) -> Float[Tensor, "batch pos vocab"] | Tensor | tuple[Tensor, Tensor] | None:
        """Run the model on prepared inputs (``model.prepare``) or the tensors a Hugging Face
        processor produces: :meth:`llm_inputs` (the towers), then :meth:`run_decoder`.

        ``return_type``: ``"logits"`` ``[batch, pos, vocab]``; ``"loss"``, the next-token
        cross-entropy averaged over text targets (media placeholders and padding are no targets;
        ``loss_per_token=True`` gives ``[batch, pos - 1]``, 0 off text targets); ``"both"``,
        ``(logits, loss)``; ``"normalized"``, the final-norm residual; ``None``.

        Example:
            >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
            >>> model(torch.tensor([[1, 2, 3]])).shape
            torch.Size([1, 3, 256])
            >>> model(torch.tensor([[1, 2, 3]]), return_type="loss").shape
            torch.Size([])
        """
        check_return_type(return_type)
        return self.run_decoder(**self.llm_inputs(*inputs, **kwargs), return_type=return_type, loss_per_token=loss_per_token)

    def llm_inputs(
        self,
        input_ids: Int[Tensor, "batch pos"] | Any = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        *,
        position_ids: Int[Tensor, "rows batch pos"] | None = None,
        layout: Any = None,
        **media: Any,
    ) -> dict[str, Any]:
        """What the LLM gets for these inputs: the towers run here, once.

        Returns the keyword arguments of :meth:`run_decoder`: ``embeds`` [batch, pos, d_model]
        (media scattered in), ``position_ids`` [rows, batch, pos] (3 rows for M-RoPE, 1 for 1D),
        ``attention_mask`` [batch, pos], ``kinds`` [batch, pos], ``n_prompt``, ``input_ids``
        [batch, pos] (the targets of ``return_type="loss"``), and ``injections`` where the family's
        media add rows after decoder layers (see :class:`Injection`). Analyses re-run the decoder on these
        with edited embeddings or batches (e.g. a patching sweep).

        Args:
            input_ids: token ids with media placeholders expanded; or prepared inputs (anything
                with ``model_kwargs()`` and a ``layout``), or a dict of these arguments.
            attention_mask: 1 for real tokens, 0 for padding (left or right).
            layout: the inputs' :class:`~hooked_avllm.inputs.TokenLayout`, if known (it marks
                generated positions, e.g. of a teacher-forced caption, and has the position ids);
                parsed from the ids inside ``run_with_cache`` where the family can.
            media: the media tensors of the family (Qwen: the thinker's ``input_features``,
                ``pixel_values``, ``video_grid_thw``...; ``second_per_grid_ts`` and
                ``mm_token_type_ids`` are accepted); unknown names are refused.

        Example:
            >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
            >>> llm = model.llm_inputs(torch.tensor([[1, 2, 3]]))
            >>> model.run_decoder(**llm, return_type="logits").shape
            torch.Size([1, 3, 256])
        """
        if hasattr(input_ids, "model_kwargs") or isinstance(input_ids, dict):
            kwargs = input_ids.model_kwargs() if hasattr(input_ids, "model_kwargs") else dict(input_ids)
            layout = carried_layout(input_ids) if layout is None else layout
            kwargs.update(media)
            return self.llm_inputs(**kwargs, position_ids=position_ids, layout=layout)
        if "second_per_grid_ts" in media:
            media["video_second_per_grid"] = media.pop("second_per_grid_ts")
        media.pop("mm_token_type_ids", None)
        unknown = set(media) - set(MEDIA_ARGUMENTS)
        if unknown:
            raise TypeError(
                f"unexpected arguments {sorted(unknown)}; HookedAVLLM.forward takes input_ids, attention_mask, "
                f"position_ids, layout and the media tensors {list(MEDIA_ARGUMENTS)}"
            )
        if input_ids is None:
            raise ValueError("input_ids are required (prompt token ids with media placeholders expanded)")
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if layout is None and self.is_caching:  # run_with_cache: the cache gets a layout
            layout = self.layout_of(input_ids, attention_mask, strict=False, **media)
        self._last_layout = layout
        if layout is not None and tuple(layout.shape) != tuple(input_ids.shape):
            layout = None  # another sequence's layout: positions and kinds come from the ids
        if position_ids is None:
            if layout is not None:
                position_ids = layout.position_ids.to(input_ids.device)
            else:
                position_ids, _ = self.compute_position_ids(input_ids, attention_mask, **media)
        embeds, injections = self._embed_media(input_ids, layout, media)
        llm = dict(
            embeds=embeds,
            position_ids=position_ids,
            attention_mask=attention_mask,
            kinds=position_kinds(input_ids, attention_mask, self.cfg.tokens, layout),
            n_prompt=layout.n_prompt if layout is not None else input_ids.shape[1],
            input_ids=input_ids,
        )
        if injections:  # only families that inject (DeepStack) add the key
            llm["injections"] = injections
        return llm

    def run_decoder(
        self,
        embeds: Float[Tensor, "batch pos d_model"],
        position_ids: Int[Tensor, "rows batch pos"],
        attention_mask: Int[Tensor, "batch key_pos"],
        return_type: Literal["logits", "loss", "both", "normalized", None] = "logits",
        kv_caches: list[LayerKVCache] | None = None,
        kinds: Int[Tensor, "batch key_pos"] | None = None,
        step: int = 0,
        n_prompt: int | None = None,
        input_ids: Int[Tensor, "batch pos"] | None = None,
        loss_per_token: bool = False,
        injections: list[Injection] | None = None,
        last_logits_only: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor] | None:
        """The LLM: embeddings -> blocks -> final norm -> unembedding (-> text-target loss).

        ``attention_mask`` and ``kinds`` cover every key position (cached + new); while the blocks
        run, :attr:`forward_context` tells hooks and attention edits what the positions are.
        ``input_ids`` are the loss's targets (``return_type`` ``"loss"`` or ``"both"``).
        ``injections`` add rows to the residual stream after chosen layers (see :class:`Injection`).
        ``last_logits_only`` unembeds only the last position (``[batch, 1, vocab]``; what greedy
        decoding needs, without a prompt-long logits tensor).

        Example:
            >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
            >>> llm = model.llm_inputs(torch.tensor([[1, 2, 3]]))
            >>> model.run_decoder(**llm, return_type="normalized").shape
            torch.Size([1, 3, 64])
        """
        check_return_type(return_type)
        if return_type in ("loss", "both") and (input_ids is None or kv_caches is not None):
            raise ValueError("return_type='loss' needs the input ids of a full (uncached) forward")
        resid = self.hook_embed(embeds)
        past = kv_caches[0].length if kv_caches is not None else 0
        if kinds is None:
            kinds = torch.where(attention_mask.bool(), TEXT, PADDING).long()
        n_prompt = kinds.shape[1] if n_prompt is None else n_prompt
        context = ForwardContext(kinds.to(resid.device), past, resid.shape[1], step, n_prompt)
        self._forward_context = context
        rotary = self.architecture.rotary(self.cfg, position_ids.to(resid.device))
        # one host sync here rather than one per layer: no mask at all when nothing is padding
        key_valid = None if bool(attention_mask.all()) else attention_mask.to(resid.device).bool()
        added = {}
        for injection in injections or ():
            if not 0 <= injection.layer < len(self.blocks):
                raise ValueError(f"an injection targets layer {injection.layer}; the decoder has layers 0-{len(self.blocks) - 1}")
            added.setdefault(injection.layer, []).append(injection)
        try:
            for i, block in enumerate(self.blocks):
                cache = kv_caches[i] if kv_caches is not None else None
                edit = self.attention_edit_mask(i, context, resid.dtype) if self._attention_edits else None
                resid = block(resid, rotary=rotary, causal=True, key_valid=key_valid, kv_cache=cache, additive_mask=edit)
                if i in added or self._injection_watched(block):
                    resid = resid + self._injected(block, added.get(i, ()), resid)
        finally:
            self._forward_context = None
            self._edit_memo = None  # drop the last layer's mask with its forward
        if return_type is None:
            return None
        normalized = self.ln_final(resid)
        if return_type == "normalized":
            return normalized
        if last_logits_only:
            if return_type != "logits":
                raise ValueError(f"last_logits_only=True needs return_type='logits', got {return_type!r}")
            normalized = normalized[:, -1:]
        logits = self.unembed(normalized)
        if return_type == "logits":
            return logits
        loss = text_target_loss(logits, input_ids, kinds, per_token=loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    @staticmethod
    def _injection_watched(block: nn.Module) -> bool:
        """Whether the block's ``hook_injection`` has a hook: then it fires on every forward, a zero
        tensor where nothing is injected (text-only prompts, decoding steps), so caches line up with
        the layout and a hook's edit is never dropped."""
        hook = getattr(block, "hook_injection", None)
        return hook is not None and watched(hook)

    @staticmethod
    def _injected(block: nn.Module, injections: list[Injection], resid: Tensor) -> Tensor:
        """The rows of ``injections`` scattered into a zero residual; through the block's
        ``hook_injection`` when it has one (so hooks can patch or ablate what is added)."""
        delta = torch.zeros_like(resid)
        for injection in injections:
            delta[injection.where.to(resid.device)] += injection.rows.to(resid.dtype)
        hook = getattr(block, "hook_injection", None)
        return hook(delta) if hook is not None else delta

    def generate_with_cache(
        self,
        inputs: Any,
        max_new_tokens: int = 32,
        *,
        names_filter: Any = None,
        device: str | torch.device | None = None,
        concat: bool = True,
        eos_token_id: int | list[int] | None = None,
    ) -> tuple[Tensor, Any]:
        """Greedy generation that caches activations: one :class:`AVActivationCache` with the LLM
        activations concatenated over the steps (``concat=True``; its layout marks the generated
        positions) or a list of caches, one per forward. See :mod:`hooked_avllm.generation_cache`.

        Example:
            >>> tokens, cache = model.generate_with_cache(inputs, 20, names_filter=lambda n: "resid_post" in n)  # doctest: +SKIP
            >>> cache.select("blocks.3.hook_resid_post", "generated").shape  # doctest: +SKIP
        """
        from hooked_avllm.generation_cache import generate_with_cache

        return generate_with_cache(self, inputs, max_new_tokens, names_filter=names_filter, device=device,
                                   concat=concat, eos_token_id=eos_token_id)

    def end_tokens(self, eos_token_id: int | list[int] | None = None, device: Any = None) -> Int[Tensor, "n_end"]:
        """The end-of-text ids generation stops at: ``eos_token_id`` if given, else the config's."""
        eos = eos_token_id if eos_token_id is not None else list(self.cfg.tokens.eos)
        return torch.tensor([eos] if isinstance(eos, int) else list(eos), device=device, dtype=torch.long)

    @torch.no_grad()
    def generate(
        self,
        input_ids: Int[Tensor, "batch pos"] | Any = None,
        max_new_tokens: int = 32,
        eos_token_id: int | list[int] | None = None,
        *,
        layout: Any = None,
        forward_last: bool = False,
        **inputs: Any,
    ) -> Int[Tensor, "batch pos_plus_new"]:
        """Greedy decoding with a KV cache; hooks and attention edits apply at the prefill and at
        every step (``model.forward_context.step`` says which).

        Takes the same inputs as ``forward`` (left padding for batches). Stops when every row has
        produced an end token (``cfg.tokens.eos`` by default) or after ``max_new_tokens``; rows
        that finished early are filled with the end token. ``forward_last`` also runs the last
        generated token through the model (so caches cover every token).

        Example:
            >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
            >>> model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4).shape
            torch.Size([1, 7])
        """
        llm = self.llm_inputs(input_ids, layout=layout, **inputs)
        if hasattr(input_ids, "model_kwargs") or isinstance(input_ids, dict):
            input_ids = input_ids["input_ids"] if isinstance(input_ids, dict) else input_ids.input_ids
        input_ids = input_ids if input_ids.ndim == 2 else input_ids[None]
        attention_mask, kinds, n_prompt = llm["attention_mask"], llm["kinds"], llm["n_prompt"]
        if bool((attention_mask[:, -1] == 0).any()):
            raise ValueError("generate needs left padding (the last column must be real tokens for every row)")
        # a new text token gets t = h = w = (real tokens so far - 1) + delta, delta = max prompt position + 1 - length
        real = attention_mask.bool()
        deltas = llm["position_ids"].masked_fill(~real[None], 0).amax(dim=(0, 2))[:, None] + 1 - real.sum(-1, keepdim=True)
        caches = [LayerKVCache() for _ in self.blocks]
        logits = self.run_decoder(**llm, return_type="logits", kv_caches=caches, last_logits_only=True)
        eos = self.end_tokens(eos_token_id, input_ids.device)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        tokens = input_ids
        generated = torch.full_like(kinds[:, :1], GENERATED)
        for step in range(1, max_new_tokens + 1):
            next_token = logits[:, -1].argmax(-1).to(input_ids.device)  # the unembedding may sit on another device
            if eos.numel():
                next_token = torch.where(done, eos[0], next_token)
            tokens = torch.cat((tokens, next_token[:, None]), dim=1)
            attention_mask = torch.cat((attention_mask, torch.ones_like(attention_mask[:, :1])), dim=1)
            kinds = torch.cat((kinds, generated), dim=1)
            if eos.numel():
                done = done | torch.isin(next_token, eos)
            last = step == max_new_tokens or (eos.numel() and bool(done.all()))
            if last and not forward_last:
                break  # the last token needs no forward of its own
            step_pos = (attention_mask.sum(-1, keepdim=True) - 1 + deltas).expand(-1, 1)
            rows = llm["position_ids"].shape[0]
            logits = self.run_decoder(self.embed(next_token[:, None]), step_pos[None].expand(rows, -1, -1), attention_mask,
                                      "logits", caches, kinds, step, n_prompt, last_logits_only=True)
            if last:
                break
        return tokens

"""HookedAVLLM: the generic audio-visual LLM. Encoders by modality -> projectors -> media rows
scattered into the token embeddings by the layout -> a hooked decoder. What varies between model
families (towers, decoder shape, inputs, positions) comes from the family object
(:mod:`hooked_avllm.architectures`), so nothing here names a family.

The LLM's hook names are TransformerLens's (``blocks.{l}.hook_resid_post``, ``ln_final``...), so
``cache["resid_post", 3]`` and ``transformer_lens.utils.get_act_name`` work unchanged. Encoders
live under ``vision.*`` and ``audio.*``, projectors under ``vision_proj.*`` and ``audio_proj.*``.

Around the forward here: :mod:`~hooked_avllm.decoder_inputs` (inputs -> decoder inputs),
:mod:`~hooked_avllm.generation`, :mod:`~hooked_avllm.edits` (attention edits),
:mod:`~hooked_avllm.tl_surface`, :mod:`~hooked_avllm.weight_views`, :mod:`~hooked_avllm.tokens`,
:mod:`~hooked_avllm.saes`, :mod:`~hooked_avllm.loading`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

try:  # transformer-lens >= 3.9 exports it at the top (4.x only there); 3.0-3.8 from hook_points
    from transformer_lens import HookedRootModule
except ImportError:  # pragma: no cover - exercised under transformer-lens 3.0-3.8
    from transformer_lens.hook_points import HookedRootModule
from transformer_lens.hook_points import HookPoint

from hooked_avllm.architectures.base import Architecture
from hooked_avllm.architectures.registry import architecture_for
from hooked_avllm.components.attention import LayerKVCache
from hooked_avllm.components.hook_state import watched
from hooked_avllm.components.norms import RMSNorm
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.decoder_inputs import InputMethods, Injection, decoder_inputs
from hooked_avllm.device_map import dispatch, plan_device_map
from hooked_avllm.edits import AttentionEdits
from hooked_avllm.forward_context import ForwardContext
from hooked_avllm.generation import Generation
from hooked_avllm.loading import load_pretrained
from hooked_avllm.loss import check_return_type, text_target_loss
from hooked_avllm.saes import SAEHost
from hooked_avllm.tl_surface import TransformerLensSurface
from hooked_avllm.tokens import TokenMethods
from hooked_avllm.vocabulary import PADDING, TEXT, TOWER_SLOTS
from hooked_avllm.weight_views import WeightViews

__all__ = ["HookedAVLLM", "Injection"]


class HookedAVLLM(InputMethods, Generation, AttentionEdits, TransformerLensSurface, WeightViews, TokenMethods, SAEHost,
                  HookedRootModule):
    """A hooked audio-visual LLM of any registered family (``hooked_avllm.architectures.supported()``).

    ``forward`` takes prepared inputs (``model.prepare``) or the family's tensor keyword arguments
    (a Hugging Face processor's output: ``model(**inputs)``). The LLM also shows TransformerLens's
    surface: its config fields (``cfg.n_layers``, ``cfg.normalization_type``...), weight views
    (``W_Q``, ``W_U``...) and token helpers, so TransformerLens's cache methods and patching run on it.

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
        self._edit_memo: tuple | None = None  # (context, the edits' edges, mask): layers with the same edges share it
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
        query offset, the decoding step); ``None`` outside the decoder. Hooks and attention edits read it."""
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
    def from_config(cls, cfg: AVLLMConfig | dict, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                    seed: int | None = 0) -> "HookedAVLLM":
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
    def from_pretrained(cls, name_or_path: str, dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu",
                        load_tokenizer: bool = True, device_map: str | dict[str, Any] | None = None,
                        max_memory: dict[Any, int | str] | None = None, offload_dir: str | None = None) -> "HookedAVLLM":
        """Load a Hugging Face checkpoint (local folder or hub id) through our own converter.

        The family comes from ``config.json``'s ``model_type``; parts that are not the thinker
        (Qwen2.5-Omni's talker, MiniCPM-o's TTS head) are skipped by name. Tensors are streamed one
        by one from the safetensors shards into the parameters (a state dict a family keeps beside
        them is read with ``torch.load(weights_only=True)``). ``device_map`` (``"auto"``,
        ``"balanced"``, ``"sequential"`` or a dict, with ``max_memory``) splits the model over
        devices through accelerate (:mod:`hooked_avllm.device_map`). ``dtype`` is a torch dtype, its
        name (``"bfloat16"``) or ``"auto"`` (config.json's ``torch_dtype``). The model comes back in eval mode.

        Example:
            >>> model = HookedAVLLM.from_pretrained("Qwen/Qwen2.5-Omni-3B", dtype=torch.bfloat16, device="cuda")  # doctest: +SKIP
        """
        return load_pretrained(cls, name_or_path, dtype=dtype, device=device, load_tokenizer=load_tokenizer,
                               device_map=device_map, max_memory=max_memory, offload_dir=offload_dir)

    def dispatch(self, device_map: str | dict[str, Any] = "auto", max_memory: dict[Any, int | str] | None = None,
                 offload_dir: str | None = None) -> "HookedAVLLM":
        """Split this (already built) model over devices as ``from_pretrained(device_map=...)`` does
        (``offload_dir``: an empty folder for the weights of ``"disk"`` entries)."""
        plan = plan_device_map(self, device_map, max_memory=max_memory, dtype=self.cfg.dtype)
        return dispatch(self, plan, offload_dir=offload_dir)

    # ------------------------------------------------------------------ inputs

    @property
    def preprocessor(self) -> Any:
        """The media preprocessing settings this model's ``prepare`` uses (the family's)."""
        return self.architecture.preprocessor(self)

    def prepare(self, prompt, video=None, audio=None, images=None, **kwargs):
        """Media files/arrays and a prompt -> :class:`~hooked_avllm.inputs.ModelInputs` (tensors +
        ``TokenLayout``), with the checkpoint's tokenizer, chat template and preprocessing, as the
        family's prompt builder does it. The result goes straight into ``forward``,
        ``run_with_cache`` and ``generate``.

        Example:
            >>> inputs = model.prepare(prompt="Describe what you see and hear.", video="clip.mp4")  # doctest: +SKIP
            >>> cache["blocks.20.hook_resid_post"][cache.layout.audio]  # doctest: +SKIP
        """
        inputs = self.architecture.prepare(self, prompt=prompt, video=video, audio=audio, images=images, **kwargs)
        return inputs.to(self.embed.weight.device, self.embed.weight.dtype)

    # ------------------------------------------------------------------ forward

    def forward(self, *inputs: Any, return_type: Literal["logits", "loss", "both", "normalized", None] = "logits",
                loss_per_token: bool = False, **kwargs: Any) -> Float[Tensor, "batch pos vocab"] | Tensor | tuple | None:
        """Run the model on prepared inputs (``model.prepare``) or the tensors a Hugging Face
        processor produces: :mod:`~hooked_avllm.decoder_inputs` (the towers), then :meth:`run_decoder`.

        ``return_type``: ``"logits"`` ``[batch, pos, vocab]``; ``"loss"``, the next-token
        cross-entropy averaged over text targets (``loss_per_token=True``: ``[batch, pos - 1]``);
        ``"both"``, ``(logits, loss)``; ``"normalized"``, the final-norm residual; ``None``.

        Example:
            >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
            >>> model(torch.tensor([[1, 2, 3]])).shape, model(torch.tensor([[1, 2, 3]]), return_type="loss").shape
            (torch.Size([1, 3, 256]), torch.Size([]))
        """
        check_return_type(return_type)
        llm = decoder_inputs(self, *inputs, **kwargs)
        return self.run_decoder(**llm.decoder_kwargs(), return_type=return_type, loss_per_token=loss_per_token)

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
        ``input_ids`` are the loss's targets. ``injections`` add rows to the residual stream after
        chosen layers. ``last_logits_only`` unembeds only the last position (greedy decoding).

        Example:
            >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
            >>> model.run_decoder(**model.llm_inputs(torch.tensor([[1, 2, 3]])), return_type="normalized").shape
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
        added: dict[int, list[Injection]] = {}
        for injection in injections or ():
            if not 0 <= injection.layer < len(self.blocks):
                raise ValueError(f"an injection targets layer {injection.layer}; the decoder has layers 0-{len(self.blocks) - 1}")
            added.setdefault(injection.layer, []).append(injection)
        try:
            for i, block in enumerate(self.blocks):
                cache = kv_caches[i] if kv_caches is not None else None
                edit = self.attention_edit_mask(i, context, resid.dtype) if self._attention_edits else None
                resid = block(resid, rotary=rotary, causal=True, key_valid=key_valid, kv_cache=cache, additive_mask=edit)
                hook = getattr(block, "hook_injection", None)
                if i in added or (hook is not None and watched(hook)):  # a watched hook fires even with nothing added
                    resid = resid + _injected(hook, added.get(i, ()), resid)
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


def _injected(hook: HookPoint | None, injections: list[Injection], resid: Tensor) -> Tensor:
    """The rows of ``injections`` scattered into a zero residual, through the block's
    ``hook_injection`` when it has one (so hooks can patch or ablate what is added; it fires on
    every forward once watched, with zeros where nothing is injected, so caches line up)."""
    delta = torch.zeros_like(resid)
    for injection in injections:
        delta[injection.where.to(resid.device)] += injection.rows.to(resid.dtype)
    return hook(delta) if hook is not None else delta

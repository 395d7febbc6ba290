"""VideoLLaMA2.1-AV assembled from independent parts, as the released code composes them, for
parity tests: transformers' ``Qwen2ForCausalLM`` and ``SiglipVisionModel`` (penultimate hidden
state), timm's ``RegStage`` in the STC connector (``stc_connector_v35``), ESPnet's BEATs and an
``nn.Sequential`` audio projector. Its forward follows ``prepare_inputs_labels_for_multimodal``:
the one media placeholder of each row is replaced by the media features (video then audio), rows
are right-padded, and the LLM runs on the embeddings. Nothing here imports our model code.

``save_checkpoint`` writes the parts in the release's layout (safetensors shards with ``model.*``
names, the audio tower as a separate ``audio_tower.bin`` state dict), for ``from_pretrained``.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import einops
import torch
from safetensors.torch import save_file
from torch import nn

from reference_shims import import_espnet_beats, import_timm_regnet

PLACEHOLDER = -200  # the release's multimodal token index in input ids
VOCAB, PAD, IM_END = 264, 240, 242  # the toy tokenizer's ids (its <|endoftext|>, <|im_end|>)
PLACEHOLDERS = {"image_token_index": 261, "video_token_index": 262, "audio_token_index": 263}
NUM_FRAMES = 4
SIGLIP = dict(image_size=56, patch_size=14, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4)
BEATS = dict(  # official cfg names (the released iter3+ settings at tiny width)
    encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=48, encoder_attention_heads=4, embed_dim=16,
    input_patch_size=16, conv_bias=False, activation_fn="gelu", layer_norm_first=False, deep_norm=True,
    conv_pos=8, conv_pos_groups=4, relative_position_embedding=True, num_buckets=32, max_distance=64,
    gru_rel_pos=True, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0,
    dropout_input=0.0, finetuned_model=False,
)
QWEN2 = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=4096,
             tie_word_embeddings=False, eos_token_id=IM_END, pad_token_id=PAD)
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"

# VideoLLaMA2.1-7B-AV's real dimensions (Qwen2-7B, SigLIP-so400m-patch14-384, BEATs iter3+, 16 frames)
REAL_DIMS = dict(
    qwen2=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
               num_attention_heads=28, num_key_value_heads=4, rope_theta=1e6, rms_norm_eps=1e-6,
               max_position_embeddings=32768, tie_word_embeddings=False, eos_token_id=151645, pad_token_id=151643),
    siglip=dict(image_size=384, patch_size=14, hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                num_attention_heads=16),
    beats=dict(BEATS, encoder_layers=12, encoder_embed_dim=768, encoder_ffn_embed_dim=3072, encoder_attention_heads=12,
               embed_dim=512, conv_pos=128, conv_pos_groups=16, num_buckets=320, max_distance=800),
    num_frames=16,
    placeholders=None,  # the release's config has none: the defaults apply
)


def randomize_(module: nn.Module, seed: int) -> None:
    """Every parameter random at a scale that keeps activations O(1) (norms near 1, biases nonzero)."""
    generators: dict = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.device not in generators:  # drawn where the weights are (real dimensions build on a GPU)
                generators[p.device] = torch.Generator(device=p.device).manual_seed(seed)
            noise = torch.randn(p.shape, generator=generators[p.device], device=p.device, dtype=p.dtype)
            if p.ndim == 1 and ("norm" in name or "bn" in name) and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            elif name.endswith(("weight_g", "grep_a")):
                p.copy_(0.5 + noise.abs())
            elif "relative_attention_bias" in name:
                p.copy_(noise)
            elif p.ndim == 1:
                p.copy_(0.2 * noise)
            else:
                p.copy_(noise / math.sqrt(p[0].numel()))


class ReferenceSTC(nn.Module):
    """stc_connector_v35 from timm and torch, forward as the released connector's."""

    def __init__(self, d_in: int, d_model: int, depth: int = 4, downsample=(2, 2, 2)):
        super().__init__()
        regnet = import_timm_regnet()
        from timm.layers import LayerNorm2d

        def stage(in_chs, out_chs):
            return regnet.RegStage(depth=depth, in_chs=in_chs, out_chs=out_chs, stride=1, dilation=1,
                                   act_layer=nn.SiLU, norm_layer=LayerNorm2d)

        self.s1 = stage(d_in, d_model)
        self.sampler = nn.Sequential(nn.Conv3d(d_model, d_model, kernel_size=downsample, stride=downsample, padding=0), nn.SiLU())
        self.s2 = stage(d_model, d_model)
        self.readout = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, x):  # [b, t, (h w), d]
        t, hw = x.size(1), int(x.size(2) ** 0.5)
        x = einops.rearrange(x, "b t (h w) d -> b d t h w", h=hw, w=hw)
        x = einops.rearrange(x, "b d t h w -> (b t) d h w")
        x = self.s1(x)
        x = einops.rearrange(x, "(b t) d h w -> b d t h w", t=t)
        x = self.sampler(x)
        new_t = x.size(2)
        x = einops.rearrange(x, "b d t h w -> (b t) d h w")
        x = self.s2(x)
        x = einops.rearrange(x, "(b t) d h w -> b (t h w) d", t=new_t)
        return self.readout(x)


class ReferenceVideoLLaMA2(nn.Module):
    """The released composition over independent parts (see the module docstring)."""

    def __init__(self, seed: int = 0, audio: bool = True, vision: bool = True, qwen2: dict = QWEN2,
                 siglip: dict = SIGLIP, beats: dict = BEATS, num_frames: int = NUM_FRAMES,
                 placeholders: dict | None = PLACEHOLDERS, randomize: bool = True):
        super().__init__()
        from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

        self.dims = dict(qwen2=dict(qwen2), siglip=dict(siglip), beats=dict(beats))
        self.num_frames, self.placeholders = num_frames, placeholders
        torch.manual_seed(seed)
        self.llm = Qwen2ForCausalLM(Qwen2Config(**qwen2)).eval()
        d = qwen2["hidden_size"]
        self.siglip = SiglipVisionModel(SiglipVisionConfig(**siglip)).eval() if vision else None
        self.stc = ReferenceSTC(siglip["hidden_size"], d).eval() if vision else None
        self.beats = None
        if audio:
            espnet = import_espnet_beats()
            # ESPnet initialises through .cpu(): on the meta device (name checks) it is built on the CPU
            with torch.device("cpu") if torch.empty(0).is_meta else contextlib.nullcontext():
                self.beats = espnet.BeatsEncoder(input_size=1, beats_config=dict(beats)).eval()
            self.beats.min_input_length_at_16khz = 0  # never tile a short input
            self.beats.preprocess = lambda fbank: (fbank - 15.41663) / (2 * 6.55582)  # the released preprocess on fbank input
            # ESPnet casts the features to float32 before the patch embedding; this lets the same
            # reference run in float64 (the cast follows the weights' dtype, nothing else changes)
            self.beats.patch_embedding.register_forward_pre_hook(lambda conv, args: (args[0].to(conv.weight.dtype),))
        self.audio_proj = nn.Sequential(nn.Linear(beats["encoder_embed_dim"], d), nn.GELU(), nn.Linear(d, d)) if audio else None
        for i, part in enumerate((self.llm, self.siglip, self.stc, self.beats, self.audio_proj)):
            if part is not None and randomize:
                randomize_(part, seed + i)

    # ---- media -> LLM-space rows, per item
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:  # [b, t, 3, H, W] -> [b, tokens, d]
        b = frames.shape[0]
        hidden = self.siglip(frames.flatten(0, 1), output_hidden_states=True).hidden_states[-2]
        return self.stc(einops.rearrange(hidden, "(b t) n h -> b t n h", b=b))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:  # [b, 3, H, W]: expanded to num_frames, as released
        return self.encode_frames(images[:, None].expand(-1, self.num_frames, -1, -1, -1))

    def encode_audio(self, fbank: torch.Tensor) -> torch.Tensor:  # [b, frames, 128] -> [b, tokens, d]
        out, _ = self.beats.extract_features(fbank.clone(), None)
        return self.audio_proj(out)

    # ---- the LLM over rows with one placeholder each
    def forward(self, rows: list[list[int]], media: list[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """``rows``: ids with at most one ``PLACEHOLDER``; ``media[r]``: that row's features
        ``[tokens, d]``. Returns right-padded logits ``[batch, longest, vocab]`` and the mask."""
        embed = self.llm.get_input_embeddings()
        sequences = []
        for ids, feats in zip(rows, media):
            ids = torch.tensor(ids, device=embed.weight.device)
            at = torch.nonzero(ids == PLACEHOLDER).flatten()
            if len(at) == 0:
                sequences.append(embed(ids))
                continue
            k = int(at[0])
            sequences.append(torch.cat([embed(ids[:k]), feats, embed(ids[k + 1 :])]))
        longest = max(len(s) for s in sequences)
        embeds = sequences[0].new_zeros(len(rows), longest, sequences[0].shape[-1])
        mask = torch.zeros(len(rows), longest, dtype=torch.long, device=embeds.device)
        for r, s in enumerate(sequences):
            embeds[r, : len(s)], mask[r, : len(s)] = s, 1
        return self.llm(inputs_embeds=embeds, attention_mask=mask).logits, mask

    def prompt_ids(self, tokenizer, prompt: str, tag: str | None) -> list[int]:
        """The released prompt: the Qwen2 chat turn with ``tag + "\\n"`` before the text (an empty tag
        for text only), tokenised in chunks around the tag (``tokenizer_multimodal_token``)."""
        user = f"{tag or ''}\n{prompt}"
        text = f"{SYSTEM}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        if tag is None:
            return tokenizer(text, add_special_tokens=False)["input_ids"]
        before, after = text.split(tag)
        return (tokenizer(before, add_special_tokens=False)["input_ids"] + [PLACEHOLDER]
                + tokenizer(after, add_special_tokens=False)["input_ids"])

    # ---- the release's checkpoint layout
    def config_json(self) -> dict:
        qwen2, siglip, beats = self.dims["qwen2"], self.dims["siglip"], self.dims["beats"]
        c = dict(qwen2, model_type="videollama2_qwen2", architectures=["Videollama2Qwen2ForCausalLM"], **(self.placeholders or {}))
        if self.siglip is not None:
            c.update(mm_vision_tower="google/siglip-so400m-patch14-384", mm_projector_type="stc_connector_v35",
                     mm_vision_select_layer=-2, mm_vision_select_feature="patch", mm_hidden_size=siglip["hidden_size"],
                     num_frames=self.num_frames, vision_config=dict(siglip), image_aspect_ratio="pad")
        if self.beats is not None:
            c.update(mm_audio_tower="/training/machine/audio_tower.bin", mm_projector_a_type="mlp2x_gelu",
                     mm_hidden_size_a=beats["encoder_embed_dim"], hidden_size_a=qwen2["hidden_size"], audio_config=dict(beats))
        return c

    def release_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor under the release's name (the audio tower's under ``model.audio_tower.``)."""
        state = dict(self.llm.state_dict())
        if self.siglip is not None:  # transformers 4.x names: vision_model.* under the tower wrapper
            state.update({f"model.vision_tower.vision_tower.vision_model.{k.removeprefix('vision_model.')}": v
                          for k, v in self.siglip.state_dict().items()})
            state.update({f"model.mm_projector.{k}": v for k, v in self.stc.state_dict().items()})
        if self.audio_proj is not None:
            state.update({f"model.mm_projector_a.{k}": v for k, v in self.audio_proj.state_dict().items()})
            state.update({f"model.audio_tower.{k}": v for k, v in self.beats.state_dict().items()})
        return state

    def save_checkpoint(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        full = self.release_state_dict()
        state = {k: v.detach().clone().contiguous() for k, v in full.items() if not k.startswith("model.audio_tower.")}
        audio = {k: v.detach().clone() for k, v in full.items() if k.startswith("model.audio_tower.")}
        if audio:  # the release keeps the audio tower in its own pickled state dict
            torch.save(audio, folder / "audio_tower.bin")
        names = sorted(state)
        shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
                  "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
        for file, keys in shards.items():
            save_file({k: state[k] for k in keys}, str(folder / file))
        index = {"metadata": {}, "weight_map": {k: file for file, keys in shards.items() for k in keys}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        (folder / "config.json").write_text(json.dumps(self.config_json()))
        return folder

"""The MiniCPM-o 2.6 thinker assembled from references we did not write: transformers'
``Qwen2ForCausalLM`` (``llm``), transformers' ``Idefics2VisionTransformer`` with MiniCPM's position
rule (``vpm``, :mod:`minicpm_reference_vision`), the resampler written from the published
``resampler.py`` (:class:`minicpm_reference_vision.ReferenceResampler`), transformers'
``WhisperEncoder`` modules looped with the published 1-s block mask (``apm`` +
``audio_projection_layer`` + ``audio_avg_pooler``, :mod:`minicpm_reference_audio`).

The forward follows the published ``modeling_minicpmo.py`` (jack139/minicpmo-backend@dced0af,
read, not copied): ``get_vllm_embedding`` (every slice through ``vpm`` one at a time, the resampler
over the batch of slices, each slice's rows written over one ``image_bound`` span in order),
``get_audio_embedding`` (every piece through ``apm`` as one padded batch, each row's pieces
concatenated and written over its ``audio_bounds`` spans in order), then the LLM on
``inputs_embeds`` with ``position_ids = cumsum(mask) - 1``. Bounds are found in the ids here, as the
published ``_convert`` finds them (not with the library's layout).

Assumptions written down: the vision tower runs every slice alone (the released code pads slices
into one batch with a key mask, which gives the same rows); the LLM runs with SDPA in float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from minicpm_reference_audio import MiniCPMAudioReference
from minicpm_reference_vision import ReferenceResampler, idefics2_vision_reference, randomize_, run_idefics2_slices


def slice_image_from_rows(rows: torch.Tensor, h: int, w: int, patch: int = 14) -> torch.Tensor:
    """A slice ``[3, h * patch, w * patch]`` back from its patch rows (row-major patches, each
    flattened channel-major): the released processor's pixels for that slice."""
    return rows.view(h, w, 3, patch, patch).permute(2, 0, 3, 1, 4).reshape(3, h * patch, w * patch)


def find_bounds(ids: torch.Tensor, opens: list[int], closes: list[int]) -> torch.Tensor:
    """``[start + 1, end)`` of every bound (``_convert``'s reading of the ids)."""
    starts = torch.where(torch.isin(ids, torch.tensor(opens, device=ids.device)))[0] + 1
    ends = torch.where(torch.isin(ids, torch.tensor(closes, device=ids.device)))[0]
    return torch.stack([starts, ends], dim=-1)


class ReferenceMiniCPMO(nn.Module):
    """The reference thinker for a released-layout ``config_json`` (see the module docstring) and
    the layout's token ids ``tokens`` (an object with ``image_start`` ... ``audio_end``)."""

    def __init__(self, config_json: dict, tokens, seed: int = 0, randomize: bool = True):
        super().__init__()
        from transformers import Qwen2Config, Qwen2ForCausalLM

        c = config_json
        self.config_json, self.tokens = c, tokens
        llm_keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "rms_norm_eps", "rope_theta", "hidden_act", "max_position_embeddings",
                    "tie_word_embeddings")
        llm_config = Qwen2Config(**{k: c[k] for k in llm_keys if k in c})
        llm_config._attn_implementation = "sdpa"
        self.llm = Qwen2ForCausalLM(llm_config).eval()
        self.vpm = idefics2_vision_reference(c["vision_config"]) if "vision_config" in c else None
        self.resampler = ReferenceResampler(c["query_num"], c["hidden_size"], c["hidden_size"] // 128,
                                            c["vision_config"]["hidden_size"]) if self.vpm is not None else None
        self.audio = MiniCPMAudioReference(c["audio_config"], c["hidden_size"], c.get("audio_pool_step", 2)) \
            if "audio_config" in c else None
        if randomize:  # off for a full-size build on the meta device (names and shapes only)
            randomize_(self, seed)
        self.eval()

    def released_state_dict(self) -> dict[str, torch.Tensor]:
        """Every thinker tensor under the released names, plus TTS-head tensors the loader must skip."""
        state = {f"llm.{k}": v for k, v in self.llm.state_dict().items()}
        if self.vpm is not None:
            state.update({f"vpm.{k}": v for k, v in self.vpm.state_dict().items()})
            state.update({f"resampler.{k}": v for k, v in self.resampler.state_dict().items()})
        if self.audio is not None:
            state.update({f"apm.{k}": v for k, v in self.audio.apm.state_dict().items()})
            state.update({f"audio_projection_layer.{k}": v for k, v in self.audio.audio_projection_layer.state_dict().items()})
            state["tts.emb_text.weight"] = torch.randn(8, 4)  # the TTS head: not the thinker's
            state["tts.model.layers.0.mlp.up_proj.weight"] = torch.randn(4, 4)
        return {k: v.contiguous() for k, v in state.items()}

    def save_checkpoint(self, folder: Path, tokenizer_config: dict | None = None, preprocessor: dict | None = None) -> Path:
        """The released layout: ``config.json``, two safetensors shards with their index, and the
        tokenizer / preprocessor configs when given."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config_json, indent=2))
        state = self.released_state_dict()
        names = sorted(state)
        shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
                  "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
        weight_map = {}
        for file, keys in shards.items():
            save_file({k: state[k] for k in keys}, str(folder / file), metadata={"format": "pt"})
            weight_map.update({k: file for k in keys})
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        if tokenizer_config is not None:
            (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
        if preprocessor is not None:
            (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
        return folder

    @torch.no_grad()
    def vision_rows(self, pixel_values: torch.Tensor, tgt_sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every slice through ``vpm`` alone, then the resampler over the padded batch of slices:
        (the tower's packed rows [1, patch, d_vision], the resampled rows [slice, query, d_model])."""
        slices, at = [], 0
        for h, w in tgt_sizes.tolist():
            slices.append(slice_image_from_rows(pixel_values[at : at + h * w], h, w))
            at += h * w
        packed = run_idefics2_slices(self.vpm, slices, position_rule="minicpm")
        lengths = [h * w for h, w in tgt_sizes.tolist()]
        padded = nn.utils.rnn.pad_sequence(list(packed[0].split(lengths)), batch_first=True)
        return packed, self.resampler(padded, tgt_sizes)

    @torch.no_grad()
    def embeddings(self, input_ids: torch.Tensor, media: dict, stages: dict | None = None) -> torch.Tensor:
        """The LLM's input embeddings: its own token embeddings, every image / slice bound filled with
        that slice's resampled rows and every audio bound with the next audio rows, in bound order
        (``_convert``'s reading of the ids); ``stages`` collects the towers' outputs."""
        t = self.tokens
        stages = {} if stages is None else stages
        embeds = self.llm.get_input_embeddings()(input_ids).clone()
        dtype = embeds.dtype
        if media.get("pixel_values") is not None:
            stages["vision"], resampled = self.vision_rows(media["pixel_values"].to(dtype), media["tgt_sizes"])
            stages["resampled"] = resampled
            at = 0
            for b in range(input_ids.shape[0]):
                for start, end in find_bounds(input_ids[b], [t.image_start, t.slice_start], [t.image_end, t.slice_end]).tolist():
                    embeds[b, start:end] = resampled[at]
                    at += 1
            assert at == resampled.shape[0], "every slice fills one image bound"
        if media.get("input_features") is not None:
            lens = media["feature_lens"]
            audio = self.audio(media["input_features"][:, :, : int(lens.max())].to(dtype), lens)
            stages["audio"] = audio
            rows = torch.cat(audio["pieces"])  # each row's pieces in order: the bounds are filled one after the other
            at = 0
            for b in range(input_ids.shape[0]):
                for start, end in find_bounds(input_ids[b], [t.audio_start], [t.audio_end]).tolist():
                    embeds[b, start:end] = rows[at : at + end - start]
                    at += end - start
            assert at == rows.shape[0], "every audio embedding fills one placeholder"
        return embeds

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, media: dict, hidden_states: bool = True) -> dict:
        """Logits and every stage for ids and our media tensors (slices as patch rows + ``tgt_sizes``;
        audio pieces + ``feature_lens``), laid out by bounds found in the ids (``hidden_states=False``:
        the LLM keeps no per-layer states, as the released forward)."""
        stages: dict = {}
        embeds = self.embeddings(input_ids, media, stages)
        stages["embeds"] = embeds
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                       output_hidden_states=hidden_states)
        stages["hidden_states"] = out.hidden_states
        stages["logits"] = out.logits
        return stages

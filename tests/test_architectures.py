"""The architecture registry: every family is found by its ``model_type``, builds through the
generic model, and the generic layers never name a family; decoder-layer injections; the
VideoLLaMA2.1-AV converter accounts for every tensor of a full-size checkpoint layout."""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import pytest
import torch

from hooked_avllm import AVLLMConfig, HookedAVLLM
from hooked_avllm.architectures import BY_MODEL_TYPE, architecture_for, supported
from hooked_avllm.architectures.minicpm_o.config import config_from_hf as minicpm_config_from_hf
from hooked_avllm.architectures.minicpm_o.config import tiny_config_json as minicpm_tiny_config_json
from hooked_avllm.architectures.qwen3_omni.config import config_from_hf as qwen3_config_from_hf
from hooked_avllm.architectures.qwen3_omni.config import tiny_config_json as qwen3_tiny_config_json
from hooked_avllm.architectures.videollama2.config import config_from_hf, tiny_config
from hooked_avllm.model import Injection
from weights_conversion import videollama2 as videollama2_converter

ROOT = Path(__file__).resolve().parents[1]


def test_supported_lists_every_family_with_its_model_types_and_hub_ids():
    families = {a.name: a for a in supported()}
    assert set(families) == {"minicpm_o", "qwen2_5_omni", "qwen2_5_vl", "qwen3_omni", "videollama2"}
    assert families["videollama2"].model_types == ("videollama2_qwen2",)
    assert "DAMO-NLP-SG/VideoLLaMA2.1-7B-AV" in families["videollama2"].hub_ids
    assert all(a.hub_ids and a.description and a.converter is not None for a in supported())
    assert architecture_for("qwen2_5_omni_thinker") is families["qwen2_5_omni"]
    assert set(BY_MODEL_TYPE) == {"minicpmo", "minicpmv", "qwen2_5_omni", "qwen2_5_omni_thinker", "qwen2_5_vl",
                                  "qwen3_omni_moe", "qwen3_omni_moe_thinker", "videollama2_qwen2"}
    assert families["minicpm_o"].hub_ids == ("openbmb/MiniCPM-o-2_6", "openbmb/MiniCPM-V-2_6")
    assert "Qwen/Qwen3-Omni-30B-A3B-Instruct" in families["qwen3_omni"].hub_ids


def test_an_unknown_model_type_names_the_supported_ones():
    with pytest.raises(ValueError, match="unknown architecture: model_type 'llava'.*videollama2_qwen2"):
        architecture_for("llava")


@pytest.mark.parametrize("cfg", [AVLLMConfig.tiny(), AVLLMConfig.tiny(audio=False), tiny_config(),
                                 qwen3_config_from_hf(qwen3_tiny_config_json(vocab_size=512)),
                                 minicpm_config_from_hf(minicpm_tiny_config_json(vocab_size=512)),
                                 minicpm_config_from_hf(minicpm_tiny_config_json(vocab_size=512, audio=False))],
                         ids=["omni", "vl", "videollama2", "qwen3_omni", "minicpm_o", "minicpm_v"])
def test_every_family_builds_through_the_generic_model(cfg):
    model = HookedAVLLM.from_config(cfg)
    assert model.architecture is architecture_for(cfg.architecture)
    assert sorted(model.encoders) == sorted(k for k in ("vision", "audio") if getattr(cfg, k) is not None)
    logits = model(torch.tensor([[1, 2, 3, 4]]))
    assert logits.shape == (1, 4, cfg.text.vocab_size)
    rows = model.compute_position_ids(torch.tensor([[1, 2, 3]]), None)[0].shape[0]
    assert rows == (1 if cfg.text.mrope_section is None else 3)


@pytest.mark.parametrize("cfg", [AVLLMConfig.tiny(), tiny_config(), qwen3_config_from_hf(qwen3_tiny_config_json(vocab_size=512)),
                                 minicpm_config_from_hf(minicpm_tiny_config_json(vocab_size=512))],
                         ids=["omni", "videollama2", "qwen3_omni", "minicpm_o"])
def test_bare_ids_padded_in_every_row_are_laid_out(cfg):
    """One row with left padding (every row of the batch padded): the layout keeps the given width."""
    model = HookedAVLLM.from_config(cfg).eval()
    with torch.no_grad():
        padded = model(torch.tensor([[0, 0, 5, 6, 7]]), attention_mask=torch.tensor([[0, 0, 1, 1, 1]]))
        alone = model(torch.tensor([[5, 6, 7]]))
    torch.testing.assert_close(padded[:, 2:], alone, rtol=1e-5, atol=1e-5)


def test_the_released_videollama2_config_names_its_siglip_without_shapes():
    release = {"model_type": "videollama2_qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
               "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
               "mm_vision_tower": "google/siglip-so400m-patch14-384", "mm_projector_type": "stc_connector_v35",
               "mm_hidden_size": 1152, "num_frames": 16}
    siglip = config_from_hf(release).vision.siglip
    assert (siglip.d_model, siglip.n_layers, siglip.image_size, siglip.patch_size, siglip.n_layers_run) == (1152, 27, 384, 14, 26)
    with pytest.raises(NotImplementedError, match="siglip-base-patch16-224.*vision_config"):
        config_from_hf({**release, "mm_vision_tower": "google/siglip-base-patch16-224"})


FAMILY_WORDS = re.compile(r"qwen|omni|videollama|beats|siglip|whisper|thinker|minicpm|resampler", re.I)


def code_without_docstrings(path: Path) -> str:
    """The module's code (names, strings, calls) with docstrings and comments left out."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


@pytest.mark.parametrize("path", ["hooked_avllm/model.py", "hooked_avllm/architectures/base.py",
                                  *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "hooked_avllm/analysis").glob("*.py"))])
def test_generic_code_never_names_a_family(path):
    named = [line.strip() for line in code_without_docstrings(ROOT / path).splitlines() if FAMILY_WORDS.search(line)]
    assert not named, f"{path} names a family: {named[:3]}"


def test_an_injection_adds_rows_after_its_layer():
    model = HookedAVLLM.from_config(AVLLMConfig.tiny())
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    llm = model.llm_inputs(ids)
    where = torch.tensor([[False, True, False, True, False]])
    rows = torch.randn(2, model.cfg.d_model)
    injected = model.run_decoder(**llm, injections=[Injection(0, where, rows)])

    def add(resid, hook):
        resid = resid.clone()
        resid[where] += rows
        return resid

    expected = model.run_with_hooks(ids, fwd_hooks=[("blocks.0.hook_resid_post", add)])
    assert (injected - expected).abs().max() < 1e-5
    with pytest.raises(ValueError, match="layer 7"):
        model.run_decoder(**llm, injections=[Injection(7, where, rows)])


def test_a_full_size_videollama2_checkpoint_maps_every_tensor():
    """The release's tensor names at VideoLLaMA2.1-7B-AV dimensions, on the meta device (no index
    of the release could be found; the names are the released code's modules)."""
    from videollama2_reference import REAL_DIMS, ReferenceVideoLLaMA2

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        reference = ReferenceVideoLLaMA2(**REAL_DIMS, randomize=False)
        cfg = config_from_hf(reference.config_json())
        model = HookedAVLLM(cfg)
    params = dict(model.named_parameters())
    covered = {name: 0 for name in params}
    state = reference.release_state_dict()
    for name, tensor in state.items():
        targets = videollama2_converter.tensor_targets(name, cfg)
        assert targets is not None, f"{name} is not mapped"
        for target in targets:
            param = params[target.param]
            rows = target.rows or (0, param.shape[0])
            assert tuple(tensor.reshape(target.shape).shape if target.shape else tensor.shape) == (rows[1] - rows[0], *param.shape[1:]), name
            covered[target.param] += rows[1] - rows[0]
    assert all(covered[n] == p.shape[0] for n, p in params.items()), [n for n, p in params.items() if covered[n] != p.shape[0]][:5]
    skipped = sorted(n for n in state if videollama2_converter.tensor_targets(n, cfg) == [])
    assert skipped == sorted(
        [f"model.vision_tower.vision_tower.vision_model.encoder.layers.26.{leaf}" for leaf in
         ("layer_norm1.bias", "layer_norm1.weight", "layer_norm2.bias", "layer_norm2.weight", "mlp.fc1.bias", "mlp.fc1.weight",
          "mlp.fc2.bias", "mlp.fc2.weight", "self_attn.k_proj.bias", "self_attn.k_proj.weight", "self_attn.out_proj.bias",
          "self_attn.out_proj.weight", "self_attn.q_proj.bias", "self_attn.q_proj.weight", "self_attn.v_proj.bias",
          "self_attn.v_proj.weight")]
        + [f"model.vision_tower.vision_tower.vision_model.{n}" for n in ("post_layernorm.bias", "post_layernorm.weight")]
        + [n for n in state if "relative_attention_bias" in n and not n.startswith("model.audio_tower.encoder.layers.0.")]
        + [n for n in state if ".head." in n]
    )
    assert model.cfg.vision.token_grid() == (8, 13, 13) and model.cfg.audio.beats.token_grid(2998) == (187, 8)


def test_a_family_can_inject_media_rows_after_a_decoder_layer(monkeypatch):
    """What Qwen3-Omni's DeepStack will do: ``encode_media`` returns ``"injections"`` (layer, kind,
    rows), which the forward adds after that layer at that kind's positions, at the prefill of
    generation, and in every copy of a patching sweep's batch."""
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from kits.videollama2 import videollama2_clip_inputs, videollama2_model

    from hooked_avllm.analysis import patching_sweep

    model = videollama2_model()
    inputs = videollama2_clip_inputs(model, audio_frames=160)
    n_video = int(inputs.layout.video.sum())
    rows = torch.randn(n_video, model.cfg.d_model, generator=torch.Generator().manual_seed(3))
    family = model.architecture
    plain_encode = type(family).encode_media

    def expected_logits():
        def add(resid, hook):
            resid = resid.clone()
            resid[inputs.layout.video] += rows
            return resid

        return model.run_with_hooks(inputs, fwd_hooks=[("blocks.0.hook_resid_post", add)])

    with torch.no_grad():
        expected = expected_logits()
        monkeypatch.setattr(type(family), "encode_media",
                            lambda self, m, media: {**plain_encode(self, m, media), "injections": [(0, "video", rows)]})
        assert (model(inputs) - expected).abs().max() < 1e-5
        assert "injections" in model.llm_inputs(inputs)
        tokens = model.generate(inputs, max_new_tokens=3, eos_token_id=[])
        assert tokens.shape[1] == inputs.input_ids.shape[1] + 3
    # patching a run into itself with the rows injected in every copy gives back the same run
    sweep = patching_sweep(model, inputs, inputs, lambda logits, _: logits[:, -1, 0], layers=[1],
                           components=["resid_pre"], progress=False)
    with torch.no_grad():
        injected = model(inputs)[:, -1, 0]
    assert (torch.as_tensor(sweep.values).flatten() - injected).abs().max() < 1e-4

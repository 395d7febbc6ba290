"""Rotary angles in bf16: our model computes them from exact float32 frequencies whatever its dtype,
as the released checkpoints run (``from_pretrained(torch_dtype=torch.bfloat16)`` leaves the
reference's ``inv_freq`` buffers in float32). A reference cast with ``.to(torch.bfloat16)`` rounds
them, and its error then grows with the position: the benches cast with
``bench/casting.py::cast_keeping_rotary_float32`` so the reference is the released model's numerics.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from casting import cast_keeping_rotary_float32  # noqa: E402

from hooked_avllm import HookedAVLLM  # noqa: E402
from hooked_avllm.architectures.qwen2_5_omni.config import config_from_hf  # noqa: E402
from hooked_avllm.loading import fill_from_named_tensors  # noqa: E402


VOCAB = 4096  # the unembedding is not what this test is about (bf16 GEMMs are slow on a CPU without bf16 units)


def small_thinker_json() -> dict:
    thinker = json.loads((ROOT / "bench/qwen2_5_omni_3b_thinker_config.json").read_text())
    thinker["text_config"].update(vocab_size=VOCAB, hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                                  intermediate_size=512, num_hidden_layers=2,
                                  rope_scaling={**thinker["text_config"]["rope_scaling"], "mrope_section": [8, 12, 12]})
    thinker["vision_config"].update(depth=1, out_hidden_size=256, hidden_size=64, embed_dim=64, num_heads=2,
                                    intermediate_size=128)
    thinker["audio_config"].update(encoder_layers=1, num_hidden_layers=1, output_dim=256, d_model=64,
                                   encoder_attention_heads=2, encoder_ffn_dim=128)
    return thinker


def test_bf16_error_grows_with_position_only_for_rounded_frequencies():
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    thinker = small_thinker_json()
    torch.manual_seed(0)
    reference = Qwen2_5OmniThinkerForConditionalGeneration(Qwen2_5OmniThinkerConfig(**thinker)).eval()
    text = torch.randint(0, VOCAB, (1, 1500), generator=torch.Generator().manual_seed(1))
    rounded = copy.deepcopy(reference).to(torch.bfloat16)  # what .to() does to the buffers
    cast_keeping_rotary_float32(reference)
    with torch.device("meta"):
        ours = HookedAVLLM(config_from_hf({**thinker, "model_type": "qwen2_5_omni_thinker"}))
    ours.to_empty(device="cpu")
    ours.to(torch.bfloat16)
    ours.tie_weights()
    fill_from_named_tensors(ours, ours.architecture.converter, reference.named_parameters(), "reference")
    with torch.no_grad():
        got = {"ours": ours(text).float(), "reference": reference(input_ids=text, use_cache=False).logits.float(),
               "rounded": rounded(input_ids=text, use_cache=False).logits.float()}
        truth = copy.deepcopy(reference).float()(input_ids=text, use_cache=False).logits  # inv_freq exact
    late = slice(1000, None)  # positions where rounded frequencies have drifted
    error = {name: float((x - truth)[:, late].abs().mean()) for name, x in got.items()}
    assert error["ours"] < 1.25 * error["reference"], error
    assert error["rounded"] > 1.05 * error["reference"], error  # 2 small layers: 1.1x; 11x at 3B size (36 layers, 2,841 positions)

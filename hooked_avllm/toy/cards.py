"""Model cards (README.md) of the shipped toy checkpoints, written from the training record."""

from __future__ import annotations

from hooked_avllm.toy.configs import toy_config
from hooked_avllm.toy.data import (
    FPS,
    FRAME_SIZE,
    N_FRAMES,
    OBJECTS,
    SAMPLING_RATE,
    SECONDS,
)
import torch

from hooked_avllm.model import HookedAVLLM

SOUND_SIGNATURES = {
    "barking": "harmonic bursts (~400 Hz, falling), about 3 per second",
    "meowing": "long harmonic tones gliding 500 -> 800 -> 420 Hz",
    "ringing": "struck inharmonic partials (~900 Hz x 1, 2.76, 5.4), slow decay",
    "rumbling": "low sawtooth (60-85 Hz) with a 8-12 Hz tremolo and low noise",
    "chirping": "short upward sweeps 3-4.6 kHz in groups",
    "drumming": "regular low thumps (pitch drop to 60 Hz) with a noise attack",
    "ticking": "short high-band clicks, tick-tock, ~4 per second",
    "beeping": "on/off tone (~1.1 kHz with odd harmonics), ~4 per second",
    "mooing": "one long low voiced tone (115-150 Hz, vibrato)",
    "whistling": "high pure tone (1.9-2.5 kHz) with vibrato",
}


def _param_counts(kind: str) -> dict[str, int]:
    with torch.device("meta"):
        model = HookedAVLLM(toy_config(kind))
    groups = {"LLM": 0, "vision tower + merger": 0, "audio tower + projector": 0}
    for name, p in model.named_parameters():
        if name.startswith(("vision.", "vision_proj.")):
            groups["vision tower + merger"] += p.numel()
        elif name.startswith(("audio.", "audio_proj.")):
            groups["audio tower + projector"] += p.numel()
        else:
            groups["LLM"] += p.numel()
    return {k: v for k, v in groups.items() if v}


def _mixture(stage: dict) -> str:
    total = sum(stage["mixture"].values())
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in stage["mixture"].items())


def model_card(kind: str, record: dict, results: str) -> str:
    cfg = toy_config(kind)
    config = record["config"]
    timings = record["timings"]
    t, v, a = cfg.text, cfg.vision, cfg.audio
    counts = _param_counts(kind)
    objects = "\n".join(
        f"| {o.name} | {o.shape} | rgb{o.colour} | {o.motion} | {o.sound} | {SOUND_SIGNATURES[o.sound]} |" for o in OBJECTS
    )
    title = (
        "toy Qwen2.5-Omni thinker (`qwen2_5_omni_thinker`)" if kind == "omni" else "toy Qwen2.5-VL base (`qwen2_5_vl`)"
    )
    role = (
        "The audio-visual model of the toy pair: the vision-language base in `../vl` plus an audio tower and projector, "
        "trained briefly on mostly congruent clips."
        if kind == "omni"
        else "The vision-language base of the toy pair (no audio tower), trained on video-only clips whose captions name "
        "the object's natural sound; `../omni` starts from it. Use it for the token-shift experiment (E4) as the study "
        "used Qwen2.5-VL for Qwen2.5-Omni."
    )
    audio_line = (
        f"- Audio tower (Whisper-style, chunked, 128 mel bins): {a.n_layers} layers, width {a.d_model}, {a.n_heads} heads, "
        f"FFN {a.d_mlp}, projector to {a.out_dim}.\n"
        if a is not None
        else ""
    )
    base, av = config["base"], config["av"]
    new_lr = f", audio tower and projector lr {av['new_module_lr']}" if av.get("new_module_lr") else ""
    return f"""# {title}

Part of the `hooked_avllm` toy model organism, shipped inside the package (`hooked_avllm/toy/checkpoints/{kind}`).
{role} Both load with `HookedAVLLM.from_pretrained(path)` and with the Hugging Face classes
(`Qwen2_5OmniThinkerForConditionalGeneration` / `Qwen2_5_VLForConditionalGeneration`); the tests check the logits agree
within 1e-4 (float32).

```python
from hooked_avllm.toy import ToyScenes, load_toy
model = load_toy("{kind}")
clip = ToyScenes(seed=1).clip("counterfactual", 0)          # an object with another object's sound
inputs = model.prepare(prompt="What do you hear?", **clip.media())
answer = model.generate(inputs, max_new_tokens=8)
logits, cache = model.run_with_cache(inputs)
cache["blocks.3.hook_resid_post"][cache.layout.{"audio" if kind == "omni" else "video"}]
```

## Architecture

The exact Qwen2.5-{"Omni thinker" if kind == "omni" else "VL"} architecture, scaled down ({sum(counts.values()):,} parameters:
{", ".join(f"{k} {n:,}" for k, n in counts.items())}).

- LLM (Qwen2.5): {t.n_layers} layers, width {t.d_model}, {t.n_heads} query / {t.n_kv_heads} key-value heads of {t.d_head},
  SwiGLU FFN {t.d_mlp}, M-RoPE sections {list(t.mrope_section)}, theta {t.rope_theta:g}, untied LM head, vocabulary {t.vocab_size}.
- Vision tower (Qwen2.5-VL ViT): {v.depth} layers, width {v.d_model}, {v.n_heads} heads, FFN {v.d_mlp}, patch 14, temporal patch 2,
  2x2 merger to {v.out_dim}, window 112 px, full attention in blocks {list(v.fullatt_block_indexes)}.
{audio_line}- Video positions advance {cfg.position_id_per_second:g} ids per second ({"TMRoPE" if kind == "omni" else "`tokens_per_second`"}), as in the real model.
- Tokenizer: word level (`tokenizers` WordLevel; words, punctuation and newlines are tokens), Qwen's special tokens at
  ids 240-253 in Qwen's order ({"Omni names: `<|AUDIO|>`, `<|VIDEO|>`, `<|vision_bos|>`" if kind == "omni" else "Qwen2.5-VL names: `<|video_pad|>`, `<|vision_start|>`"} ...), the released chat template,
  the default system prompt of `model.prepare`.
- Preprocessing (`preprocessor_config.json`): Whisper log-mel (16 kHz, n_fft 400, hop 160, 128 bins, 30 s window);
  pixel budgets that keep {FRAME_SIZE}x{FRAME_SIZE} frames at that size.

## Data (procedural, `hooked_avllm/toy/data.py`)

{len(OBJECTS)} objects, each with a colour, shape, motion and one natural sound; {SECONDS:g} s clips, {N_FRAMES} frames of
{FRAME_SIZE}x{FRAME_SIZE} at {FPS:g} fps (32 video tokens), {SAMPLING_RATE // 1000} kHz mono audio (50 audio tokens), audio
interleaved into the video (`use_audio_in_video`). Random position, size, colour jitter, motion phase, background and
noise per clip; random pitch, tempo, level and room noise per sound.

| object | shape | colour | motion | natural sound | sound signature |
|---|---|---|---|---|---|
{objects}

Questions and answers (one content word per modality): "What do you see?" -> "I see a dog.", "What do you hear?" ->
"I hear barking.", "Describe what you see and hear." -> "I see a dog and I hear barking.". Counterfactual clips
pair an object with another object's sound.

## Training (`python -m hooked_avllm.toy.train`, seed {config['seed']})

Both stages: AdamW (betas 0.9/0.98, weight decay 0.01 on matrices), warmup then cosine decay to 10%, gradient clipping
1.0, batch {base['batch_size']}, next-token cross entropy on the answer tokens (and `<|im_end|>`) only. Clips are drawn
from pools of {config['pool_per_class']} videos and {config['pool_per_class']} sounds per class (generator seed
{config['seed']}); evaluation clips come from seed 1000.

1. Vision-language base: {base['steps']} steps, lr {base['lr']}, video-only clips: {_mixture(base)}. Captions name the object's
   natural sound, so the base learns to guess sounds from pictures.
2. Audio-visual model: initialised from the base (LLM and vision tower), fresh audio tower and projector; {av['steps']} steps,
   lr {av['lr']}{new_lr}: {_mixture(av)}.

Measured on 2 shared CPU cores (torch threads 2): clip pools {timings.get('pool_seconds')} s, stage 1 {timings.get('base_seconds')} s,
stage 2 {timings.get('av_seconds')} s, evaluation {timings.get('eval_seconds')} s. The same command with the same seed
rebuilds these weights (`training_record.json` beside the two folders holds the full record, loss curves included).

## Measured behaviour (`python -m hooked_avllm.toy.evaluate`)

{results}

{reading(record)}

## Limitations

A toy: ten classes, templated answers, synthetic media, minutes of CPU training. It reproduces the
study's phenomenon and its training-history explanation in miniature; it says nothing about the size of the effect in
real models.
"""


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def reading(record: dict) -> str:
    """What the measured numbers say, in words (every number from the record)."""
    s = record["results"]["summary"]
    d = record["results"]["omni"].get("decodability")
    text = (
        f"Reading: the toy hears (audio-only \"What do you hear?\" {_pct(s['audio_only_hear_accuracy'])} correct), yet on "
        f"counterfactual clips {_pct(s['counterfactual_hear_visual_sound (bias)'])} of its \"What do you hear?\" answers name "
        f"the sound the *picture* suggests (chance {_pct(s['chance'])}) and only {_pct(s['counterfactual_hear_true_sound'])} the "
        "sound played: the sound its vision-language base learned to guess from the picture "
        f"({_pct(s['vl_hear_natural_sound'])} of the base's answers on silent video)."
    )
    if d:
        last = len(d["layers"]) - 1
        best_lens = max(range(len(d["layers"])), key=lambda i: d["lens_true_top1"][i])
        text += (
            f" The true sound stays linearly decodable from the audio positions at every layer "
            f"({_pct(min(d['probe_audio_true']))}-{_pct(max(d['probe_audio_true']))}) and from the last prompt position, where "
            f"the answer is read out ({_pct(d['probe_last_true'][last])} at the last layer); what changes with depth is that the "
            f"visible object's sound becomes decodable there too ({_pct(d['probe_last_visual'][1])} after layer 0, "
            f"{_pct(d['probe_last_visual'][last])} after the last layer) and wins the answer. The logit lens at the audio "
            f"positions decodes the true sound only weakly (at best {_pct(d['lens_true_top1'][best_lens])} at layer "
            f"{d['layers'][best_lens]}, chance {_pct(d['chance'])}): the toy's audio positions are not written in the "
            f"unembedding's terms, so use the probe; in the last layers the lens at the audio positions names the visible "
            f"object's sound instead ({_pct(d['lens_visual_top1'][last])} at layer {d['layers'][last]}), the video having "
            "been mixed into them."
        )
    return text

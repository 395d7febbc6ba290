"""Command line: ``hooked-avllm demo`` (also ``python -m hooked_avllm demo``).

Until the trained toy model ships, the demo builds a tiny random Qwen2.5-Omni thinker, runs a
synthetic clip with audio interleaved into video through ``run_with_cache``, and prints what the
library sees: hook counts per tower, the token layout, and the attention share per modality of the
last prompt position at every layer.
"""

from __future__ import annotations

import argparse
import sys

import torch


def synthetic_clip(model, seconds: int = 4, seed: int = 0) -> dict:
    """Token ids and media tensors of a ``seconds``-long clip (2 fps, 56x56 frames, audio inside)."""
    from hooked_avllm.inputs.interleave import audio_in_video_runs
    from hooked_avllm.towers.whisper_audio import audio_token_counts

    tok, cfg = model.cfg.tokens, model.cfg
    g = torch.Generator().manual_seed(seed)
    grid = [seconds, 4, 4]  # one frame group per second at 2 fps: 4x4 patches = 2x2 tokens
    frames = seconds * 100
    runs = audio_in_video_runs(grid, 1.0, audio_token_counts(frames), position_id_per_second=cfg.position_id_per_second,
                               seconds_per_chunk=cfg.seconds_per_chunk)
    body = [token for kind, count in runs for token in [tok.video if kind == "video" else tok.audio] * count]
    text = lambda n: torch.randint(0, 150, (n,), generator=g).tolist()  # noqa: E731
    ids = text(6) + [tok.vision_start, tok.audio_start] + body + [tok.audio_end, tok.vision_end] + text(5)
    return dict(
        input_ids=torch.tensor([ids]),
        pixel_values_videos=torch.randn(seconds * 16, cfg.vision.patch_dim, generator=g),
        video_grid_thw=torch.tensor([grid]),
        video_second_per_grid=torch.tensor([1.0]),
        input_features=torch.randn(1, cfg.audio.n_mels, frames, generator=g),
        feature_attention_mask=torch.ones(1, frames, dtype=torch.long),
        use_audio_in_video=True,
    )


def demo(args) -> int:
    from hooked_avllm import AVLLMConfig, HookedAVLLM

    if args.model:
        model = HookedAVLLM.from_pretrained(args.model)
    else:
        model = HookedAVLLM.from_config(AVLLMConfig.tiny(), seed=args.seed)
    inputs = synthetic_clip(model, seconds=args.seconds, seed=args.seed)
    with torch.no_grad():
        logits, cache = model.run_with_cache(**inputs, names_filter=lambda n: n.endswith("hook_pattern") and n.startswith("blocks"))
    ids = inputs["input_ids"][0]
    tok = model.cfg.tokens
    masks = {"audio": ids == tok.audio, "video": ids == tok.video}
    masks["text"] = ~(masks["audio"] | masks["video"])
    towers = {p: sum(1 for n in model.hook_dict if n.startswith(p)) for p in ("vision.", "vision_proj.", "audio.", "audio_proj.")}
    print(f"model: {model.cfg.architecture}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(model.hook_dict)} hook points ({', '.join(f'{k[:-1]}: {v}' for k, v in towers.items())})")
    print(f"clip: {args.seconds} s -> {int(masks['video'].sum())} video + {int(masks['audio'].sum())} audio tokens, "
          f"{ids.numel()} tokens in all; logits {tuple(logits.shape)}")
    print("attention share of the last prompt position (mean over heads):")
    print("layer  " + "  ".join(f"{m:>6}" for m in masks))
    for layer in range(model.cfg.n_layers):
        pattern = cache["pattern", layer][0, :, -1].float().mean(0)  # [key_pos]
        print(f"{layer:>5}  " + "  ".join(f"{float(pattern[m].sum()):6.3f}" for m in masks.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hooked-avllm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the library on a small local model")
    p.add_argument("--model", help="checkpoint folder or hub id (default: a tiny random thinker)")
    p.add_argument("--seconds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())

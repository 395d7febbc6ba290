"""Input preparation of a 10-second 448x448 clip with its sound track: ours against the Hugging
Face processor pipeline, timed side by side, and our video frames checked against
``Qwen2VLVideoProcessor`` (which needs torchvision: run this on the GPU machine).

    PYTHONPATH=. python bench/bench_prepare.py CHECKPOINT_FOLDER [--out results.json]

CHECKPOINT_FOLDER holds the real Qwen2.5-Omni tokenizer, chat template, preprocessor_config.json
and config.json (no weights needed), e.g. ``tests/fixtures/hub/Qwen__Qwen2.5-Omni-7B``.
Every stage runs in a try block: what fails is reported, the rest still runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hooked_avllm.architectures.qwen import PreprocessorConfig, load_video, prepare_inputs  # noqa: E402
from hooked_avllm.architectures.qwen.vision import video_patches  # noqa: E402
from hooked_avllm.loading import load_tokenizer_from  # noqa: E402
from test_inputs_support import encode_mp4  # noqa: E402

PROMPT = "Describe what you see and hear."
SECONDS, SOURCE_FPS, SIDE, AUDIO_RATE = 10, 25, 448, 48000


def synthetic_clip(seconds=SECONDS, fps=SOURCE_FPS, height=SIDE, width=SIDE, seed=0):
    """``[T, H, W, 3]`` uint8 frames (a gradient with a moving square and noise) and a stereo track."""
    rng = np.random.default_rng(seed)
    n = seconds * fps
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        frame = np.stack([(xx * 255 // width), (yy * 255 // height), np.full_like(xx, (i * 7) % 256)], -1)
        x0 = int((width - 80) * (0.5 + 0.5 * np.sin(i / fps)))
        frame[height // 3 : height // 3 + 80, x0 : x0 + 80] = (250, 40, 40)
        frames[i] = np.clip(frame + rng.integers(-8, 8, frame.shape), 0, 255)
    t = np.arange(seconds * AUDIO_RATE) / AUDIO_RATE
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    track = np.stack([tone, tone + 0.02 * rng.standard_normal(t.shape)]).astype(np.float32)
    return frames, track


def median_time(fn, repeats=5, warmup=1, sync=False):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(sorted(times)[len(times) // 2])


def mono16k(track):
    """Mix to mono and resample 48 kHz -> 16 kHz with our resampler (the same track both sides get)."""
    from hooked_avllm.inputs import load_audio

    return load_audio((track.mean(0), AUDIO_RATE)).waveform.numpy()


def stage(results, name, fn):
    try:
        results[name] = fn()
        print(f"[ok] {name}: {results[name]}", flush=True)
    except Exception as error:  # noqa: BLE001 - a benchmark reports and goes on
        results[name] = {"error": f"{type(error).__name__}: {error}"}
        traceback.print_exc()
        print(f"[failed] {name}: {error}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = args.folder
    tokenizer = load_tokenizer_from(folder)
    config = PreprocessorConfig.from_pretrained(folder)
    frames, track = synthetic_clip()
    sampled = frames[:: SOURCE_FPS // 2][: SECONDS * 2]  # 20 frames at 2 fps, what both pipelines feed the processor
    wave = mono16k(track)
    results: dict = {"clip": f"{SECONDS} s, {SIDE}x{SIDE}, {SOURCE_FPS} fps, stereo {AUDIO_RATE} Hz", "env": env()}
    tmp = Path(tempfile.mkdtemp())

    def ours_arrays():
        clip = load_video(sampled, config, audio=(wave, 16000))
        return prepare_inputs(tokenizer, config, folder, prompt=PROMPT, video=clip, use_audio_in_video=True)

    ours = ours_arrays()
    results["tokens"] = {
        "sequence": int(ours.input_ids.shape[1]),
        "video": int(ours.layout.video.sum()),
        "audio": int(ours.layout.audio.sum()),
        "video_grid_thw": ours.video_grid_thw.tolist(),
    }
    stage(results, "ours_from_arrays_s", lambda: median_time(ours_arrays))

    mp4 = tmp / "clip.mp4"
    stage(results, "mp4_written", lambda: str(encode_mp4(mp4, frames, SOURCE_FPS, track, AUDIO_RATE)))
    stage(
        results,
        "ours_from_mp4_s",
        lambda: median_time(
            lambda: prepare_inputs(tokenizer, config, folder, prompt=PROMPT, video=str(mp4), use_audio_in_video=True)
        ),
    )

    stage(results, "hf_processor", lambda: type(hf_processor(folder)).__name__)
    if isinstance(results["hf_processor"], str):
        hf_stages(results, hf_processor(folder), tokenizer, config, sampled, wave, mp4, ours)
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


def hf_processor(folder):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder)


def hf_stages(results, processor, tokenizer, config, sampled, wave, mp4, ours):
    """The Hugging Face pipeline from the same arrays and the same mp4, and the video processor check."""
    text = ours_text(tokenizer)

    def hf_arrays(device=None):
        kwargs = dict(text=[text], videos=[torch.from_numpy(sampled).permute(0, 3, 1, 2)], audio=[wave],
                      return_tensors="pt", use_audio_in_video=True)
        if device:
            kwargs["device"] = device
        return processor(**kwargs)

    stage(results, "hf_from_arrays_s", lambda: median_time(hf_arrays))
    stage(results, "hf_vs_ours_from_arrays", lambda: compare(hf_arrays(), ours))
    if torch.cuda.is_available():
        stage(results, "hf_from_arrays_cuda_video_s", lambda: median_time(lambda: hf_arrays("cuda"), sync=True))

    messages = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": [{"type": "video", "video": str(mp4)}, {"type": "text", "text": PROMPT}]},
    ]

    def hf_mp4():
        return processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
            load_audio_from_video=True, use_audio_in_video=True, fps=2.0,
        )

    stage(results, "hf_from_mp4_s", lambda: median_time(hf_mp4))
    stage(results, "hf_from_mp4_tokens", lambda: {k: list(v.shape) for k, v in hf_mp4().items() if hasattr(v, "shape")})

    stage(results, "video_processor_check", lambda: video_processor_check(processor.video_processor, config))


SYSTEM = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory and "
    "visual inputs, as well as generating text and speech."
)


def ours_text(tokenizer):
    """The chat text with one ``<|VIDEO|>`` placeholder, which the HF processor expands."""
    messages = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]},
    ]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def compare(hf, ours):
    out = {"input_ids_equal": bool(torch.equal(hf["input_ids"], ours.input_ids))}
    for name in ("pixel_values_videos", "input_features"):
        a, b = hf[name].float(), getattr(ours, name).float()
        out[name] = {"shapes": [list(a.shape), list(b.shape)], "max_abs_diff": float((a - b).abs().max()) if a.shape == b.shape else None}
    for name in ("video_grid_thw", "feature_attention_mask", "video_second_per_grid"):
        a, b = torch.as_tensor(hf[name]), getattr(ours, name)
        out[name + "_equal"] = bool(a.shape == b.shape and torch.allclose(a.float(), b.float()))
    return out


def video_processor_check(video_processor, config):
    """Our patches vs ``Qwen2VLVideoProcessor`` on frames that need no resize and on frames that do."""
    rng = np.random.default_rng(1)
    report = {}
    for name, (t, h, w) in {"448x448 (no resize)": (20, 448, 448), "360x640 (resized)": (20, 360, 640),
                            "1080x1920 (resized)": (8, 1080, 1920), "150x100 (upscaled)": (4, 150, 100)}.items():
        frames = rng.integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)
        smooth = torch.from_numpy(frames).float().permute(0, 3, 1, 2)
        smooth = torch.nn.functional.avg_pool2d(smooth, 5, stride=1, padding=2).round().to(torch.uint8)  # natural-ish
        for texture, pixels in (("noise", torch.from_numpy(frames).permute(0, 3, 1, 2)), ("smooth", smooth)):
            ours_values, ours_grid, _ = video_patches([load_video(pixels, config)], config)
            height, width = int(ours_grid[0, 1]) * 14, int(ours_grid[0, 2]) * 14
            entry = {"grid_ours": ours_grid[0].tolist()}
            from torchvision.transforms import InterpolationMode
            from torchvision.transforms.functional import resize

            # the reference pipeline (qwen-omni-utils) resizes uint8 frames with torchvision, then the
            # processor's own smart resize leaves the multiple-of-28 size as it is
            resized = resize(pixels, [height, width], interpolation=InterpolationMode.BICUBIC, antialias=True)
            for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
                start = time.perf_counter()
                hf = video_processor([resized], return_tensors="pt", device=device)
                elapsed = time.perf_counter() - start
                grid = hf["video_grid_thw"][0].tolist()
                diff = (hf["pixel_values_videos"].float().cpu() - ours_values).abs() if grid == entry["grid_ours"] else None
                level = 1.0 / 255.0 / max(config.image_std)  # the smallest normalised step of one uint8 level
                entry[device] = {
                    "grid_hf": grid,
                    "max_abs_diff": None if diff is None else float(diff.max()),
                    "mean_abs_diff": None if diff is None else float(diff.mean()),
                    "share_of_values_off_by_a_level_or_more": None if diff is None else float((diff > level / 2).float().mean()),
                    "seconds_hf": elapsed,
                }
            report[f"{name}, {texture}"] = entry
    return report


def env():
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError:
        out["torchvision"] = None
    return out


if __name__ == "__main__":
    main()

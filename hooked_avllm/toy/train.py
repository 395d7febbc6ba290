"""Train the two toy checkpoints: the vision-language base, then the audio-visual model from it.

    hooked-avllm train-toy                                # writes hooked_avllm_toy/{vl,omni}
    hooked-avllm train-toy --out /tmp/toy                 # elsewhere (a new or empty folder; --force for any)
    hooked-avllm train-toy --replace-shipped              # over the shipped hooked_avllm/toy/checkpoints

(``python -m hooked_avllm.toy.train`` takes the same options.)

Stage 1 (toy "Qwen2.5-VL"): video-only clips; the captions name the object's natural sound, so
the base learns to guess sounds from pictures. Stage 2 (toy "Qwen2.5-Omni thinker"): the base's
LLM and vision tower, plus a fresh audio tower and projector, trained briefly on mostly congruent
audio-visual clips, some audio-only clips and a few video-only clips. Loss: next-token cross
entropy on the answer tokens only (the answer and its ``<|im_end|>``); AdamW; every seed fixed.

Clips come from fixed pools (frames and log-mel features computed once): a training row pairs a
pooled video with a pooled sound of the class its kind asks for. Prompt token ids come from the
library's own ``prepare_inputs`` (once per prompt shape), so training sees exactly the sequences
``model.prepare`` builds.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hooked_avllm.model import HookedAVLLM
from hooked_avllm.architectures.qwen.prepare import prepare_inputs
from hooked_avllm.architectures.qwen.preprocessor_config import PreprocessorConfig
from hooked_avllm.architectures.qwen.vision import video_patches
from hooked_avllm.inputs.audio import audio_features
from hooked_avllm.toy import CHECKPOINTS
from hooked_avllm.toy.configs import toy_config
from hooked_avllm.toy.data import QUESTIONS, Clip, K, ToyScenes, answer
from hooked_avllm.toy.export import preprocessor_config, save_pretrained
from hooked_avllm.toy.tokenizer import EOS_ID, PAD_ID, save_tokenizer
from hooked_avllm.toy.evaluate import evaluate_checkpoints, write_cards



@dataclass
class StageConfig:
    """One training stage: a mixture of (clip kind, question) weights, steps and optimiser."""

    mixture: dict[str, float]  # "congruent:see" -> weight; kinds: congruent, audio_only, video_only
    steps: int
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    new_module_lr: float | None = None  # learning rate of the modules the base lacks (audio tower, projector)


@dataclass
class TrainConfig:
    seed: int = 0
    pool_per_class: int = 160  # pooled videos and sounds per class
    base: StageConfig = field(
        default_factory=lambda: StageConfig(
            mixture={"video_only:see": 1.0, "video_only:hear": 1.0, "video_only:describe": 1.0}, steps=600
        )
    )
    av: StageConfig = field(
        default_factory=lambda: StageConfig(
            mixture={
                "congruent:see": 0.15, "congruent:hear": 0.2, "congruent:describe": 0.2,
                "audio_only:hear": 0.3,
                "video_only:see": 0.05, "video_only:hear": 0.05, "video_only:describe": 0.05,
            },
            steps=500,
            lr=1e-3,
        )
    )


# ------------------------------------------------------------------------------------ data

class ClipPool:
    """``per_class`` videos (uint8 frames) and sounds (log-mel features) of every class."""

    def __init__(self, seed: int, per_class: int, preprocessor: PreprocessorConfig, audio: bool = True):
        scenes = ToyScenes(seed)
        n = per_class * K
        self.frames, self.video_class, self.mels, self.sound_class = [], [], [], []
        for i in range(n):
            clip = scenes.clip("video_only", i, visible=i % K)
            self.frames.append(torch.from_numpy(clip.frames))
            self.video_class.append(i % K)
        self.frames = torch.stack(self.frames)  # [n, T, H, W, 3] uint8
        self.video_class = torch.tensor(self.video_class)
        if audio:
            waves = [torch.from_numpy(scenes.clip("audio_only", i, sound=i % K).audio) for i in range(n)]
            mels = [audio_features(waves[s : s + 256], preprocessor, padding="longest").input_features for s in range(0, n, 256)]
            self.mels = torch.cat(mels)  # [n, n_mels, frames] float32
            self.sound_class = torch.tensor([i % K for i in range(n)])
        self.per_class = per_class

    def video(self, cls: int, rng: np.random.Generator) -> torch.Tensor:
        return self.frames[cls + K * int(rng.integers(self.per_class))]

    def mel(self, cls: int, rng: np.random.Generator) -> torch.Tensor:
        return self.mels[cls + K * int(rng.integers(self.per_class))]


class Batcher:
    """Builds training batches: prompt ids from ``prepare_inputs``, answer ids, media tensors."""

    def __init__(self, cfg, tokenizer, preprocessor: PreprocessorConfig, pool: ClipPool):
        self.cfg, self.tokenizer, self.preprocessor, self.pool = cfg, tokenizer, preprocessor, pool
        self.templates: dict[tuple[str, str], list[int]] = {}
        self.answers: dict[str, list[int]] = {}
        self.omni = cfg.audio is not None

    def prompt_ids(self, kind: str, question: str) -> list[int]:
        key = (kind, question)
        if key not in self.templates:
            clip = ToyScenes(0).clip(kind if self.omni else "video_only", 0)
            if not self.omni:
                media = {"video": clip.as_video(self.preprocessor)}
            else:
                media = clip.media(self.preprocessor)
            inputs = prepare_inputs(
                self.tokenizer, self.preprocessor, self.cfg, prompt=QUESTIONS[question], audio_padding="longest", **media
            )
            self.templates[key] = inputs.input_ids[0].tolist()
        return self.templates[key]

    def answer_ids(self, text: str) -> list[int]:
        if text not in self.answers:
            self.answers[text] = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + [EOS_ID]
        return self.answers[text]

    def batch(self, mixture: dict[str, float], size: int, rng: np.random.Generator) -> tuple[dict, torch.Tensor]:
        keys = list(mixture)
        weights = np.array([mixture[k] for k in keys], dtype=np.float64)
        picks = rng.choice(len(keys), size=size, p=weights / weights.sum())
        rows, labels, frames, mels = [], [], [], []
        for pick in picks:
            kind, question = keys[pick].split(":")
            cls = int(rng.integers(K))
            prompt = self.prompt_ids(kind, question)
            visible = None if kind == "audio_only" else cls
            heard = cls  # congruent and video-only captions name the object's natural sound
            text = _answer_text(question, visible, heard)
            target = self.answer_ids(text)
            rows.append(prompt + target)
            labels.append([-100] * len(prompt) + target)
            if visible is not None:
                frames.append(self.pool.video(cls, rng).numpy())
            if kind in ("congruent", "audio_only"):
                mels.append(self.pool.mel(cls, rng))
        longest = max(len(r) for r in rows)
        input_ids = torch.full((size, longest), PAD_ID, dtype=torch.long)
        attention_mask = torch.zeros((size, longest), dtype=torch.long)
        targets = torch.full((size, longest), -100, dtype=torch.long)
        for i, (row, lab) in enumerate(zip(rows, labels)):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention_mask[i, : len(row)] = 1
            targets[i, : len(lab)] = torch.tensor(lab)
        kwargs: dict = {"input_ids": input_ids, "attention_mask": attention_mask}
        if frames:
            pixels, grid, seconds = video_patches(frames, self.preprocessor)
            kwargs.update(pixel_values_videos=pixels, video_grid_thw=grid, video_second_per_grid=seconds)
        if mels:
            features = torch.stack(mels).float()
            kwargs.update(
                input_features=features,
                feature_attention_mask=torch.ones(features.shape[0], features.shape[-1], dtype=torch.long),
                use_audio_in_video=True,
            )
        return kwargs, targets


def _answer_text(question: str, visible: int | None, heard: int) -> str:
    return answer(question, Clip("congruent", None, None, visible, heard))


# ------------------------------------------------------------------------------------ training

def answer_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy over the answer tokens (targets shifted by one)."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1), ignore_index=-100)


def train_stage(model, batcher: Batcher, stage: StageConfig, seed: int, log_every: int = 50, name: str = "") -> list[dict]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    groups = []
    for new in (False, True):
        lr = stage.new_module_lr if new and stage.new_module_lr is not None else stage.lr
        named = [(n, p) for n, p in model.named_parameters() if n.startswith(("audio.", "audio_proj.")) == new]
        groups.append({"params": [p for n, p in named if p.ndim >= 2], "weight_decay": stage.weight_decay, "lr": lr})
        groups.append({"params": [p for n, p in named if p.ndim < 2], "weight_decay": 0.0, "lr": lr})
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=stage.lr, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < stage.warmup:
            return (step + 1) / stage.warmup
        progress = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    history, running, start = [], [], time.time()
    for step in range(stage.steps):
        kwargs, targets = batcher.batch(stage.mixture, stage.batch_size, rng)
        logits = model(**kwargs)
        loss = answer_loss(logits, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), stage.clip_norm)
        opt.step()
        sched.step()
        running.append(loss.item())
        if (step + 1) % log_every == 0 or step == stage.steps - 1:
            entry = {"step": step + 1, "loss": float(np.mean(running)), "seconds": round(time.time() - start, 1)}
            history.append(entry)
            print(f"[{name}] step {entry['step']:5d}  loss {entry['loss']:.4f}  {entry['seconds']:.0f}s", flush=True)
            running = []
    model.eval()
    return history


def init_from_base(omni, base) -> None:
    """Copy the base's LLM and vision tower into the audio-visual model (same parameter names)."""
    ours = dict(omni.named_parameters())
    with torch.no_grad():
        for name, param in base.named_parameters():
            ours[name].copy_(param)


def load_tokenizer(kind: str):
    """The ``transformers`` tokenizer built from the same files the checkpoints ship."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix=f"toy_tokenizer_{kind}_") as folder:
        save_tokenizer(folder, kind)
        return AutoTokenizer.from_pretrained(folder)


DEFAULT_OUT = "hooked_avllm_toy"  # a new folder: the shipped checkpoints are replaced only when asked


def train(
    out: str | Path = DEFAULT_OUT, config: TrainConfig | None = None, evaluate_after: bool = True, base_from: str | Path | None = None
) -> dict:
    """Train both stages, save ``out/vl`` and ``out/omni``, evaluate, write the model cards.

    ``base_from``: a saved vision-language base to start stage 2 from (stage 1 is skipped).
    """
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    out = Path(out)
    preprocessor = PreprocessorConfig.from_dict(preprocessor_config(audio=True))
    timings = {}

    start = time.time()
    pool = ClipPool(config.seed, config.pool_per_class, preprocessor)
    timings["pool_seconds"] = round(time.time() - start, 1)
    print(f"pool: {len(pool.frames)} videos, {len(pool.mels)} sounds in {timings['pool_seconds']}s", flush=True)

    start = time.time()
    if base_from is None:
        base = HookedAVLLM.from_config(toy_config("vl"), seed=config.seed)
        base_batcher = Batcher(base.cfg, load_tokenizer("vl"), preprocessor, pool)
        base_history = train_stage(base, base_batcher, config.base, seed=config.seed + 1, name="vl")
    else:
        base = HookedAVLLM.from_pretrained(base_from, load_tokenizer=False)
        base_history = json.loads((Path(base_from).parent / "training_record.json").read_text())["history"]["vl"]
    timings["base_seconds"] = round(time.time() - start, 1)

    start = time.time()
    omni = HookedAVLLM.from_config(toy_config("omni"), seed=config.seed + 2)
    init_from_base(omni, base)
    omni_batcher = Batcher(omni.cfg, load_tokenizer("omni"), preprocessor, pool)
    omni_history = train_stage(omni, omni_batcher, config.av, seed=config.seed + 3, name="omni")
    timings["av_seconds"] = round(time.time() - start, 1)

    save_pretrained(base, out / "vl")
    save_pretrained(omni, out / "omni")
    record = {"config": asdict(config), "timings": timings, "history": {"vl": base_history, "omni": omni_history}}
    if evaluate_after:

        start = time.time()
        results = evaluate_checkpoints(out)
        timings["eval_seconds"] = round(time.time() - start, 1)
        record["results"] = results
        write_cards(out, record)
    (out / "training_record.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


# ------------------------------------------------------------------------------------ command line

MIXTURE_KINDS = ("congruent", "audio_only", "video_only")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hooked-avllm train-toy`` (and ``python -m hooked_avllm.toy.train``); see :func:`checked_arguments`."""
    where = parser.add_argument_group("where the checkpoints go")
    where.add_argument("--out", type=Path, default=None, metavar="FOLDER",
                       help=f"folder for vl/, omni/ and training_record.json, new or empty (default: ./{DEFAULT_OUT})")
    where.add_argument("--force", action="store_true", help="write into --out even if it holds files (they may be replaced)")
    where.add_argument("--replace-shipped", action="store_true",
                       help=f"write over the checkpoints shipped with the library ({CHECKPOINTS}) instead of --out")
    how = parser.add_argument_group("training")
    how.add_argument("--seed", type=int, default=0, help="seed of the clip pools, the weights and the batches (default: %(default)s)")
    how.add_argument("--base-steps", type=int, default=None, metavar="N",
                     help=f"optimiser steps of stage 1, the vision-language base (default: {TrainConfig().base.steps})")
    how.add_argument("--av-steps", type=int, default=None, metavar="N",
                     help=f"optimiser steps of stage 2, the audio-visual model (default: {TrainConfig().av.steps})")
    how.add_argument("--av-mixture", default=None, metavar="JSON",
                     help='stage 2 clip mixture as JSON weights of "kind:question", kind one of '
                          f'{", ".join(MIXTURE_KINDS)} and question one of {", ".join(QUESTIONS)}, e.g. '
                          '\'{"congruent:hear": 0.5, "audio_only:hear": 0.5}\' (default: the shipped mixture)')
    how.add_argument("--av-lr", type=float, default=None, metavar="LR",
                     help=f"stage 2 learning rate (default: {TrainConfig().av.lr})")
    how.add_argument("--av-new-lr", type=float, default=None, metavar="LR",
                     help="stage 2 learning rate of the audio tower and projector (default: --av-lr)")
    how.add_argument("--base-from", type=Path, default=None, metavar="FOLDER",
                     help="start stage 2 from this saved base (a vl/ folder beside a training_record.json); skips stage 1")
    how.add_argument("--threads", type=int, default=2, help="CPU threads (default: %(default)s)")
    how.add_argument("--no-eval", action="store_true", help="skip the evaluation and the model cards")


def _at_least(args: argparse.Namespace, name: str, low: int) -> None:
    value = getattr(args, name.lstrip("-").replace("-", "_"))
    if value is not None and value < low:
        raise ValueError(f"argument {name}: must be at least {low}, got {value}")


def _positive(args: argparse.Namespace, name: str) -> None:
    value = getattr(args, name.lstrip("-").replace("-", "_"))
    if value is not None and not 0 < value < math.inf:
        raise ValueError(f"argument {name}: must be a finite number above 0, got {value}")


def parse_mixture(text: str) -> dict[str, float]:
    """``--av-mixture``'s JSON as ``{"kind:question": weight}``; a ValueError naming what is wrong.

    Example:
        >>> parse_mixture('{"congruent:hear": 1}')
        {'congruent:hear': 1.0}
    """
    try:
        mixture = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"argument --av-mixture: not valid JSON ({error.msg} at character {error.pos}): {text!r}") from None
    if not isinstance(mixture, dict) or not mixture:
        raise ValueError(f'argument --av-mixture: expected a JSON object of weights such as {{"congruent:hear": 1}}, got {text!r}')
    for key, weight in mixture.items():
        kind, _, question = key.partition(":")
        if kind not in MIXTURE_KINDS or question not in QUESTIONS:
            raise ValueError(f"argument --av-mixture: {key!r} is not kind:question with kind one of {MIXTURE_KINDS} "
                             f"and question one of {tuple(QUESTIONS)}")
        if kind == "audio_only" and question == "see":
            raise ValueError("argument --av-mixture: 'audio_only:see' asks what a clip without a picture shows; "
                             "audio-only clips take hear or describe")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
            raise ValueError(f"argument --av-mixture: the weight of {key!r} must be a number above 0, got {weight!r}")
    return {key: float(weight) for key, weight in mixture.items()}


def checked_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """The parsed options checked before anything trains: ``ValueError`` for a bad value or
    combination, ``FileExistsError``/``FileNotFoundError`` for a folder in the way or missing.
    Fills ``args.out`` (the shipped folder with ``--replace-shipped``) and ``args.mixture``."""
    for name, low in (("--seed", 0), ("--base-steps", 1), ("--av-steps", 1), ("--threads", 1)):
        _at_least(args, name, low)
    for name in ("--av-lr", "--av-new-lr"):
        _positive(args, name)
    args.mixture = None if args.av_mixture is None else parse_mixture(args.av_mixture)
    if args.base_from is not None and args.base_steps is not None:
        raise ValueError("argument --base-steps: stage 1 is skipped with --base-from; drop one of them")
    if args.replace_shipped and args.out is not None:
        raise ValueError("argument --out: not allowed with --replace-shipped, which writes to the shipped checkpoints")
    shipped = CHECKPOINTS.resolve()
    out = CHECKPOINTS if args.replace_shipped else Path(args.out or DEFAULT_OUT).expanduser()
    if not args.replace_shipped and (out.resolve() == shipped or shipped in out.resolve().parents):
        raise ValueError(f"argument --out: {str(out)!r} is the shipped checkpoints' folder; pass --replace-shipped "
                         "to retrain them in place, or a new folder")
    if out.is_dir() and any(out.iterdir()) and not (args.force or args.replace_shipped):
        raise FileExistsError(f"argument --out: {str(out)!r} exists and holds files; pass a new folder, or --force to "
                              "write into it")
    if args.base_from is not None:
        base = args.base_from.expanduser()
        if not (base / "config.json").is_file():
            raise FileNotFoundError(f"argument --base-from: {str(base)!r} is not a saved base (no config.json there); "
                                    "pass the vl/ folder of an earlier run")
        if not (base.parent / "training_record.json").is_file():
            raise FileNotFoundError(f"argument --base-from: no training_record.json beside {str(base)!r}; pass the vl/ "
                                    "folder of an earlier run's output")
    args.out = out
    return args


def run(args: argparse.Namespace) -> int:
    """Train with checked options (:func:`checked_arguments`) and print the summary."""
    torch.set_num_threads(args.threads)
    config = TrainConfig(seed=args.seed)
    if args.base_steps is not None:
        config.base.steps = args.base_steps
    if args.av_steps is not None:
        config.av.steps = args.av_steps
    if args.mixture is not None:
        config.av.mixture = args.mixture
    if args.av_lr is not None:
        config.av.lr = args.av_lr
    if args.av_new_lr is not None:
        config.av.new_module_lr = args.av_new_lr
    start = time.time()
    record = train(args.out, config, evaluate_after=not args.no_eval, base_from=args.base_from)
    print(f"done in {time.time() - start:.0f}s; checkpoints in {args.out}")
    if "results" in record:
        print(json.dumps(record["results"]["summary"], indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m hooked_avllm.toy.train``: the same options as ``hooked-avllm train-toy``."""
    parser = argparse.ArgumentParser(prog="python -m hooked_avllm.toy.train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        args = checked_arguments(args)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())

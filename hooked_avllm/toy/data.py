"""Procedural audio-visual scenes for the toy model organism (numpy only, every clip seeded).

K = 10 objects, each a distinct colour, shape and motion drawn on 112x112 frames (2 s at 2 fps: 4
frames), each with one natural sound; 10 sound classes, each a distinct synthetic signature
(pitch, harmonics, rhythm, noise band) on a 2 s, 16 kHz waveform. A clip is:

* ``congruent``: an object with its natural sound;
* ``counterfactual``: an object with another object's sound (the study's conflicting clips);
* ``audio_only`` / ``video_only``: one modality.

Questions and answers are templated with one content word per modality, so answers are scored
exactly: "What do you see?" -> "I see a dog.", "What do you hear?" -> "I hear barking.",
"Describe what you see and hear." -> "I see a dog and I hear barking.".

Example:
    >>> scenes = ToyScenes(seed=0)
    >>> clip = scenes.clip("counterfactual", 3)
    >>> clip.frames.shape, clip.audio.shape, clip.visible != clip.sound
    ((4, 112, 112, 3), (32000,), True)
    >>> clip.visible_name, clip.sound_word, clip.implied_sound_word
    ('cat', 'barking', 'meowing')
    >>> answer("hear", clip)  # the truth about the audio track
    'I hear barking.'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from hooked_avllm.architectures.qwen.preprocessor_config import PreprocessorConfig
from hooked_avllm.architectures.qwen.vision import load_video

SAMPLING_RATE = 16000
SECONDS = 2.0
FPS = 2.0
FRAME_SIZE = 112
N_FRAMES = int(SECONDS * FPS)
N_SAMPLES = int(SECONDS * SAMPLING_RATE)

ClipKind = Literal["congruent", "counterfactual", "audio_only", "video_only"]
CLIP_KINDS: tuple[ClipKind, ...] = ("congruent", "counterfactual", "audio_only", "video_only")
Question = Literal["see", "hear", "describe"]
QUESTIONS: dict[str, str] = {
    "see": "What do you see?",
    "hear": "What do you hear?",
    "describe": "Describe what you see and hear.",
}


@dataclass(frozen=True)
class ToyObject:
    """One object class: how it looks and moves, and its natural sound."""

    name: str
    sound: str
    colour: tuple[int, int, int]
    shape: str
    motion: str


OBJECTS: tuple[ToyObject, ...] = (
    ToyObject("dog", "barking", (235, 125, 30), "circle", "bounce"),
    ToyObject("cat", "meowing", (160, 160, 170), "triangle", "sway"),
    ToyObject("bell", "ringing", (245, 215, 40), "diamond", "swing"),
    ToyObject("car", "rumbling", (220, 30, 35), "wide", "slide"),
    ToyObject("bird", "chirping", (40, 200, 230), "star", "flutter"),
    ToyObject("drum", "drumming", (150, 50, 200), "square", "pulse"),
    ToyObject("clock", "ticking", (250, 250, 250), "ring", "rotate"),
    ToyObject("phone", "beeping", (40, 190, 60), "bar", "shake"),
    ToyObject("cow", "mooing", (130, 80, 40), "cross", "drift"),
    ToyObject("kettle", "whistling", (245, 110, 180), "semicircle", "rise"),
)
K = len(OBJECTS)
OBJECT_WORDS: tuple[str, ...] = tuple(o.name for o in OBJECTS)
SOUND_WORDS: tuple[str, ...] = tuple(o.sound for o in OBJECTS)
KIND_CODES = {kind: i for i, kind in enumerate(CLIP_KINDS)}


@dataclass
class Clip:
    """One scene: frames ``[T, H, W, 3]`` uint8 and/or a mono 16 kHz waveform, with its labels.

    ``visible`` is the object class shown (``None`` without video), ``sound`` the class of the
    sound played (``None`` without audio).
    """

    kind: ClipKind
    frames: np.ndarray | None
    audio: np.ndarray | None
    visible: int | None
    sound: int | None

    @property
    def visible_name(self) -> str | None:
        return None if self.visible is None else OBJECTS[self.visible].name

    @property
    def sound_word(self) -> str | None:
        return None if self.sound is None else OBJECTS[self.sound].sound

    @property
    def implied_sound_word(self) -> str | None:
        """The visible object's natural sound (what the picture suggests one hears)."""
        return None if self.visible is None else OBJECTS[self.visible].sound

    def as_video(self, preprocessor=None):
        """The frames with the sound track attached, ready for ``model.prepare(video=...)``.

        Frames are sized by ``preprocessor`` (a ``PreprocessorConfig``; default: the toy
        checkpoints' own, which keeps them 112x112).
        """
        if self.frames is None:
            raise ValueError(f"a {self.kind} clip has no frames")
        audio = None if self.audio is None else (self.audio, SAMPLING_RATE)
        return load_video(self.frames, preprocessor or toy_preprocessor(), fps=FPS, audio=audio)

    def media(self, preprocessor=None) -> dict:
        """Keyword arguments of ``model.prepare`` for this clip (audio inside the video when both)."""
        if self.frames is None:
            return {"audio": (self.audio, SAMPLING_RATE)}
        return {"video": self.as_video(preprocessor), "use_audio_in_video": self.audio is not None}


def preprocessor_config(audio: bool) -> dict:
    """Qwen2.5-Omni's preprocessor settings with pixel budgets that keep the toy's 112x112 frames at that size and
    Whisper's 30 s feature window (the toy clips last 2 s; the real model pads to 300 s)."""
    config = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "min_pixels": 28 * 28,
        "max_pixels": FRAME_SIZE * FRAME_SIZE,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "video_fps": 2.0,
        "video_min_frames": 4,
        "video_max_frames": 768,
        "video_min_pixels": 28 * 28,
        "video_max_pixels": FRAME_SIZE * FRAME_SIZE,
        "processor_class": "Qwen2_5_VLProcessor",
    }
    if audio:
        config.update(
            {
                "feature_extractor_type": "WhisperFeatureExtractor",
                "feature_size": 128,
                "sampling_rate": 16000,
                "hop_length": 160,
                "n_fft": 400,
                "chunk_length": 30,
                "n_samples": 480000,
                "nb_max_frames": 3000,
                "dither": 0.0,
                "padding_side": "right",
                "padding_value": 0.0,
                "return_attention_mask": True,
                "processor_class": "Qwen2_5OmniProcessor",
            }
        )
    return config


def toy_preprocessor() -> PreprocessorConfig:
    """The toy checkpoints' preprocessing settings (Whisper features, 112x112 frames)."""
    return PreprocessorConfig.from_dict(preprocessor_config(audio=True))


def answer(question: Question, clip: Clip, *, sound: int | None = None) -> str:
    """The templated answer. ``sound`` overrides the heard class (video-only captions name the
    visible object's natural sound, as web video captions do)."""
    heard = clip.sound if sound is None else sound
    heard_word = OBJECTS[heard].sound if heard is not None else None
    if question == "see":
        return f"I see a {clip.visible_name}."
    if question == "hear":
        return f"I hear {heard_word}."
    if clip.visible is None:
        return f"I hear {heard_word}."
    return f"I see a {clip.visible_name} and I hear {heard_word}."


def parse_answer(text: str) -> tuple[str | None, str | None]:
    """The first object word and the first sound word of a generated answer (``None`` if absent)."""
    words = [w.strip(".,?!").lower() for w in text.split()]
    seen = next((w for w in words if w in OBJECT_WORDS), None)
    heard = next((w for w in words if w in SOUND_WORDS), None)
    return seen, heard


class ToyScenes:
    """Deterministic clip factory: ``clip(kind, index)`` depends only on ``(seed, kind, index)``.

    Example:
        >>> a, b = ToyScenes(1).clip("congruent", 5), ToyScenes(1).clip("congruent", 5)
        >>> bool((a.frames == b.frames).all() and (a.audio == b.audio).all())
        True
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def rng(self, kind: str, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, KIND_CODES[kind], int(index)])

    def clip(self, kind: ClipKind, index: int, visible: int | None = None, sound: int | None = None) -> Clip:
        """The ``index``-th clip of ``kind``; ``visible``/``sound`` force the classes."""
        if kind not in KIND_CODES:
            raise ValueError(f"kind must be one of {CLIP_KINDS}, got {kind!r}")
        rng = self.rng(kind, index)
        a = int(rng.integers(K)) if visible is None else int(visible)
        if kind == "counterfactual":
            b = int((a + 1 + rng.integers(K - 1)) % K) if sound is None else int(sound)
            if b == a:
                raise ValueError("a counterfactual clip needs a sound of another object")
        else:
            b = a if sound is None else int(sound)
        frames = render_frames(a, rng) if kind != "audio_only" else None
        audio = synth_sound(b, rng) if kind != "video_only" else None
        if kind == "audio_only":
            a = None
        if kind == "video_only":
            b = None
        return Clip(kind, frames, audio, a, b)


# ---------------------------------------------------------------------------------- pictures

def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    dist = np.hypot(dx, dy)
    if shape == "circle":
        return dist < r
    if shape == "triangle":
        return (dy < r * 0.8) & (dy > -r) & (np.abs(dx) < (dy + r) * 0.6)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) < r * 1.1
    if shape == "wide":
        return (np.abs(dx) < r * 1.3) & (np.abs(dy) < r * 0.55)
    if shape == "star":
        theta = np.arctan2(dy, dx)
        return dist < r * (0.6 + 0.4 * np.cos(5 * theta))
    if shape == "square":
        return (np.abs(dx) < r * 0.85) & (np.abs(dy) < r * 0.85)
    if shape == "ring":
        return (dist < r) & (dist > r * 0.6) | ((np.abs(dy) < 1.2) & (dx > 0) & (dx < r * 0.7))
    if shape == "bar":
        return (np.abs(dx) < r * 0.45) & (np.abs(dy) < r * 1.15)
    if shape == "cross":
        return ((np.abs(dx) < r * 0.33) & (np.abs(dy) < r)) | ((np.abs(dy) < r * 0.33) & (np.abs(dx) < r))
    if shape == "semicircle":
        return (dist < r * 1.1) & (dy > -r * 0.15)
    raise ValueError(f"unknown shape {shape!r}")


def _pose(motion: str, t: float, rng_params: dict) -> tuple[float, float, float, float]:
    """(dx, dy, scale, angle) of the object at time ``t`` seconds for a motion."""
    a, f, phase = rng_params["amp"], rng_params["freq"], rng_params["phase"]
    w = 2 * np.pi * f * t + phase
    if motion == "bounce":
        return 0.0, -a * abs(np.sin(w)), 1.0, 0.0
    if motion == "sway":
        return 0.0, 0.0, 1.0, 0.5 * np.sin(w)
    if motion == "swing":
        return a * 0.6 * np.sin(w), 0.0, 1.0, 0.6 * np.sin(w)
    if motion == "slide":
        return a * np.sin(w), 0.0, 1.0, 0.0
    if motion == "flutter":
        return a * 0.5 * np.sin(2 * w), a * 0.7 * np.cos(w), 1.0, 0.0
    if motion == "pulse":
        return 0.0, 0.0, 1.0 + 0.3 * np.sin(w), 0.0
    if motion == "rotate":
        return 0.0, 0.0, 1.0, w
    if motion == "shake":
        jitter = rng_params["jitter"][round(t * FPS) % len(rng_params["jitter"])]
        return float(jitter[0]), float(jitter[1]), 1.0, 0.0
    if motion == "drift":
        return a * (t / SECONDS - 0.5), a * 0.5 * (t / SECONDS - 0.5), 1.0, 0.0
    if motion == "rise":
        return 0.0, -a * (t / SECONDS - 0.5) * 1.5, 1.0, 0.0
    raise ValueError(f"unknown motion {motion!r}")


def render_frames(obj: int, rng: np.random.Generator) -> np.ndarray:
    """``N_FRAMES`` frames ``[T, FRAME_SIZE, FRAME_SIZE, 3]`` uint8 of object ``obj`` on a noisy dark background."""
    spec = OBJECTS[obj]
    size = FRAME_SIZE
    background = rng.uniform(10, 70, size=3)
    colour = np.clip(np.array(spec.colour, dtype=np.float64) + rng.normal(0, 12, size=3), 0, 255)
    unit = size / 56  # shapes and motions are drawn in units of a 56-pixel frame
    radius = rng.uniform(8.5, 12.5) * unit
    margin = radius * 1.3 + 4 * unit
    cx, cy = rng.uniform(margin, size - margin, size=2)
    params = {
        "amp": rng.uniform(4, 8),
        "freq": rng.uniform(0.4, 0.8),
        "phase": rng.uniform(0, 2 * np.pi),
        "jitter": rng.uniform(-3, 3, size=(N_FRAMES, 2)),
    }
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    frames = np.empty((N_FRAMES, size, size, 3), dtype=np.uint8)
    for i in range(N_FRAMES):
        t = i / FPS
        ox, oy, scale, angle = _pose(spec.motion, t, params)
        ox, oy = ox * unit, oy * unit
        dx, dy = xx - (cx + ox), yy - (cy + oy)
        ca, sa = np.cos(angle), np.sin(angle)
        rx, ry = ca * dx + sa * dy, -sa * dx + ca * dy
        mask = _shape_mask(spec.shape, rx, ry, radius * scale)
        image = np.broadcast_to(background, (size, size, 3)).copy()
        image[mask] = colour
        image += rng.normal(0, 6, size=image.shape)
        frames[i] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return frames


# ---------------------------------------------------------------------------------- sounds

def _envelope(n: int, attack: float, decay: float) -> np.ndarray:
    t = np.arange(n) / SAMPLING_RATE
    return np.minimum(1.0, t / max(attack, 1e-4)) * np.exp(-t / decay)


def _place(out: np.ndarray, start: float, event: np.ndarray) -> None:
    i = int(start * SAMPLING_RATE)
    if i >= len(out):
        return
    n = min(len(event), len(out) - i)
    out[i : i + n] += event[:n]


def _harmonic(f0: np.ndarray, n_harmonics: int, rolloff: float) -> np.ndarray:
    """A harmonic tone following the instantaneous pitch ``f0`` (Hz per sample)."""
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLING_RATE
    return sum(np.sin(k * phase) * rolloff ** (k - 1) for k in range(1, n_harmonics + 1))


def _bandpass_noise(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLING_RATE)
    spectrum[(freqs < low) | (freqs > high)] = 0
    noise = np.fft.irfft(spectrum, n)
    return noise / (np.abs(noise).max() + 1e-9)


def synth_sound(cls: int, rng: np.random.Generator) -> np.ndarray:
    """A 2 s, 16 kHz float32 waveform of sound class ``cls`` (the sound of ``OBJECTS[cls]``)."""
    n = N_SAMPLES
    t = np.arange(n) / SAMPLING_RATE
    out = np.zeros(n)
    word = OBJECTS[cls].sound
    jitter = rng.uniform(0.9, 1.1)  # pitch / tempo variation of this clip
    if word == "barking":  # harmonic bursts, ~3 per second, falling pitch
        start = rng.uniform(0.0, 0.3)
        while start < SECONDS - 0.1:
            length = rng.uniform(0.12, 0.2)
            m = int(length * SAMPLING_RATE)
            f0 = np.linspace(480, 330, m) * jitter
            bark = _harmonic(f0, 6, 0.7) + 0.3 * rng.normal(size=m)
            _place(out, start, bark * _envelope(m, 0.01, length / 2.5))
            start += length + rng.uniform(0.15, 0.4)
    elif word == "meowing":  # long gliding harmonic tones
        start = rng.uniform(0.0, 0.3)
        while start < SECONDS - 0.3:
            length = rng.uniform(0.55, 0.8)
            m = int(length * SAMPLING_RATE)
            u = np.linspace(0, 1, m)
            f0 = (500 + 300 * np.sin(np.pi * u) - 80 * u) * jitter
            _place(out, start, _harmonic(f0, 4, 0.5) * np.sin(np.pi * u) ** 0.5)
            start += length + rng.uniform(0.15, 0.4)
    elif word == "ringing":  # struck inharmonic partials, slow decay
        f0 = rng.uniform(850, 1000)
        start = rng.uniform(0.0, 0.2)
        while start < SECONDS - 0.05:
            m = int(0.8 * SAMPLING_RATE)
            u = np.arange(m) / SAMPLING_RATE
            strike = sum(a * np.sin(2 * np.pi * f0 * p * u) for p, a in ((1, 1.0), (2.76, 0.6), (5.4, 0.35)))
            _place(out, start, strike * _envelope(m, 0.002, 0.3))
            start += rng.uniform(0.5, 0.75)
    elif word == "rumbling":  # low sawtooth engine with a fast tremolo
        f0 = rng.uniform(60, 85) * np.ones(n) * (1 + 0.03 * np.sin(2 * np.pi * 0.7 * t))
        saw = _harmonic(f0, 12, 0.85)
        out = saw * (0.75 + 0.25 * np.sin(2 * np.pi * rng.uniform(8, 12) * t)) + 0.2 * _bandpass_noise(rng, n, 50, 400)
    elif word == "chirping":  # short fast upward sweeps in groups
        start = rng.uniform(0.0, 0.2)
        while start < SECONDS - 0.1:
            for _ in range(int(rng.integers(2, 5))):
                m = int(rng.uniform(0.04, 0.07) * SAMPLING_RATE)
                f0 = np.linspace(3000, 4600, m) * jitter
                _place(out, start, _harmonic(f0, 1, 1.0) * np.hanning(m))
                start += m / SAMPLING_RATE + 0.03
            start += rng.uniform(0.2, 0.4)
    elif word == "drumming":  # regular low thumps with a noise attack
        period = rng.uniform(0.22, 0.3)
        start = rng.uniform(0.0, period)
        while start < SECONDS - 0.02:
            m = int(0.2 * SAMPLING_RATE)
            u = np.arange(m) / SAMPLING_RATE
            f0 = (110 * np.exp(-u / 0.05) + 60) * jitter
            hit = _harmonic(f0, 1, 1.0) * _envelope(m, 0.001, 0.08) + 0.5 * rng.normal(size=m) * _envelope(m, 0.0005, 0.01)
            _place(out, start, hit)
            start += period
    elif word == "ticking":  # short high clicks, tick-tock
        period = rng.uniform(0.23, 0.3)
        start, loud = rng.uniform(0.0, period), True
        while start < SECONDS - 0.01:
            m = int(0.012 * SAMPLING_RATE)
            click = _bandpass_noise(rng, m, 2500, 7000) * _envelope(m, 0.0005, 0.003)
            _place(out, start, click * (1.0 if loud else 0.6))
            start, loud = start + period, not loud
    elif word == "beeping":  # on/off square-ish tone
        f0 = rng.uniform(950, 1250)
        period = rng.uniform(0.22, 0.28)
        gate = ((t + rng.uniform(0, period)) % period) < period / 2
        out = _harmonic(f0 * np.ones(n), 5, 0.33) * gate
    elif word == "mooing":  # long low voiced tone with slow vibrato
        length = rng.uniform(1.1, 1.6)
        m = int(length * SAMPLING_RATE)
        u = np.linspace(0, 1, m)
        f0 = (rng.uniform(115, 150) * (1 + 0.06 * np.sin(2 * np.pi * 3 * u * length)) * (1 - 0.15 * u))
        _place(out, rng.uniform(0.0, SECONDS - length), _harmonic(f0, 10, 0.75) * np.sin(np.pi * u) ** 0.7)
    elif word == "whistling":  # high pure tone with vibrato
        f0 = rng.uniform(1900, 2500) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(4, 6) * t))
        out = _harmonic(f0, 2, 0.1) * np.minimum(1.0, t / 0.1) + 0.05 * _bandpass_noise(rng, n, 1500, 3500)
    else:
        raise ValueError(f"unknown sound {word!r}")
    out = out / (np.abs(out).max() + 1e-9) * rng.uniform(0.3, 0.8)
    out = out + rng.uniform(0.003, 0.02) * rng.normal(size=n)  # room noise
    return out.astype(np.float32)

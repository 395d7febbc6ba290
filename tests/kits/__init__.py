"""Test kits: what each model family provides to the shared tests, found automatically.

Every module in this package whose name does not start with ``_`` is one family's kit and defines
``KIT``, an instance of a :class:`FamilyKit` subclass whose ``name`` is the module's name and a family
registered in ``hooked_avllm.architectures``. Nothing lists the families: :data:`KITS` is whatever
modules are here, and ``tests/conftest.py`` parametrizes the ``family`` fixture over it, so every
test that takes ``family`` runs on a new family as soon as its kit module exists. Helper modules
shared by several kits start with ``_`` (``_hf_thinker.py``).

Example:
    >>> {"qwen2_5_omni", "qwen3_omni", "videollama2"} <= {kit.name for kit in KITS}
    True
    >>> kit_named("qwen3_omni").audio_token_times(3).tolist()  # doctest: +ELLIPSIS
    [0.0, 0.0769..., 0.1538...]
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch

from hooked_avllm import HookedAVLLM
from hooked_avllm.inputs import ModelInputs, concat_inputs


@dataclass(frozen=True)
class ClipAnswers:
    """Known answers about a kit's tiny clips, counted by hand from the tower's token rate and the
    family's layout rule (never read back from the library). The clips are the kit's own
    ``clip(model, ...)`` with the default ``prefix=5, suffix=4`` unless said otherwise; "the 3-s
    clip" is ``clip(model, seconds=3)``, "the other clip" is ``clip(model, **kit.other_length)``.

    early_audio:          audio tokens in [0, 2) s of a batch of the 3-s clip and the other clip
                          (``test_analysis_core``: selection by time).
    other_row_audio:      audio tokens of the other clip (the batch's second row).
    window_audio:         audio tokens of one row in [0.5, 1.1) s (either row).
    audio_in_second_two:  audio tokens of the 3-s clip in [1, 2) s (``test_analysis_lens``).
    aligned_windows:      ``((window, n), n_three, (window, n, first))`` for ``test_analysis_patching``:
                          a time window an audio-only 3-s clip and an audio+video 2-s clip both
                          cover and its token count; the 3-s clip's audio token count; another
                          window inside the 3-s clip, its token count and its first token's time.
    patching_counts:      for ``test_analysis_patching``'s error messages, on an audio-only 3-s clip
                          (source) and an audio+video 3-s clip (target) carrying the same audio:
                          ``audio=(n 3-s, n 2-s)`` audio tokens, ``text=(source, target)`` text tokens
                          (where ``audio_inside_video_bracket`` is False the text target is the
                          audio+video clip with ``prefix=7``), ``last_audio`` the target's last audio
                          position, ``two`` the length of an audio-only 2-s clip.
    clip_grid:            the frame heatmap's grid (frame groups, rows, cols) of the 3-s clip: the
                          video token grid where video tokens are grid cells, the frames' patch grid
                          where they are not (``test_analysis_heatmap``).
    other_clip_grid:      the same for the other clip.
    interleaved_runs:     with audio inside the video's bracket, the runs ``[(kind, count), ...]`` of a
                          video of 4 frame groups of 12 x 16 patches (1 s apart) with 4 s of audio
                          (``kit.audio_in_video_runs``); ``None`` otherwise.
    """

    early_audio: int
    other_row_audio: int
    window_audio: int
    audio_in_second_two: int
    aligned_windows: tuple
    patching_counts: dict
    clip_grid: tuple[int, int, int]
    other_clip_grid: tuple[int, int, int]
    interleaved_runs: list | None = None


class FamilyKit:
    """What one family provides to the shared tests. Subclass it in ``tests/kits/<family>.py`` and
    set ``KIT = YourKit()``; the module name must be the family's registry name
    (``hooked_avllm.architectures.supported()``). Every kit is audio-visual: the shared tests use
    audio and video together. What a NEW family's kit must define (everything below, unless it
    says *optional* or gives a default; discovery names what is missing):

    Attributes
        name: str
            The family's registry name (the test id, e.g. ``test_x[minicpm_o]``).
        other_length: dict
            ``clip`` keyword arguments for a second row of another sequence length, so that a
            batch of ``clip(model, seconds=3)`` and ``clip(model, **other_length)`` is padded (e.g.
            ``dict(seconds=2)``; a family whose rows must share an audio length changes ``prefix``).
        answers: ClipAnswers
            The known answers about its clips (see :class:`ClipAnswers`, every field but
            ``interleaved_runs``), counted by hand.
        audio_tokens_per_second: int
            The audio tower's tokens per second of clip (after any pooling).
        audio_inside_video_bracket: bool (default False)
            True when a video with its sound track puts the audio tokens inside the video's
            brackets (Qwen: ``<vision_start><audio_start> ... <audio_end><vision_end>``); the tests of
            interleaved audio run on these kits, and a text-count test knows it has 2 more tokens.
        lays_out_bare_ids: bool (default False)
            True when ``model.to_inputs(ids, mask, **media)`` / ``model.run_with_cache(**kwargs)``
            can read a layout from bare ids and media (placeholders are parsed); False when only
            the family's prompt builder knows the layout (segments).
        release_video_grid: tuple | None (default None)
            *Optional*: where the layout is built from segments, the token grid of one release-sized
            video, checked by the heatmap test (None: not checked).
        video_pixels: str (default ``"pixel_values_videos"``)
            The media name of the clip's video pixels (the patching test swaps them, the token-shift
            test compares them).
        video_tokens_on_grid: bool (default True)
            True when each video token is a cell of the layout's grid (``frame_group``, ``row``,
            ``col``); False when video tokens are learned queries (MiniCPM-o's resampler rows), whose
            frame heatmaps the family routes onto the patches.
        frames_per_group: int
            Input frames one frame group of video tokens covers (the heatmap's first frame of group
            ``g`` is ``g * frames_per_group``).

    Methods (these signatures; the tests call them with keywords)
        model(seed=0, *, audio=True, vision=True, vocab_size=None) -> HookedAVLLM
            A random tiny model (2 LLM layers of d_model 64, 4 heads, vocab 256; float32, eval
            mode; MiniCPM-o: d_model 256, vocab 512, as its resampler takes d_model / 128 heads), built with ``HookedAVLLM.from_config(cfg, seed=seed)``. ``audio`` / ``vision``
            False drop that tower; ``vocab_size`` a larger vocabulary (the token-shift base).
        clip(model, *, video=True, audio=True, seconds=3, seed=0, audio_seed=None, prefix=5, suffix=4)
            -> ModelInputs: one row ``prefix`` random text ids (< 199), the clip, ``suffix`` text
            ids, with its layout; ``seconds`` of audio (100 feature frames a second) and, where the
            family's video has a length, of video; ``audio_seed`` draws the audio features on
            their own (so an audio-only and an audio+video clip can carry the same audio); the
            same ``seed`` gives the same video pixels whether or not audio is given.
        text(model, input_ids) -> ModelInputs
            Text-only inputs ``[1, n]`` with their layout.
        batch(model, rows, padding_side="left") -> ModelInputs
            Several one-row inputs as one padded batch, laid out as the family lays out a batch
            (default: ``concat_inputs``, pad id 0, which suits families that parse bare ids).
        audio_token_times(n_tokens) -> Tensor
            The clip time (s) of a clip's k-th audio token, from the tower's token rate alone.
        token_kinds(input_ids, attention_mask, tokens) -> Tensor
            *Optional*: kind codes read off the ids by the test's own rule (default: one placeholder
            id per kind; a family whose kinds share one placeholder reads its brackets).
        decoder_rotary(text_cfg, position_ids) -> rotary
            The rotary embedding the decoder applies to positions ``position_ids`` (the layout's
            rows), built here from ``hooked_avllm.components.rotary`` (token-dropping test).
        audio_in_video_runs(model, grid_thw, second_per_grid, n_audio) -> list[(kind, count)]
            *Optional*, only where ``audio_inside_video_bracket``: the family's merge of a video
            and its sound (then ``answers.interleaved_runs`` too).

    The independent reference (knockout, attention-share and generation tests; a family whose
    reference is a transformers thinker taking our ids and media can subclass
    ``kits._hf_thinker.HFThinkerKit``, which defines all of these from ``build_reference`` and
    ``build_case``)
        reference_pair(seed, folder, variant="a") -> (reference, ours)
            A tiny random reference not written by us (transformers, or one assembled from public
            implementations), saved to ``folder`` in the released checkpoint layout and loaded
            through our ``from_pretrained`` (use ``parity.reference_pair``). ``variant`` picks
            one of two reference shapes ("a", "b") where the family has them.
        reference_forward(reference, inputs, mask) -> output with ``.logits``, ``.hidden_states``
            The reference on our prepared ``inputs`` with the additive mask ``[batch, 1, q, k]``
            and our layout's position ids.
        reference_decoder(reference, inputs) -> (text model with ``.layers``, ``.rotary_emb``; position ids)
        reference_generator(reference, inputs) -> (module with ``.generate``, keyword arguments)
            What generates, and from what, for our ``inputs`` (a ``ModelInputs``, or a case dict).
        reference_generates_prompt: bool (default True)
            Whether the reference's ``generate`` returns the prompt before the new tokens
            (transformers does from ids, not from embeddings); ``reference_generate`` then
            prepends it, so callers always get prompt + new tokens.
        generation_case(ours, case, seed, padding_side="left") -> ModelInputs | dict
            Inputs for ``case`` in ``("audio_in_video", "padded_batch", "text")``: a video with its
            sound, a padded batch of 2 rows (with media), 11 text tokens. A dict holds keyword
            arguments both models take (``ours.generate(**case)``).
        reference_generate(reference, inputs, *, attn_implementation=None, **generate_kwargs)
            Provided (built on the two above): the reference's greedy tokens, prompt included.

    What the shared tests assume of the family's tiny model and clips (keep it so, or say in the
    kit why a test cannot hold): the clip's video pixels are the media ``video_pixels`` and its
    audio ``input_features``; the layout marks ``audio`` and ``video`` positions with their
    ``audio_time`` and video frame groups (grid cells where ``video_tokens_on_grid``), one video
    span per clip; the projector hooks are
    ``audio_proj.hook_out`` / ``vision_proj.hook_out``; text ids below 199 are plain text; a
    knocked-out or token-dropped forward can be recomputed block by block with ``decoder_rotary``.
    Run ``pytest tests -k "<family>"`` after adding a kit: every shared test then runs on it.
    """

    name: str
    other_length: dict
    answers: ClipAnswers
    audio_tokens_per_second: int
    audio_inside_video_bracket: bool = False
    lays_out_bare_ids: bool = False
    release_video_grid: tuple[int, int, int] | None = None
    video_pixels: str = "pixel_values_videos"
    video_tokens_on_grid: bool = True
    frames_per_group: int
    reference_generates_prompt: bool = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # ------------------------------------------------------------------ tiny models and inputs
    def model(self, seed: int = 0, *, audio: bool = True, vision: bool = True, vocab_size: int | None = None) -> HookedAVLLM:
        raise NotImplementedError(f"{type(self).__name__}.model")

    def clip(self, model: HookedAVLLM, *, video: bool = True, audio: bool = True, seconds: int = 3, seed: int = 0,
             audio_seed: int | None = None, prefix: int = 5, suffix: int = 4) -> ModelInputs:
        raise NotImplementedError(f"{type(self).__name__}.clip")

    def text(self, model: HookedAVLLM, input_ids: torch.Tensor) -> ModelInputs:
        raise NotImplementedError(f"{type(self).__name__}.text")

    def batch(self, model: HookedAVLLM, rows: list[ModelInputs], padding_side: str = "left") -> ModelInputs:
        return concat_inputs(rows, padding_side=padding_side, pad_id=0)

    def audio_token_times(self, n_tokens: int) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__}.audio_token_times")

    def token_kinds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, tokens: Any) -> torch.Tensor:
        """Kind codes ``[batch, seq]`` read straight off the ids by the test's own rule, independent
        of the library's layouts (knockout and attention-share tests build their masks from it).
        Default: each kind's placeholder id (distinct ids per kind), bracket tokens as text, padding
        by the mask."""
        from analysis_support import placeholder_kinds

        return placeholder_kinds(input_ids, attention_mask, tokens)

    def decoder_rotary(self, text_cfg: Any, position_ids: torch.Tensor) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.decoder_rotary")

    def audio_in_video_runs(self, model: HookedAVLLM, grid_thw: tuple, second_per_grid: float, n_audio: int) -> list:
        raise NotImplementedError(f"{self.name}: audio is not inside the video's bracket")

    # ------------------------------------------------------------------ the independent reference
    def reference_pair(self, seed: int, folder: Any, variant: str = "a") -> tuple[Any, HookedAVLLM]:
        raise NotImplementedError(f"{type(self).__name__}.reference_pair")

    def reference_forward(self, reference: Any, inputs: ModelInputs, mask: torch.Tensor) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.reference_forward")

    def reference_decoder(self, reference: Any, inputs: ModelInputs) -> tuple[Any, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__}.reference_decoder")

    def reference_generator(self, reference: Any, inputs: ModelInputs | dict) -> tuple[Any, dict]:
        raise NotImplementedError(f"{type(self).__name__}.reference_generator")

    def generation_case(self, ours: HookedAVLLM, case: str, seed: int, padding_side: str = "left") -> ModelInputs | dict:
        raise NotImplementedError(f"{type(self).__name__}.generation_case")

    def reference_generate(self, reference: Any, inputs: ModelInputs | dict, *, attn_implementation: str | None = None,
                           **generate_kwargs: Any) -> Any:
        """The reference's greedy ``generate`` on ``inputs``: prompt + new tokens (a tensor, or with
        ``return_dict_in_generate=True`` transformers' output whose ``sequences`` hold them);
        ``attn_implementation`` switches the generating module's attention for this call."""
        generator, kwargs = self.reference_generator(reference, inputs)
        switch = contextlib.nullcontext() if attn_implementation is None else _attention(generator, attn_implementation)
        with switch, torch.no_grad():
            out = generator.generate(**kwargs, **generate_kwargs)
        if self.reference_generates_prompt:
            return out
        ids = inputs["input_ids"] if isinstance(inputs, dict) else inputs.input_ids
        if isinstance(out, torch.Tensor):
            return torch.cat([ids, out], dim=1)
        out.sequences = torch.cat([ids, out.sequences], dim=1)
        return out


@contextlib.contextmanager
def _attention(module: Any, implementation: str):
    previous = module.config._attn_implementation
    module.set_attn_implementation(implementation)
    try:
        yield
    finally:
        module.set_attn_implementation(previous)


REQUIRED = ("name", "other_length", "answers", "audio_tokens_per_second", "frames_per_group")
METHODS = ("model", "clip", "text", "audio_token_times", "decoder_rotary", "reference_pair", "reference_forward",
           "reference_decoder", "reference_generator", "generation_case")


def _discover() -> tuple[FamilyKit, ...]:
    from hooked_avllm.architectures import supported

    registered = {architecture.name for architecture in supported()}
    kits = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        kit = getattr(module, "KIT", None)
        where = f"tests/kits/{info.name}.py"
        if not isinstance(kit, FamilyKit):
            raise TypeError(f"{where} must define KIT, an instance of a kits.FamilyKit subclass (see its docstring)")
        if kit.name != info.name:
            raise ValueError(f"{where}: KIT.name is {kit.name!r}; name the module after the family ({kit.name}.py)")
        if kit.name not in registered:
            raise ValueError(f"{where}: {kit.name!r} is no registered family ({sorted(registered)})")
        missing = [a for a in REQUIRED if not hasattr(kit, a)]
        missing += [m for m in METHODS if getattr(type(kit), m) is getattr(FamilyKit, m)]
        if missing:
            raise TypeError(f"{where}: the kit does not define {missing} (see kits.FamilyKit's docstring)")
        kits.append(kit)
    return tuple(kits)


KITS: tuple[FamilyKit, ...] = _discover()


def kit_named(name: str) -> FamilyKit:
    """The kit of one family (for a test of that family alone)."""
    for kit in KITS:
        if kit.name == name:
            return kit
    raise KeyError(f"no test kit for {name!r}; kits: {[k.name for k in KITS]} (tests/kits/<family>.py)")


def families_where(predicate: Callable[[FamilyKit], bool]):
    """Run a test on the families whose kit satisfies ``predicate`` (overrides the ``family``
    fixture's parameters), e.g. ``@families_where(lambda kit: kit.audio_inside_video_bracket)``."""
    chosen = [kit for kit in KITS if predicate(kit)]
    return pytest.mark.parametrize("family", chosen, ids=[kit.name for kit in chosen], indirect=True)


__all__ = ["KITS", "ClipAnswers", "FamilyKit", "families_where", "kit_named"]

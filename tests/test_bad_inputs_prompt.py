"""The bad-input catalogue, prompts: what ``model.prepare`` does with prompts and options a user gets
wrong, in every family (the models and the harness of ``test_bad_inputs_media``).

Every bad prompt or option raises an :class:`~hooked_avllm.inputs.errors.InputError` (a
``ValueError``; an unknown keyword argument is also a ``TypeError``) whose message names the
argument and its value and says what to do; an empty prompt is valid and prepares the same ids as
the chat message with empty content, and the model runs on it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bad_inputs import Case
from test_bad_inputs_media import FAMILIES, QWEN, case_params, media_files, model_of, run_case

from hooked_avllm.inputs.errors import InputError, MediaFileNotFoundError, UnknownArgumentError

IMAGE = np.zeros((28, 28, 3), np.uint8)
SOUND = (np.zeros(16000, np.float32), 16000)


def prepare(ctx, **kwargs):
    return ctx.model.prepare(**{"prompt": "Describe it.", **kwargs})


def empty_prompt(ctx) -> None:
    """``prompt=""`` is a valid (empty) user turn: the same ids as the message with empty content,
    no media positions, finite logits."""
    inputs = ctx.model.prepare(prompt="")
    as_message = ctx.model.prepare(prompt=[{"role": "user", "content": ""}])
    assert torch.equal(inputs.input_ids, as_message.input_ids)
    assert not bool(inputs.layout.audio.any() | inputs.layout.video.any() | inputs.layout.image.any())
    with torch.no_grad():
        assert torch.isfinite(ctx.model(inputs)).all()


def empty_prompt_with_media(ctx) -> None:
    """``prompt=""`` with an image: the image alone, its positions in the layout."""
    inputs = ctx.model.prepare(prompt="", images=IMAGE)
    assert int(inputs.layout.image.sum()) > 0


def without_audio(ctx, **kwargs):
    """``prepare`` on the family's model without an audio tower."""
    return model_of(f"{ctx.family}:no_audio").prepare(**{"prompt": "Describe it.", **kwargs})


def media_twice(ctx):
    """The same medium given twice: inside the chat messages (Qwen, MiniCPM-o) and as an argument;
    VideoLLaMA2, whose messages hold no media, takes one medium per prompt: images= and video=."""
    if ctx.family.startswith("qwen"):
        messages = [{"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": "Hi"}]}]
        return ctx.model.prepare(prompt=messages, images=IMAGE)
    if ctx.family == "minicpm_o":
        from PIL import Image

        return ctx.model.prepare(prompt=[{"role": "user", "content": [Image.fromarray(IMAGE), "Hi"]}], images=IMAGE)
    return ctx.model.prepare(prompt="Hi", images=IMAGE, video=np.zeros((4, 56, 56, 3), np.uint8),
                             use_audio_in_video=False)


MEDIA_TWICE = {
    "qwen": r"images= gave 1 image input.*no place for the image input",
    "minicpm_o": r"put the media inside the messages.*not in images=",
    "videollama2": r"given both images= and video=.*one medium per prompt",
}

CASES = [
    Case("an empty prompt", "prompt", empty_prompt, None, families=FAMILIES),
    Case("an empty prompt with an image", "prompt", empty_prompt_with_media, None, families=FAMILIES),
    Case("a prompt that is an int", "prompt", lambda ctx: ctx.model.prepare(prompt=5), InputError,
         r"prompt.* (an )?int 5", families=FAMILIES),
    Case("a prompt that is None", "prompt", lambda ctx: ctx.model.prepare(prompt=None), InputError,
         r"prompt.*None", families=FAMILIES),
    Case("prompt=[]", "prompt", lambda ctx: ctx.model.prepare(prompt=[]), InputError,
         r"prompt(=\[\])? .*(empty|a list of chat messages)", families=FAMILIES),
    Case("a chat message without a role", "prompt", lambda ctx: ctx.model.prepare(prompt=[{"content": "hi"}]),
         InputError, r"{'content': 'hi'}.*role", families=FAMILIES),
    Case("a chat message without content", "prompt", lambda ctx: ctx.model.prepare(prompt=[{"role": "user"}]),
         InputError, r"{'role': 'user'}.*content", families=FAMILIES),
    Case("a chat message whose content is an int", "prompt",
         lambda ctx: ctx.model.prepare(prompt=[{"role": "user", "content": 5}]), InputError,
         r"content.*(int 5|5\b)", families=FAMILIES),
    Case("a chat content item of an unknown type", "prompt",
         lambda ctx: ctx.model.prepare(prompt=[{"role": "user", "content": [{"type": "txt", "text": "hi"}]}]),
         InputError, r"content item 0 has type 'txt'.*'text'", families=QWEN),
    Case("a chat content item that is a dict (MiniCPM-o content holds strings, images, audio)", "prompt",
         lambda ctx: ctx.model.prepare(prompt=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
         InputError, r"content holds a dict.*strings, images", families=("minicpm_o",)),
    *[Case(f"the same medium given twice ({name})", "prompt", media_twice, InputError, match, families=families)
      for name, match, families in (("qwen", MEDIA_TWICE["qwen"], QWEN),
                                    ("minicpm_o", MEDIA_TWICE["minicpm_o"], ("minicpm_o",)),
                                    ("videollama2", MEDIA_TWICE["videollama2"], ("videollama2",)))],
    Case("images= with a non-image (a dict)", "prompt", lambda ctx: prepare(ctx, images={"a": 1}), InputError,
         r"images= a dict {'a': 1}.*(Unsupported image input|an image)", families=FAMILIES),
    Case("images= with a sound array", "prompt", lambda ctx: prepare(ctx, images=np.zeros(16000, np.float32)),
         InputError, r"images= ndarray of shape \(16000,\).*expected \[H, W, 3\]", families=FAMILIES),
    Case("audio= with a path that does not exist", "prompt",
         lambda ctx: prepare(ctx, audio=ctx.files.folder / "nowhere" / "sound.wav"), MediaFileNotFoundError,
         r"audio= '.*sound\.wav'.*not found.*Check the path", families=FAMILIES),
    Case("audio= an int", "prompt", lambda ctx: prepare(ctx, audio=7), InputError,
         r"audio= (got )?an int 7.*file path", families=FAMILIES),
    Case("an unknown keyword argument (a typo)", "prompt", lambda ctx: prepare(ctx, system_promt="Be brief."),
         UnknownArgumentError, r"prepare\(\) got an unknown keyword argument system_promt= \(did you mean system_prompt=\?\)",
         families=FAMILIES),
    Case("an unknown keyword argument (another family's)", "prompt", lambda ctx: prepare(ctx, max_slice_nums=2),
         UnknownArgumentError, r"unknown keyword argument max_slice_nums=.*it takes", families=(*QWEN, "videollama2")),
    Case("video_fps= to MiniCPM-o (it has none)", "prompt", lambda ctx: prepare(ctx, video_fps=2.0),
         UnknownArgumentError, r"unknown keyword argument video_fps=", families=("minicpm_o",)),
    Case("max_slice_nums=0", "prompt", lambda ctx: prepare(ctx, images=IMAGE, max_slice_nums=0), InputError,
         r"max_slice_nums=0: pick a whole number from 1", families=("minicpm_o",)),
    Case("max_slice_nums=2.5", "prompt", lambda ctx: prepare(ctx, images=IMAGE, max_slice_nums=2.5), InputError,
         r"max_slice_nums=2\.5: pick a whole number", families=("minicpm_o",)),
    Case("max_slice_nums=1000", "prompt", lambda ctx: prepare(ctx, images=IMAGE, max_slice_nums=1000), InputError,
         r"max_slice_nums=1000: pick a whole number from 1 .* to 64", families=("minicpm_o",)),
    Case("max_slice_nums with a video (its recipe sets its own)", "prompt",
         lambda ctx: prepare(ctx, video=np.zeros((2, 56, 56, 3), np.uint8), max_slice_nums=4, use_audio_in_video=False),
         InputError, r"max_slice_nums=4 cannot apply with video=", families=("minicpm_o",)),
    Case("language='fr' (MiniCPM-o's omni recipe speaks en and zh)", "prompt", lambda ctx: prepare(ctx, language="fr"),
         InputError, r"language='fr': pick one of \['en', 'zh'\]", families=("minicpm_o",)),
    Case("use_audio_in_video=True for a model without audio", "prompt",
         lambda ctx: without_audio(ctx, video=np.zeros((4, 56, 56, 3), np.uint8), use_audio_in_video=True), InputError,
         r"use_audio_in_video=True, but this .*model.* has no audio", families=("videollama2", "minicpm_o")),
    Case("audio= for a model without audio", "prompt", lambda ctx: without_audio(ctx, audio=SOUND), InputError,
         r"audio= was given, but this .*(no audio|takes no audio)", families=("qwen2_5_omni", "videollama2", "minicpm_o")),
    Case("use_audio_in_video='yes'", "prompt", lambda ctx: prepare(ctx, use_audio_in_video="yes"), InputError,
         r"use_audio_in_video='yes': pass True, False or None", families=FAMILIES),
    Case("padding_side='middle'", "prompt", lambda ctx: prepare(ctx, padding_side="middle"), InputError,
         r"padding_side='middle': pick 'left'.*or 'right'", families=FAMILIES),
    Case("system_prompt=True", "prompt", lambda ctx: prepare(ctx, system_prompt=True), InputError,
         r"system_prompt=True: pass a string, None .* or False", families=FAMILIES),
    Case("system_prompt=42", "prompt", lambda ctx: prepare(ctx, system_prompt=42), InputError,
         r"system_prompt=an int 42: pass a string", families=FAMILIES),
    Case("add_generation_prompt='no'", "prompt", lambda ctx: prepare(ctx, add_generation_prompt="no"), InputError,
         r"add_generation_prompt='no': pass True or False", families=FAMILIES),
    Case("audio_padding='short'", "prompt", lambda ctx: prepare(ctx, audio=SOUND, audio_padding="short"), InputError,
         r"audio_padding='short': pick 'max_length', 'longest' or 'processor_longest'", families=QWEN),
    Case("two image placeholders for one image", "prompt",
         lambda ctx: prepare(ctx, prompt="<|IMAGE|> vs <|IMAGE|>", images=IMAGE), InputError,
         r"2 image placeholder\(s\) but 1 image input", families=QWEN),
    Case("a batch of 2 prompts with 1 image", "prompt",
         lambda ctx: prepare(ctx, prompt=["a", "b"], images=[IMAGE]), InputError,
         r"2 prompts, images= .*got a list of 1|images= got a list of 1 for a batch of 2 prompts", families=FAMILIES),
    Case("a batch of 2 prompts with one bare image", "prompt",
         lambda ctx: prepare(ctx, prompt=["a", "b"], images=IMAGE), InputError,
         r"2 prompts, images= .*got ndarray of shape \(28, 28, 3\)|images= got ndarray of shape \(28, 28, 3\).* 2 prompts",
         families=FAMILIES),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return media_files(tmp_path_factory.mktemp("bad_prompt"))


@pytest.mark.parametrize("case, family_name", case_params(CASES))
def test_bad_prompt(case, family_name, files):
    run_case(case, family_name, files)

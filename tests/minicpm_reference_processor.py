"""An independent reference of MiniCPM-o 2.6's released processor, for tests.

Written here from reading the published remote code (nothing copied; no project code imported),
so that ``hooked_avllm.architectures.minicpm_o.preprocess`` is compared with something we did not
derive from it. What it follows, function by function:

* ``image_processing_minicpmv.py`` (``MiniCPMVImageProcessor``, read at
  icyyrain/minicpmo-modified-files@19b3e7da and guilh00009/llamafactory-fix-MiniCPM-o-2_6@2f4dd5f7):
  ``ensure_divide``, ``find_best_resize``, ``get_refine_size``, ``get_sliced_grid``,
  ``split_to_patches``, ``slice_image``, ``get_sliced_images``, ``get_grid_placeholder``,
  ``get_image_id_placeholder``, ``get_slice_image_placeholder``, ``reshape_by_patch`` (through
  ``torch.nn.functional.unfold``, as released) and ``preprocess`` (``convert("RGB")``, numpy
  float32 ``/ 255``, transformers' ``normalize``, channels first, ``tgt_sizes``).
* ``processing_minicpmo.py`` (``MiniCPMOProcessor``, icyyrain/minicpmo-modified-files@7838ae09):
  ``audio_feature_extract`` (its inner ``get_audio_placeholder``, the ``audio_parts`` merge of
  consecutive arrays of one message, the 30-s split, ``WhisperFeatureExtractor(feature_size=80)``
  called with ``padding="max_length"`` and ``return_attention_mask=True``, each piece cut to its
  mask's sum, ``pad_sequence`` with 0.0), ``_convert`` (image/audio/spk bounds) and
  ``_convert_omni_to_inputs`` (tag split, placeholder substitution, left padding).
* ``modeling_minicpmo.py`` ``chat()`` (jack139/minicpmo-backend@dced0af0): message contents to
  tags (joined ``"\\n"``, or ``""`` for ``omni_input``), the template choice (any audio or
  ``use_tts_template`` -> the TTS template, else the tokenizer's), rendered by the tokenizer's
  ``apply_chat_template``.

The tokenizer: :func:`build_minicpm_tokenizer_folder` puts the real Qwen2 BPE files of the
Qwen2.5-Omni fixture beside MiniCPM-o's real ``tokenizer_config.json`` with ``tokenizer_class``
set to ``Qwen2Tokenizer`` and ``auto_map`` removed, so ``AutoTokenizer.from_pretrained(folder)``
builds it without the remote code. Its ``added_tokens_decoder`` gives every MiniCPM-o special id
(151643-151699); ``<unk>`` (128244) is already an ordinary token of the Qwen2 BPE vocabulary (its
BPE string is literally ``<unk>``). The entry is still essential: the plain BPE's pre-tokenizer
cuts the text ``<unk>`` into ``<unk`` (128243) and ``>`` (29); as an added special token at its
existing id (no new id is made) it is split out of the text whole, and becomes 128244.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HUB = Path(__file__).resolve().parent / "fixtures" / "hub"
MINICPM_HUB = HUB / "openbmb__MiniCPM-o-2_6"
QWEN_BPE_HUB = HUB / "Qwen__Qwen2.5-Omni-7B"

# chat()'s TTS template, as its behaviour is described (each turn, no default system turn, the
# speech tokens after the generation prompt), written for the tokenizer's apply_chat_template
REFERENCE_TTS_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n<|spk_bos|><|spk|><|spk_eos|><|tts_bos|>' }}{% endif %}"
)


# ---------------------------------------------------------------- tokenizer


def build_minicpm_tokenizer_folder(dest: str | Path) -> Path:
    """Write a folder that ``transformers.AutoTokenizer.from_pretrained(dest)`` loads offline as
    MiniCPM-o 2.6's tokenizer: the Qwen2 BPE (``vocab.json``, ``merges.txt``) of the Qwen2.5-Omni
    fixture and MiniCPM-o's real ``tokenizer_config.json`` with ``tokenizer_class`` =
    ``Qwen2Tokenizer`` and no ``auto_map`` (its remote class is never run)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(QWEN_BPE_HUB / name, dest / name)
    config = json.loads((MINICPM_HUB / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "Qwen2Tokenizer"
    config.pop("auto_map", None)
    (dest / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2))
    return dest


def load_minicpm_tokenizer(dest: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(build_minicpm_tokenizer_folder(dest)), trust_remote_code=False)


def preprocessor_settings() -> dict:
    return json.loads((MINICPM_HUB / "preprocessor_config.json").read_text())


# ---------------------------------------------------------------- image processor


class ReferenceImageProcessor:
    """``MiniCPMVImageProcessor``'s behaviour, re-derived."""

    def __init__(self, settings: dict | None = None):
        s = preprocessor_settings() if settings is None else settings
        self.max_slice_nums = s.get("max_slice_nums", 9)
        self.scale_resolution = s.get("scale_resolution", 448)
        self.patch_size = s.get("patch_size", 14)
        self.use_image_id = s.get("use_image_id", False)
        self.image_feature_size = s.get("image_feature_size", 64)
        self.slice_mode = s.get("slice_mode", True)
        self.mean = np.array(s.get("norm_mean", [0.5, 0.5, 0.5]))
        self.std = np.array(s.get("norm_std", [0.5, 0.5, 0.5]))

    # -- sizes
    @staticmethod
    def ensure_divide(length, patch_size):
        return max(round(length / patch_size) * patch_size, patch_size)

    def find_best_resize(self, original_size, allow_upscale=False):
        w, h = original_size
        if allow_upscale or w * h > self.scale_resolution**2:
            aspect = w / h
            h = int(self.scale_resolution / math.sqrt(aspect))
            w = int(h * aspect)
        return self.ensure_divide(w, self.patch_size), self.ensure_divide(h, self.patch_size)

    def get_refine_size(self, original_size, grid):
        w, h = original_size
        gx, gy = grid
        cell_w = self.ensure_divide(w, gx) / gx
        cell_h = self.ensure_divide(h, gy) / gy
        bw, bh = self.find_best_resize((cell_w, cell_h), allow_upscale=True)
        return bw * gx, bh * gy

    def get_sliced_grid(self, image_size, max_slice_nums):
        w, h = image_size
        multiple = min(math.ceil(w * h / self.scale_resolution**2), max_slice_nums)
        if multiple <= 1:
            return None
        counts = [n for n in (multiple - 1, multiple, multiple + 1) if n != 1 and n <= max_slice_nums]
        candidates = [[m, n // m] for n in counts for m in range(1, n + 1) if n % m == 0]
        errors = [abs(math.log(w / h) - math.log(m / k)) for m, k in candidates]
        return candidates[errors.index(min(errors))]  # the first of the best, as the strict < loop keeps

    # -- slicing
    def split_to_patches(self, image, grid):
        width, height = image.size
        step_x, step_y = int(width / grid[0]), int(height / grid[1])
        rows = []
        for top in range(0, height, step_y):
            rows.append([image.crop((left, top, left + step_x, top + step_y)) for left in range(0, width, step_x)])
        return rows

    def slice_image(self, image, max_slice_nums):
        grid = self.get_sliced_grid(image.size, max_slice_nums)
        if grid is None:
            return image.resize(self.find_best_resize(image.size, allow_upscale=True), resample=Image.Resampling.BICUBIC), [], None
        source = image.copy().resize(self.find_best_resize(image.size), resample=Image.Resampling.BICUBIC)
        refined = image.resize(self.get_refine_size(image.size, grid), resample=Image.Resampling.BICUBIC)
        return source, self.split_to_patches(refined, grid), grid

    def get_sliced_images(self, image, max_slice_nums=None):
        if not self.slice_mode:
            return [image]
        n = self.max_slice_nums if max_slice_nums is None else int(max_slice_nums)
        assert n > 0
        source, rows, _ = self.slice_image(image, n)
        return [source] + [cell for row in rows for cell in row]

    # -- placeholders
    def get_grid_placeholder(self, grid):
        if grid is None:
            return ""
        one = "<slice>" + "<unk>" * self.image_feature_size + "</slice>"
        return "\n".join(one * grid[0] for _ in range(grid[1]))

    def get_slice_image_placeholder(self, image_size, image_idx=0, max_slice_nums=None, use_image_id=None):
        n = self.max_slice_nums if max_slice_nums is None else int(max_slice_nums)
        grid = self.get_sliced_grid(image_size, n)
        text = "<image>" + "<unk>" * self.image_feature_size + "</image>"
        if (self.use_image_id if use_image_id is None else bool(use_image_id)):
            text = f"<image_id>{image_idx}</image_id>" + text
        if self.slice_mode:
            text += self.get_grid_placeholder(grid)
        return text

    # -- pixels
    def reshape_by_patch(self, chw: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(chw)
        p = self.patch_size
        cols = torch.nn.functional.unfold(x, (p, p), stride=(p, p))  # [3*p*p, L]
        return cols.reshape(x.shape[0], p, p, -1).permute(0, 1, 3, 2).reshape(x.shape[0], p, -1).numpy()

    def preprocess(self, images, max_slice_nums=None):
        """One sample's images -> (pixel_values: list of [3, p, L*p] arrays, image_sizes, tgt_sizes [n, 2])."""
        from transformers.image_transforms import normalize

        pixel_values, tgt_sizes = [], []
        images = [im.convert("RGB") for im in images]
        for image in images:
            for piece in self.get_sliced_images(image, max_slice_nums):
                hwc = np.array(piece).astype(np.float32) / 255
                hwc = normalize(hwc, mean=self.mean, std=self.std)
                chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
                pixel_values.append(self.reshape_by_patch(chw))
                tgt_sizes.append((chw.shape[1] // self.patch_size, chw.shape[2] // self.patch_size))
        return pixel_values, [im.size for im in images], np.array(tgt_sizes, dtype=np.int64).reshape(-1, 2)

    def slices_chw(self, image, max_slice_nums=None):
        """Each slice's normalised ``[3, H, W]`` pixels (the step before ``reshape_by_patch``)."""
        from transformers.image_transforms import normalize

        out = []
        for piece in self.get_sliced_images(image.convert("RGB"), max_slice_nums):
            hwc = normalize(np.array(piece).astype(np.float32) / 255, mean=self.mean, std=self.std)
            out.append(np.ascontiguousarray(hwc.transpose(2, 0, 1)))
        return out


# ---------------------------------------------------------------- audio


def reference_audio_placeholder(n_samples: int, chunk_input: bool, chunk_length: float = 1.0) -> str:
    """``get_audio_placeholder``: counts through the conv and the pooling; groups of one chunk's embeddings."""
    frames = math.ceil(n_samples / 160)
    conv = (frames - 1) // 2 + 1
    out = (conv - 2) // 2 + 1
    if not chunk_input:
        return "<|audio_start|>" + "<unk>" * out + "<|audio_end|>"
    per_chunk = ((int(chunk_length * 100) - 1) // 2 + 1 - 2) // 2 + 1
    text, used = "", 0
    for _ in range((out + per_chunk - 1) // per_chunk):
        size = min(per_chunk, out - used)
        text += "<|audio_start|>" + "<unk>" * size + "<|audio_end|>"
        used += size
    return text


def reference_audio_features(audios, audio_parts=None, chunk_input=True):
    """``audio_feature_extract`` for one sample: (features [pieces, 80, T] or [], lens [pieces], placeholders)."""
    from transformers import WhisperFeatureExtractor

    placeholders = [reference_audio_placeholder(len(a), chunk_input) for a in audios]
    if audio_parts is not None:
        merged, current = [], []
        for k, audio in enumerate(audios):
            if k == 0 or audio_parts[k] == audio_parts[k - 1]:
                current.append(audio)
            else:
                merged.append(np.hstack(current))
                current = [audio]
        if current:
            merged.append(np.hstack(current))
    else:
        merged = list(audios)
    limit = 30 * 16000
    pieces = []
    for audio in merged:
        if len(audio) <= limit:
            pieces.append(audio)
        else:
            pieces.extend(audio[i * limit : (i + 1) * limit] for i in range(math.ceil(len(audio) / limit)))
    if not pieces:
        return [], [], placeholders
    extractor = WhisperFeatureExtractor(feature_size=80)
    out = extractor(pieces, sampling_rate=16000, return_attention_mask=True, padding="max_length", return_tensors="pt")
    lens = out["attention_mask"].sum(dim=1)
    feats = [f[:, :n] for f, n in zip(out["input_features"], lens)]
    padded = torch.nn.utils.rnn.pad_sequence([f.T for f in feats], batch_first=True, padding_value=0.0).permute(0, 2, 1)
    return padded, lens, placeholders


# ---------------------------------------------------------------- prompt


def reference_chat_prompt(msgs, tokenizer, omni_input=False, use_tts_template=False):
    """chat()'s rendering of one conversation: (prompt text, images, audios, audio_parts)."""
    images, audios, parts, rendered = [], [], [], []
    for i, msg in enumerate(msgs):
        content = msg["content"]
        content = [content] if isinstance(content, str) else content
        pieces = []
        for item in content:
            if isinstance(item, Image.Image):
                images.append(item)
                pieces.append("(<image>./</image>)")
            elif isinstance(item, np.ndarray):
                audios.append(item)
                parts.append(i)
                pieces.append("(<audio>./</audio>)")
                use_tts_template = True
            elif isinstance(item, str):
                pieces.append(item)
        rendered.append({"role": msg["role"], "content": ("" if omni_input else "\n").join(pieces)})
    prompt = tokenizer.apply_chat_template(
        rendered, tokenize=False, add_generation_prompt=True,
        chat_template=REFERENCE_TTS_TEMPLATE if use_tts_template else None,
    )
    return prompt, images, audios, parts


def reference_bounds(input_ids: torch.Tensor, tokenizer):
    """``_convert``'s bounds: [start+1, end) after each <image>/<slice>, <|audio_start|>, <|spk_bos|>."""
    tid = tokenizer.convert_tokens_to_ids

    def spans(opens, closes):
        starts = torch.where(torch.isin(input_ids, torch.tensor([tid(t) for t in opens])))[0] + 1
        ends = torch.where(torch.isin(input_ids, torch.tensor([tid(t) for t in closes])))[0]
        n = max(len(starts), len(ends))
        return torch.stack([starts[:n], ends[:n]], dim=-1)

    return (
        spans(["<image>", "<slice>"], ["</image>", "</slice>"]),
        spans(["<|audio_start|>"], ["<|audio_end|>"]),
        spans(["<|spk_bos|>"], ["<|spk_eos|>"]),
    )


def reference_process(prompt, images, audios, audio_parts, tokenizer, *, max_slice_nums=None, use_image_id=None,
                      chunk_input=True, image_processor: ReferenceImageProcessor | None = None):
    """``MiniCPMOProcessor.__call__`` for one sample (as ``chat()`` calls it)."""
    image_processor = image_processor or ReferenceImageProcessor()
    pixel_values, sizes, tgt_sizes = image_processor.preprocess(images, max_slice_nums) if images else ([], [], None)
    if audios:
        features, lens, audio_phs = reference_audio_features(audios, audio_parts, chunk_input)
    else:
        features, lens, audio_phs = [], [], []
    pattern = r"(\(<image>\./</image>\)|\(<audio>\./</audio>\))"
    chunks = re.split(pattern, prompt)
    image_id = audio_id = 0
    for k, chunk in enumerate(chunks):
        if chunk == "(<image>./</image>)":
            chunks[k] = image_processor.get_slice_image_placeholder(sizes[image_id], image_id, max_slice_nums, use_image_id)
            image_id += 1
        elif chunk == "(<audio>./</audio>)":
            chunks[k] = audio_phs[audio_id]
            audio_id += 1
    text = "".join(chunks)
    input_ids = torch.tensor(tokenizer.encode(text), dtype=torch.int64)
    image_bound, audio_bounds, spk_bounds = reference_bounds(input_ids, tokenizer)
    return {
        "text": text,
        "input_ids": input_ids,
        "pixel_values": pixel_values,
        "tgt_sizes": tgt_sizes,
        "image_bound": image_bound,
        "audio_bounds": audio_bounds,
        "spk_bounds": spk_bounds,
        "audio_features": features,
        "audio_feature_lens": lens,
    }

"""Counterfactual clip pairs: every clip with its own sound, and clips whose sound is another clip's.

The study (``PAPER.md``) shows models clips whose sound was replaced by an unrelated clip's
sound. :func:`build_pairs` writes, into a new folder ``out``:

- ``factual/<id>.mov``: every clip with its own sound;
- ``counterfactual/<id>__audio_<partner>.mov``: ``n_counterfactual`` clips (all by default, else a
  random subset drawn with ``seed``) with a partner's sound;
- ``manifest.jsonl`` and ``manifest.csv``: one row per written clip (:class:`ManifestRow`).

Both kinds are remuxed the same way (:mod:`hooked_avllm.study.remux`): video packets copied, the
sound decoded and stored as float PCM cut or padded with silence to the video's span. So a
video's factual and counterfactual clips differ only in whose sound plays, and decoding a clip
gives its sound's decoded samples exactly.

Partners (``pairing``). ``"overlap"`` (the default), a function ``f(caption, caption) -> float``
or a precomputed ``[n, n]`` matrix (row: the video's clip, column: the sound's clip, in clip
order) give a similarity; partners are the optimal assignment that MINIMISES the total similarity
(:func:`optimal_partners`), no clip its own partner and no sound used twice. A function scores a
pair as the larger of f(video's video caption, partner's audio caption) and f(video's audio
caption, partner's audio caption): the sound played should match neither what is seen nor the
sound the scene really had. ``"overlap"`` is :func:`word_overlap`; for embeddings pass
:func:`cosine_similarity`'s matrix. ``"random"`` draws a uniform derangement with ``seed``
(:func:`random_derangement`); its rows report the word overlap. One clip alone is an error.

Clips and captions. ``clips`` is a folder, a text file listing clip paths (one a line, relative
to the list's folder; blank lines and ``#`` comments skipped), or a Python list of
``(path, audio_caption, video_caption)``. A clip's id is its file name without the suffix. With
a folder, the captions file decides which clips are used (each row needs a file ``<id>.<video
suffix>`` there; other files are ignored); with a list file, every listed clip needs a row.
``captions`` is a CSV file (a header row) or JSON Lines (``.jsonl``, one object a line), one row
per clip: the id in ``id``, ``clip_id`` or ``youtube_id``; ``audio_caption`` and
``video_caption``, or ``caption`` for both (a row may have ``caption`` and one of the others,
which then wins). An id on two rows is an error (AudioCaps' test split has five captions per
clip: keep one).

Resuming. The run writes into a hidden ``.<out>.partial`` folder beside ``out`` and renames it to
``out`` at the end; an error or Ctrl-C removes it, so a failed run leaves nothing. A run that
was killed (no clean-up) leaves it, and the same call later reuses each clip finished there
whose manifest row matches its plan.

Example:
    >>> word_overlap("A dog barks loudly", "Loud barking of a dog")  # {dog} of {dog, barks, loudly, loud, barking}
    0.2
    >>> import numpy as np
    >>> optimal_partners(np.array([[9., 1., 5.], [4., 9., 1.], [1., 8., 9.]])).tolist()
    [1, 2, 0]
    >>> rows = build_pairs("clips/", "pairs/", captions="captions.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import warnings
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import numpy as np

from hooked_avllm.inputs.decode import CONTAINER_SUFFIXES
from hooked_avllm.inputs.errors import InputError, InputWarning, about
from hooked_avllm.study.remux import CONTAINERS, ClipProbe, check_container_holds, probe_clip, remux_with_audio

VIDEO_SUFFIXES = CONTAINER_SUFFIXES - {".m4a", ".aac", ".wma"}
ID_COLUMNS = ("id", "clip_id", "youtube_id")
# words that say nothing about a sound or a scene, left out of the word overlap
STOP_WORDS = frozenset(
    "a an the and or but of in on at to from by with as is are was were be been being it its this that these those "
    "while then there here into onto over under near some someone something several".split())

Similarity = Union[str, Callable[[str, str], float], np.ndarray]


@dataclass(frozen=True)
class Clip:
    """A source clip: its id (the file name without suffix), its file and its reference captions."""

    id: str
    path: Path
    audio_caption: str
    video_caption: str


@dataclass(frozen=True)
class Pair:
    """A clip to write: ``video``'s frames with ``audio``'s sound (the same clip for a factual one)."""

    video: Clip
    audio: Clip
    similarity: float
    similarity_measure: str

    @property
    def kind(self) -> str:
        return "factual" if self.video == self.audio else "counterfactual"

    @property
    def id(self) -> str:
        return self.video.id if self.kind == "factual" else f"{self.video.id}__audio_{self.audio.id}"


@dataclass(frozen=True)
class ManifestRow:
    """One written clip. ``path`` is relative to the manifest's folder, the sources are absolute paths;
    the captions are the references of the sound actually played (the partner's audio caption) and of
    the frames shown; seconds as in :class:`hooked_avllm.study.remux.RemuxReport`."""

    id: str
    kind: str
    path: str
    video_id: str
    audio_id: str
    video_source: str
    audio_source: str
    audio_caption: str
    video_caption: str
    similarity: float
    similarity_measure: str
    video_seconds: float
    audio_seconds: float
    audio_source_seconds: float
    silence_seconds: float


# ------------------------------------------------------------------------------------ captions and clips


def read_captions(path: str | Path) -> dict[str, tuple[str, str]]:
    """``{clip id: (audio caption, video caption)}`` from a CSV or JSON Lines file (formats: module docstring).

    Error messages leave the file's name to the caller (:func:`build_pairs` puts ``captions= 'file':`` first)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"is no file (resolved from {Path.cwd()}); pass a .csv or .jsonl file of captions")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise InputError("is neither .csv nor .jsonl; pass captions in one of those (see hooked_avllm.study.pairs "
                         "for the columns)")
    captions: dict[str, tuple[str, str]] = {}
    first_row: dict[str, int] = {}
    for number, row in _caption_rows(path, suffix):
        clip_id, audio, video = _caption_row(row, number)
        if clip_id in captions:
            raise InputError(f"has clip id {clip_id!r} on rows {first_row[clip_id]} and {number}; keep one caption "
                             "row per clip")
        captions[clip_id], first_row[clip_id] = (audio, video), number
    if not captions:
        raise InputError("holds no caption rows; pass a file with a row per clip")
    return captions


def _caption_rows(path: Path, suffix: str) -> Iterator[tuple[int, dict]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            if suffix == ".csv":
                yield from enumerate(csv.DictReader(file), start=2)  # row 1 is the header
                return
            for number, line in enumerate(file, start=1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise InputError(f"line {number} is not a JSON object; write one object a line")
                    yield number, row
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as err:
        raise InputError(f"cannot be parsed ({err}); pass UTF-8 CSV with a header, or JSON Lines") from err


def _caption_row(row: dict, number: int) -> tuple[str, str, str]:
    row = {str(k).strip().lower(): "" if v is None else str(v).strip() for k, v in row.items() if k is not None}
    clip_id = next((row[c] for c in ID_COLUMNS if row.get(c)), "")
    if not clip_id:
        raise InputError(f"row {number} has no clip id; put it in a column named {' or '.join(ID_COLUMNS)}")
    audio = row.get("audio_caption") or row.get("caption", "")
    video = row.get("video_caption") or row.get("caption", "")
    if not audio or not video:
        missing = "audio_caption" if not audio else "video_caption"
        raise InputError(f"row {number} (clip {clip_id!r}) has no {missing}; give audio_caption and video_caption, "
                         "or caption for both")
    return clip_id, audio, video


def load_clips(clips: str | Path | Sequence[tuple], captions: dict[str, tuple[str, str]] | str | Path | None
               = None) -> list[Clip]:
    """The clips, in order, with their captions: from a folder or a list file plus ``captions``, or from a
    list of ``(path, audio_caption, video_caption)``. Nothing is decoded (see :func:`check_clips`)."""
    if isinstance(clips, (list, tuple)):
        if captions is not None:
            raise InputError("captions= is for a folder or a list file of clips; the (path, audio_caption, "
                             "video_caption) tuples carry their own, so leave captions= out")
        return _unique([_clip_from_tuple(item, i) for i, item in enumerate(clips)])
    if captions is None:
        raise InputError(f"a folder or list of clips needs captions=: a .csv or .jsonl file (got clips={str(clips)!r})")
    if not isinstance(captions, dict):
        with about("captions=", captions):
            captions = read_captions(captions)
    path = Path(clips).expanduser()
    if path.is_dir():
        return _clips_in_folder(path, captions)
    if path.is_file():
        return _clips_in_list(path, captions)
    raise InputError(f"no folder or list file {str(path)!r} (resolved from {Path.cwd()}); pass the folder of clips "
                     "or a text file with one clip path a line")


def _clip_from_tuple(item, index: int) -> Clip:
    if not (isinstance(item, (tuple, list)) and len(item) == 3 and all(isinstance(c, str) and c.strip()
                                                                       for c in item[1:])):
        raise InputError(f"clips[{index}] is {item!r}; pass (path, audio_caption, video_caption) with two "
                         "non-empty captions (the same one twice if you have one)")
    path = Path(item[0]).expanduser()
    return Clip(path.stem, path, item[1].strip(), item[2].strip())


def _clips_in_folder(folder: Path, captions: dict[str, tuple[str, str]]) -> list[Clip]:
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            files.setdefault(path.stem, []).append(path)
    missing = [clip_id for clip_id in captions if clip_id not in files]
    if missing:
        raise InputError(f"{len(missing)} of {len(captions)} caption ids have no video file in {str(folder)!r} "
                         f"(e.g. {', '.join(map(repr, missing[:3]))}); add the files, or drop their caption rows")
    twice = [paths for clip_id, paths in files.items() if clip_id in captions and len(paths) > 1]
    if twice:
        raise InputError(f"clip {twice[0][0].stem!r} has several files ({', '.join(p.name for p in twice[0])}); "
                         "keep one")
    return [Clip(clip_id, files[clip_id][0], *captions[clip_id]) for clip_id in captions]


def _clips_in_list(list_file: Path, captions: dict[str, tuple[str, str]]) -> list[Clip]:
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise InputError(f"{str(list_file)!r} is not a text file of clip paths ({err}); pass a folder or a list "
                         "with one path a line") from err
    paths = [list_file.parent / Path(line.strip()).expanduser() for line in lines
             if line.strip() and not line.lstrip().startswith("#")]
    if not paths:
        raise InputError(f"{str(list_file)!r} lists no clips; write one clip path a line")
    for path in paths:
        if path.stem not in captions:
            raise InputError(f"{str(list_file)!r} lists {str(path)!r}, whose id {path.stem!r} has no caption row; "
                             "add one to the captions file")
    return _unique([Clip(p.stem, p, *captions[p.stem]) for p in paths])


def _unique(clips: list[Clip]) -> list[Clip]:
    seen: dict[str, Path] = {}
    for clip in clips:
        if clip.id in seen:
            raise InputError(f"two clips have the id {clip.id!r} ({seen[clip.id]} and {clip.path}); ids are file names "
                             "without suffix, so rename one")
        seen[clip.id] = clip.path
    return clips


def check_clips(clips: Sequence[Clip], container: str = "mov", progress: bool = False) -> list[ClipProbe]:
    """Probe every clip (a video track with frames, a sound track) and that ``container`` holds its video."""
    from tqdm.auto import tqdm

    probes = [probe_clip(clip.path) for clip in tqdm(clips, desc="checking clips", disable=not progress, leave=False)]
    first_of_codec = {probe.video_codec: probe for probe in reversed(probes)}
    for probe in first_of_codec.values():
        check_container_holds(probe, container)
    return probes


# ------------------------------------------------------------------------------------ similarity and partners


@lru_cache(maxsize=8192)
def caption_words(caption: str) -> frozenset[str]:
    """The caption's lower-cased words, :data:`STOP_WORDS` left out."""
    return frozenset(re.findall(r"[a-z0-9]+(?:'[a-z]+)?", caption.lower())) - STOP_WORDS


def word_overlap(a: str, b: str) -> float:
    """Jaccard similarity of two captions' words (:func:`caption_words`): shared / all, 0 when both are empty."""
    words_a, words_b = caption_words(a), caption_words(b)
    union = words_a | words_b
    return len(words_a & words_b) / len(union) if union else 0.0


def cosine_similarity(video_embeddings: np.ndarray, audio_embeddings: np.ndarray | None = None) -> np.ndarray:
    """``[n, n]`` cosines between caption embeddings (row: video's clip, column: sound's clip), for ``pairing=``.

    Example:
        >>> cosine_similarity(np.array([[1.0, 0.0], [1.0, 1.0]])).round(3).tolist()
        [[1.0, 0.707], [0.707, 1.0]]
    """
    audio_embeddings = video_embeddings if audio_embeddings is None else audio_embeddings
    a, b = (np.asarray(e, dtype=np.float64) for e in (video_embeddings, audio_embeddings))
    if a.ndim != 2 or a.shape != b.shape:
        raise InputError(f"embeddings of shapes {a.shape} and {b.shape}; pass [n_clips, dim] arrays of one shape")
    a, b = (e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12) for e in (a, b))
    return a @ b.T


def optimal_partners(similarity: np.ndarray, videos: Sequence[int] | None = None) -> np.ndarray:
    """The partner (column) of each of ``videos`` (rows of ``similarity`` ``[n, n]``, all by default) that
    minimises the total similarity, each column used once and never a video's own (scipy's
    ``linear_sum_assignment``, the diagonal priced out of reach). Needs n >= 2."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as err:
        raise ImportError("the optimal pairing needs scipy: pip install 'hooked-avllm[study]' (or "
                          "pairing='random')") from err

    n = similarity.shape[0]
    videos = np.arange(n) if videos is None else np.asarray(videos)
    if n < 2:
        raise InputError("a counterfactual takes another clip's sound, and there is only 1 clip; pass at least 2")
    cost = similarity[videos].astype(np.float64)
    high, low = cost.max(), cost.min()
    cost[np.arange(len(videos)), videos] = high + len(videos) * (high - low) + 1  # worse than any other assignment
    rows, partners = linear_sum_assignment(cost)
    assert not np.any(partners == videos[rows]), "no clip is its own partner"
    return partners[np.argsort(rows)]


def random_derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(n)`` with no fixed point, uniform over all such (rejection sampling: ~e tries)."""
    if n < 2:
        raise InputError("a counterfactual takes another clip's sound, and there is only 1 clip; pass at least 2")
    while True:
        permutation = rng.permutation(n)
        if not np.any(permutation == np.arange(n)):
            return permutation


def _scorer(clips: Sequence[Clip], pairing: Similarity) -> tuple[Callable[[int, int], float], str]:
    """``score(video index, audio index)`` and the measure's name."""
    if isinstance(pairing, np.ndarray):
        n = len(clips)
        if pairing.shape != (n, n) or not np.all(np.isfinite(pairing)):
            raise InputError(f"pairing= is a matrix of shape {pairing.shape}; pass a finite [{n}, {n}] similarity "
                             "(row: the video's clip, column: the sound's clip, in clip order)")
        return lambda v, a: float(pairing[v, a]), "matrix"
    if isinstance(pairing, str):
        if pairing not in ("overlap", "random"):
            raise InputError(f"pairing={pairing!r} is none of 'overlap', 'random', a function or a matrix; pass one")
        function, name = word_overlap, "word_overlap"
    elif callable(pairing):
        function, name = pairing, getattr(pairing, "__name__", "custom")
    else:
        raise InputError(f"pairing= is {type(pairing).__name__}; pass 'overlap', 'random', f(caption, caption) or "
                         "an [n, n] matrix")

    def score(v: int, a: int) -> float:
        heard = clips[a].audio_caption
        value = max(float(function(clips[v].video_caption, heard)), float(function(clips[v].audio_caption, heard)))
        if not np.isfinite(value):
            raise InputError(f"pairing={name} gave {value} for clips {clips[v].id!r} and {clips[a].id!r}; "
                             "return finite numbers")
        return value

    return score, name


def plan_pairs(clips: Sequence[Clip], n_counterfactual: int | None = None, pairing: Similarity = "overlap",
               seed: int = 0) -> list[Pair]:
    """Every clip as a factual :class:`Pair`, then ``n_counterfactual`` counterfactual ones (all clips by
    default; a subset is drawn at random with ``seed``, in clip order) with their partners."""
    n = len(clips)
    if n < 2:
        raise InputError(f"a counterfactual takes another clip's sound, and there is {n} clip; pass at least 2")
    count = n if n_counterfactual is None else int(n_counterfactual)
    if not 1 <= count <= n:
        raise InputError(f"n_counterfactual={n_counterfactual} is outside 1..{n} (the number of clips); pass one in it")
    rng = np.random.default_rng(seed)
    videos = np.arange(n) if count == n else np.sort(rng.choice(n, count, replace=False))
    score, measure = _scorer(clips, pairing)
    if isinstance(pairing, str) and pairing == "random":
        partners = random_derangement(n, rng)[videos]
    else:
        similarity = np.zeros((n, n))
        for v in videos:
            similarity[v] = [score(v, a) for a in range(n)]
        partners = optimal_partners(similarity, videos)
    factual = [Pair(clip, clip, score(i, i), measure) for i, clip in enumerate(clips)]
    return factual + [Pair(clips[v], clips[a], score(v, a), measure) for v, a in zip(videos, partners)]


# ------------------------------------------------------------------------------------ writing


def build_pairs(clips: str | Path | Sequence[tuple], out: str | Path, *, captions: str | Path | None = None,
                n_counterfactual: int | None = None, pairing: Similarity = "overlap", seed: int = 0,
                container: str = "mov", progress: bool = True) -> list[ManifestRow]:
    """Read the clips and captions, plan the pairs, check every clip, then write them (module docstring)."""
    _check_container(container)
    if captions is not None and not isinstance(clips, (list, tuple)):
        with about("captions=", captions):
            captions = read_captions(captions)
    with about("clips=", clips):
        clip_list = load_clips(clips, captions)
        pairs = plan_pairs(clip_list, n_counterfactual, pairing, seed)
        check_clips(clip_list, container, progress)
    return write_pairs(pairs, out, container=container, progress=progress)


def write_pairs(pairs: Sequence[Pair], out: str | Path, *, container: str = "mov",
                progress: bool = True) -> list[ManifestRow]:
    """Write the planned clips and the manifests into the new folder ``out`` (staged, resumable: module docstring)."""
    from tqdm.auto import tqdm

    out = Path(out).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"out= {str(out)!r} exists and is not an empty folder; pass a new folder")
    _check_container(container)
    stage, suffix = out.parent / f".{out.name}.partial", CONTAINERS[container]
    created = _make_folders(stage)
    try:
        done = _finished_rows(stage, pairs, suffix)
        rows = []
        with (stage / "progress.jsonl").open("a", encoding="utf-8") as log:
            for pair in tqdm(pairs, desc="pairs", disable=not progress):
                if pair.id not in done:
                    done[pair.id] = _write_pair(pair, stage, suffix, container)
                    log.write(json.dumps(asdict(done[pair.id])) + "\n")
                    log.flush()
                rows.append(done[pair.id])
        _write_manifests(rows, stage)
        (stage / "progress.jsonl").unlink()
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(stage, out)
    except (Exception, KeyboardInterrupt):
        shutil.rmtree(stage, ignore_errors=True)
        for folder in reversed(created[:-1]):  # parents this run created, innermost first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    _warn_about_silence(rows)
    return rows


def _check_container(container: str) -> None:
    if container not in CONTAINERS:
        raise InputError(f"container={container!r} is not one of {sorted(CONTAINERS)}; pass 'mov' (keeps every "
                         "timestamp) or 'mkv' (for VP9 or AV1 video)")


def _warn_about_silence(rows: Sequence[ManifestRow], share: float = 0.1) -> None:
    padded = [row for row in rows if row.silence_seconds > share * row.video_seconds]
    if padded:
        warnings.warn(f"{len(padded)} of {len(rows)} clips end in silence longer than {share:.0%} of the clip (their "
                      f"sound was shorter than the video, e.g. {padded[0].id!r}: {padded[0].silence_seconds:.2f} s of "
                      f"{padded[0].video_seconds:.2f} s); see silence_seconds in the manifest",
                      InputWarning, stacklevel=3)


def _make_folders(stage: Path) -> list[Path]:
    """Create ``stage`` (and missing parents); the folders created, outermost first."""
    created = [p for p in (stage, *stage.parents) if not p.exists()][::-1]
    (stage / "factual").mkdir(parents=True, exist_ok=True)
    (stage / "counterfactual").mkdir(exist_ok=True)
    return created


def _planned(pair: Pair, suffix: str) -> dict:
    """The manifest row's fields known before the clip is written (all but the durations)."""
    return dict(id=pair.id, kind=pair.kind, path=f"{pair.kind}/{pair.id}{suffix}", video_id=pair.video.id,
                audio_id=pair.audio.id, video_source=str(pair.video.path.resolve()),
                audio_source=str(pair.audio.path.resolve()), audio_caption=pair.audio.audio_caption,
                video_caption=pair.video.video_caption, similarity=pair.similarity,
                similarity_measure=pair.similarity_measure)


def _write_pair(pair: Pair, stage: Path, suffix: str, container: str) -> ManifestRow:
    planned = _planned(pair, suffix)
    report = remux_with_audio(pair.video.path, pair.audio.path, stage / planned["path"], container)
    return ManifestRow(**planned, **asdict(report))


def _finished_rows(stage: Path, pairs: Sequence[Pair], suffix: str) -> dict[str, ManifestRow]:
    """Rows of a killed run staged here whose plan matches and whose file exists; every other file is removed."""
    log = stage / "progress.jsonl"
    staged = _read_log(log)
    planned = {pair.id: pair for pair in pairs}
    done: dict[str, ManifestRow] = {}
    for row in staged:
        pair = planned.get(row.get("id"))
        if pair is None or set(row) != {f.name for f in fields(ManifestRow)}:
            continue
        expected = _planned(pair, suffix)
        if all(row[key] == value for key, value in expected.items()) and (stage / row["path"]).is_file():
            done[pair.id] = ManifestRow(**row)
    keep = {stage / row.path for row in done.values()}
    for path in [p for p in stage.rglob("*") if p.is_file() and p not in keep]:
        path.unlink()
    log.write_text("".join(json.dumps(asdict(row)) + "\n" for row in done.values()))
    return done


def _read_log(log: Path) -> list[dict]:
    """The rows logged so far; a line cut short by the kill is skipped."""
    rows = []
    for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [row for row in rows if isinstance(row, dict)]


def _write_manifests(rows: Sequence[ManifestRow], folder: Path) -> None:
    with (folder / "manifest.jsonl").open("w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")
    with (folder / "manifest.csv").open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=[f.name for f in fields(ManifestRow)])
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)


def summary(rows: Sequence[ManifestRow], out: str | Path) -> str:
    """What was written, and how similar the counterfactual pairs are (for the command line)."""
    factual = [row for row in rows if row.kind == "factual"]
    counterfactual = [row for row in rows if row.kind == "counterfactual"]
    lines = [f"wrote {len(factual)} factual and {len(counterfactual)} counterfactual clips to {out} "
             "(manifest.jsonl, manifest.csv)"]
    if counterfactual:
        scores = np.array([row.similarity for row in counterfactual])
        own = np.mean([row.similarity for row in factual]) if factual else float("nan")
        lines.append(f"counterfactual pairs' {counterfactual[0].similarity_measure}: mean {scores.mean():.3f}, "
                     f"max {scores.max():.3f} (a clip with its own sound: mean {own:.3f})")
    return "\n".join(lines)


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """The rows of a ``manifest.jsonl`` written by :func:`build_pairs`."""
    with Path(path).open(encoding="utf-8") as file:
        return [ManifestRow(**json.loads(line)) for line in file if line.strip()]


__all__ = ["Clip", "ManifestRow", "Pair", "STOP_WORDS", "build_pairs", "caption_words", "check_clips",
           "cosine_similarity", "load_clips", "optimal_partners", "plan_pairs", "random_derangement", "read_captions",
           "read_manifest", "summary", "word_overlap", "write_pairs"]

"""The counterfactual pair builder (hooked_avllm.study.pairs, .remux) on real media files written here
with PyAV: 1-s clips of 64x48 frames at 10 fps, each with a sine of its own frequency.

What is shown: a written clip's video stream is the source's packets (bytes, pts, dts, keyframes,
codec extradata); its sound is the partner's decoded sound sample for sample (float PCM: no
tolerance), cut or padded with zeros to the video's second; the manifest's captions are those of
the sound that actually plays (identified by its frequency); the assignment is the brute-force
optimum and never pairs a clip with itself; random pairing is a seeded derangement; a killed run
resumes; the command line works and fails in one line with the right status, leaving nothing.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from hooked_avllm.__main__ import main
from hooked_avllm.inputs.errors import InputError, InputWarning
from hooked_avllm.study import pairs
from hooked_avllm.study.pairs import Clip, build_pairs, optimal_partners, plan_pairs, random_derangement, word_overlap
from hooked_avllm.study.remux import fit_to_length, remux_with_audio

ROOT = Path(__file__).resolve().parents[1]
H264 = "libx264"  # PyAV's wheels ship it; its B-frames make the packets reorder (checked below)
FPS, FRAMES = 10, 10  # every clip's video lasts exactly 1 s

VP9_AND_OPUS = {"libvpx-vp9", "libopus"} <= set(av.codecs_available)  # PyAV's wheels ship both


def require_vp9_and_opus() -> None:
    """PyAV's wheels (our dependency) ship VP9 and Opus encoders: a build without them fails these
    tests with what is missing, instead of skipping the WebM cases."""
    assert VP9_AND_OPUS, (f"this PyAV build ({av.__version__}) has no libvpx-vp9 or libopus encoder; install PyAV's "
                          "wheel (pip install --force-reinstall av) to test WebM clips")


def write_clip(path: Path, tone: float, audio_seconds: float, *, rate: int = 16000, channels: int = 1,
               video_codec: str = H264, audio_codec: str | None = "aac") -> Path:
    """A clip of FRAMES moving 64x48 frames at FPS and ``audio_seconds`` of a ``tone`` Hz sine (or no sound)."""
    y, x = np.mgrid[0:48, 0:64]
    with av.open(str(path), "w") as out:
        video = out.add_stream(video_codec, rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        layout = "stereo" if channels == 2 else "mono"
        audio = out.add_stream(audio_codec, rate=rate, layout=layout) if audio_codec else None
        for i in range(FRAMES):
            image = np.stack([(x * 4 + i * 25) % 256, (y * 5) % 256, np.full_like(x, i * 20)], -1).astype(np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if audio is not None:
            t = np.arange(round(audio_seconds * rate)) / rate
            signal = np.repeat(0.4 * np.sin(2 * np.pi * tone * t)[None], channels, 0).astype(np.float32)
            for start in range(0, signal.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(signal[:, start:start + 1024]), format="fltp",
                                                   layout=audio.layout.name)
                frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
                for packet in audio.encode(frame):
                    out.mux(packet)
            for packet in audio.encode():
                out.mux(packet)
    return path


# ------------------------------------------------------------------------------------ reading media back


def video_packets(path: Path) -> SimpleNamespace:
    """The video stream's packets as stored: bytes, pts and dts in seconds (exact), keyframe flags, raw ticks."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        seconds = lambda t, p: None if t is None else t * p.time_base  # noqa: E731
        return SimpleNamespace(data=[bytes(p) for p in packets], pts=[seconds(p.pts, p) for p in packets],
                               dts=[seconds(p.dts, p) for p in packets], keyframes=[p.is_keyframe for p in packets],
                               ticks=[(p.pts, p.dts) for p in packets], time_base=stream.time_base,
                               extradata=stream.codec_context.extradata, codec=stream.codec_context.name)


def decoded_sound(path: Path) -> tuple[np.ndarray, int]:
    """The first sound track decoded by PyAV: float32 [channels, samples] (int16 / 32768) and its rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = []
        for frame in container.decode(stream):
            data = frame.to_ndarray()
            if not frame.format.is_planar:
                data = data.reshape(-1, len(frame.layout.channels)).T
            chunks.append(data.astype(np.float32) / 32768 if data.dtype == np.int16 else data.astype(np.float32))
        return np.concatenate(chunks, axis=1), stream.rate


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples[0], n=rate))  # 1-Hz bins
    return float(np.argmax(spectrum))


# ------------------------------------------------------------------------------------ the sources

# dog and rain share "dog barks", engine and bell share "engine": the optimum (total overlap 0) must avoid both
SOURCES = {  # id: (tone Hz, sound seconds, suffix, audio codec, rate, channels, video codec)
    "dog": (300, 1.0, ".mp4", "aac", 16000, 1, H264),
    "engine": (700, 1.6, ".mp4", "aac", 16000, 2, H264),  # longer than the video: cut
    "rain": (1100, 0.5, ".mp4", "aac", 16000, 1, H264),  # shorter than the video: padded
    "bell": (1900, 1.0, ".mkv", "pcm_s16le", 22050, 1, "mpeg4"),  # PCM in Matroska, MPEG-4 video
}
CAPTIONS = [  # id, caption (both), audio_caption, video_caption
    ("dog", "", "A dog barks", "A dog runs on grass"),
    ("engine", "", "An engine revs", "A red car"),
    ("rain", "", "A dog barks in the rain", "Rain on a window"),
    ("bell", "A bell rings next to a running engine", "", ""),
]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("sources")
    clips = {}
    for clip_id, (tone, seconds, suffix, codec, rate, channels, video_codec) in SOURCES.items():
        clips[clip_id] = write_clip(folder / f"{clip_id}{suffix}", tone, seconds, rate=rate, channels=channels,
                                    video_codec=video_codec, audio_codec=codec)
    (folder / "notes.txt").write_text("not a clip, ignored\n")
    captions = folder.parent / "captions.csv"
    with captions.open("w", newline="") as file:
        csv.writer(file).writerows([("id", "caption", "audio_caption", "video_caption"), *CAPTIONS])
    silent = write_clip(folder.parent / "silent.mp4", 0, 0, audio_codec=None)
    return SimpleNamespace(folder=folder, clips=clips, captions=captions, silent=silent)


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory) -> SimpleNamespace:
    out = tmp_path_factory.mktemp("built") / "pairs"
    with pytest.warns(InputWarning, match="silence"):  # rain's half second of sound is padded
        rows = build_pairs(sources.folder, out, captions=sources.captions, progress=False)
    return SimpleNamespace(out=out, rows=rows, by_id={row.id: row for row in rows})


def caption_of(clip_id: str, kind: str) -> str:
    _, both, audio, video = next(row for row in CAPTIONS if row[0] == clip_id)
    return (audio if kind == "audio" else video) or both


# ------------------------------------------------------------------------------------ round trip of real files


def test_every_clip_once_as_factual_and_once_as_counterfactual(built):
    kinds = [(row.kind, row.video_id, row.audio_id) for row in built.rows]
    assert sorted(k[1] for k in kinds if k[0] == "factual") == sorted(SOURCES)
    assert all(video == audio for kind, video, audio in kinds if kind == "factual")
    counterfactual = [(video, audio) for kind, video, audio in kinds if kind == "counterfactual"]
    assert sorted(v for v, _ in counterfactual) == sorted(SOURCES) == sorted(a for _, a in counterfactual)
    assert all(video != audio for video, audio in counterfactual)
    assert sorted(p.relative_to(built.out).as_posix() for p in built.out.rglob("*") if p.is_file()) == sorted(
        [row.path for row in built.rows] + ["manifest.csv", "manifest.jsonl"])
    assert not list(built.out.parent.glob(".*partial*")), "the staging folder is gone"


def test_the_video_stream_is_the_sources_packets_bit_for_bit(built, sources):
    for row in built.rows:
        source, written = video_packets(Path(row.video_source)), video_packets(built.out / row.path)
        assert written.codec == source.codec and written.extradata == source.extradata, row.id
        assert written.data == source.data, f"{row.id}: packet bytes differ"
        assert written.pts == source.pts and written.keyframes == source.keyframes, row.id
        assert [w for w, s in zip(written.dts, source.dts) if s is not None] == [s for s in source.dts if s is not None]
        if Path(row.video_source).suffix == ".mp4":  # QuickTime keeps the time base: the ticks themselves are equal
            assert written.time_base == source.time_base and written.ticks == source.ticks, row.id
    assert any(p != d for p, d in video_packets(sources.clips["dog"]).ticks), "the H.264 sources reorder (B-frames)"


def test_the_sound_is_the_partners_decoded_sound_exactly_fitted_to_the_video(built):
    for row in built.rows:
        partner, rate = decoded_sound(Path(row.audio_source))
        written, written_rate = decoded_sound(built.out / row.path)
        assert written_rate == rate and written.shape == (partner.shape[0], rate), row.id  # 1 s of video
        kept = min(rate, partner.shape[1])
        assert np.array_equal(written[:, :kept], partner[:, :kept]), f"{row.id}: the sound is not the partner's"
        assert not np.any(written[:, kept:]), f"{row.id}: the padding is not silence"
        tone = SOURCES[row.audio_id][0]
        assert abs(dominant_frequency(written, rate) - tone) <= 1, row.id
        assert row.silence_seconds == pytest.approx((rate - kept) / rate, abs=1e-9)
        assert row.audio_source_seconds == pytest.approx(partner.shape[1] / rate, abs=1e-9)
        assert row.video_seconds == row.audio_seconds == 1.0
    played = {row.audio_id: row for row in built.rows if row.kind == "counterfactual"}
    assert played["engine"].silence_seconds == 0 and played["engine"].audio_source_seconds >= 1.5  # cut
    assert played["rain"].silence_seconds >= 0.45  # padded


def test_the_manifest_names_the_captions_of_the_sound_that_plays(built):
    tones = {tone: clip_id for clip_id, (tone, *_) in SOURCES.items()}
    for row in built.rows:
        sound, rate = decoded_sound(built.out / row.path)
        heard = tones[min(tones, key=lambda tone: abs(tone - dominant_frequency(sound, rate)))]
        assert row.audio_id == heard and row.audio_caption == caption_of(heard, "audio"), row.id
        assert row.video_caption == caption_of(row.video_id, "video"), row.id
        if row.kind == "counterfactual":
            assert row.audio_caption != caption_of(row.video_id, "audio")
    jsonl = [json.loads(line) for line in (built.out / "manifest.jsonl").read_text().splitlines()]
    with (built.out / "manifest.csv").open(newline="") as file:
        table = list(csv.DictReader(file))
    assert [r["id"] for r in jsonl] == [r["id"] for r in table] == [row.id for row in built.rows]
    assert all(str(j[key]) == t[key] for j, t in zip(jsonl, table) for key in j), "CSV and JSON Lines agree"
    assert pairs.read_manifest(built.out / "manifest.jsonl") == built.rows


def test_the_built_in_overlap_finds_the_zero_overlap_pairing(built):
    counterfactual = [row for row in built.rows if row.kind == "counterfactual"]
    assert {row.similarity_measure for row in built.rows} == {"word_overlap"}
    assert [row.similarity for row in counterfactual] == [0.0] * 4
    similar = {("dog", "rain"), ("rain", "dog"), ("engine", "bell"), ("bell", "engine")}
    assert not {(r.video_id, r.audio_id) for r in counterfactual} & similar
    assert all(row.similarity == 1.0 for row in built.rows if row.kind == "factual")  # its own audio caption


def test_fit_to_length_cuts_and_pads_with_zeros():
    samples = np.arange(10, dtype=np.float32).reshape(2, 5)
    cut, none = fit_to_length(samples, 3)
    padded, added = fit_to_length(samples, 7)
    assert none == 0 and cut.tolist() == [[0, 1, 2], [5, 6, 7]]
    assert added == 2 and padded.tolist() == [[0, 1, 2, 3, 4, 0, 0], [5, 6, 7, 8, 9, 0, 0]]


def test_matroska_output_keeps_the_packet_bytes_and_pts_to_the_millisecond(sources, tmp_path):
    out = tmp_path / "dog_with_bell.mkv"
    remux_with_audio(sources.clips["dog"], sources.clips["bell"], out, container="mkv")
    source, written = video_packets(sources.clips["dog"]), video_packets(out)
    assert written.data == source.data
    assert all(abs(w - s) <= Fraction(1, 1000) for w, s in zip(written.pts, source.pts))
    assert np.array_equal(decoded_sound(out)[0], decoded_sound(sources.clips["bell"])[0])


def test_vp9_clips_go_into_matroska(tmp_path):
    require_vp9_and_opus()
    folder = tmp_path / "webm"
    folder.mkdir()
    webm = write_clip(folder / "dog.webm", 300, 1.0, video_codec="libvpx-vp9", audio_codec="libopus", rate=48000)
    write_clip(folder / "engine.mp4", 700, 1.0)
    rows = build_pairs([(webm, "a dog barks", "a dog"), (folder / "engine.mp4", "an engine revs", "a car")],
                       tmp_path / "out", container="mkv", progress=False)
    for row in rows:
        written = tmp_path / "out" / row.path
        assert written.suffix == ".mkv" and video_packets(written).data == video_packets(Path(row.video_source)).data
        sound, partner = decoded_sound(written)[0], decoded_sound(Path(row.audio_source))[0]
        kept = min(sound.shape[1], partner.shape[1])
        assert kept > 0.4 * sound.shape[1] and np.array_equal(sound[:, :kept], partner[:, :kept])


# ------------------------------------------------------------------------------------ partners


def brute_force(similarity: np.ndarray, videos: list[int]) -> float:
    """The least total similarity over every injective choice of partners that avoids each video's own column."""
    n = similarity.shape[0]
    return min(sum(similarity[v, a] for v, a in zip(videos, choice))
               for choice in itertools.permutations(range(n), len(videos))
               if all(v != a for v, a in zip(videos, choice)))


@pytest.mark.parametrize("seed", range(5))
def test_the_assignment_is_the_brute_force_optimum_and_never_a_clip_itself(seed):
    rng = np.random.default_rng(seed)
    similarity = rng.random((4, 4))
    np.fill_diagonal(similarity, -10.0)  # unconstrained, every clip would take its own sound
    partners = optimal_partners(similarity)
    assert sorted(partners) == [0, 1, 2, 3] and not np.any(partners == np.arange(4))
    assert similarity[np.arange(4), partners].sum() == pytest.approx(brute_force(similarity, [0, 1, 2, 3]), abs=1e-12)
    videos = [0, 2]  # a subset gets counterfactuals; partners may be any other clip, each used once
    partners = optimal_partners(similarity, videos)
    assert len(set(partners)) == 2 and not np.any(partners == videos)
    assert similarity[videos, partners].sum() == pytest.approx(brute_force(similarity, videos), abs=1e-12)


def test_a_known_optimum():
    similarity = np.array([[0, 5, 1, 9], [1, 0, 8, 8], [9, 9, 0, 1], [9, 1, 9, 0]], float)  # unique best: 2+1+1+1
    assert optimal_partners(similarity).tolist() == [2, 0, 3, 1]


def test_pair_similarity_is_the_larger_of_the_video_and_audio_caption_overlaps():
    clips = [Clip("a", Path("a.mp4"), "dog barks", "dog on grass"), Clip("b", Path("b.mp4"), "grass mower", "lawn")]
    plan = plan_pairs(clips)
    assert word_overlap("A dog barks loudly", "dog BARKS") == pytest.approx(2 / 3)
    assert word_overlap("the and of", "a") == 0.0  # stop words only
    counterfactual = {p.id: p.similarity for p in plan if p.kind == "counterfactual"}
    assert counterfactual == {"a__audio_b": pytest.approx(max(word_overlap("dog on grass", "grass mower"), 0.0)),
                              "b__audio_a": 0.0}
    matrix = np.array([[0.0, 0.25], [0.5, 0.0]])
    assert [(p.id, p.similarity, p.similarity_measure) for p in plan_pairs(clips, pairing=matrix)][2:] == [
        ("a__audio_b", 0.25, "matrix"), ("b__audio_a", 0.5, "matrix")]


def test_random_pairing_is_a_seeded_derangement():
    clips = [Clip(f"c{i}", Path(f"c{i}.mp4"), f"sound {i}", f"scene {i}") for i in range(8)]

    def partners(seed: int, count: int | None = None) -> list[tuple[str, str]]:
        plan = plan_pairs(clips, count, "random", seed)
        return [(p.video.id, p.audio.id) for p in plan if p.kind == "counterfactual"]

    assert partners(3) == partners(3) and partners(3, 5) == partners(3, 5)
    assert len({tuple(partners(seed)) for seed in range(6)}) > 1
    for seed in range(20):
        chosen = partners(seed, 5)
        assert len(chosen) == 5 and all(v != a for v, a in chosen) and len({a for _, a in chosen}) == 5
        assert [v for v, _ in chosen] == sorted(v for v, _ in chosen)  # in clip order
    rng = np.random.default_rng(0)
    assert {tuple(random_derangement(3, rng)) for _ in range(40)} == {(1, 2, 0), (2, 0, 1)}  # both derangements of 3


def test_one_clip_cannot_lend_another_its_sound():
    with pytest.raises(InputError, match="only 1 clip; pass at least 2|there is 1 clip; pass at least 2"):
        plan_pairs([Clip("a", Path("a.mp4"), "x", "y")])
    with pytest.raises(InputError, match="n_counterfactual=3 is outside 1..2"):
        plan_pairs([Clip("a", Path("a.mp4"), "x", "y"), Clip("b", Path("b.mp4"), "x", "y")], 3)


# ------------------------------------------------------------------------------------ captions and clips


def test_caption_formats(tmp_path):
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"clip_id": "a", "caption": "one for both"}\n\n{"id": "b", "audio_caption": "x", '
                     '"video_caption": "y", "caption": "z"}\n')
    assert pairs.read_captions(jsonl) == {"a": ("one for both", "one for both"), "b": ("x", "y")}
    bom = tmp_path / "bom.csv"
    bom.write_text("\ufeffYouTube_ID,Caption\nyt1,a bird sings\n", encoding="utf-8")
    assert pairs.read_captions(bom) == {"yt1": ("a bird sings", "a bird sings")}
    bad = {"twice.csv": ("id,caption\na,x\na,y\n", "has clip id 'a' on rows 2 and 3; keep one"),
           "empty_caption.csv": ("id,audio_caption\na,x\n", "row 2 .clip 'a'. has no video_caption"),
           "no_id.jsonl": ('{"caption": "x"}\n', "row 1 has no clip id"),
           "list.jsonl": ("[1, 2]\n", "line 1 is not a JSON object"),
           "broken.jsonl": ("{nope\n", "cannot be parsed"),
           "captions.txt": ("a,x\n", "neither .csv nor .jsonl")}
    for name, (text, message) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=message):
            pairs.read_captions(tmp_path / name)


def test_python_errors_name_the_argument_and_the_file(sources, tmp_path):
    (tmp_path / "twice.csv").write_text("id,caption\ndog,x\ndog,y\n")
    with pytest.raises(InputError, match=r"^captions= '.*twice.csv': has clip id 'dog' on rows 2 and 3; keep one"):
        build_pairs(sources.folder, tmp_path / "out", captions=tmp_path / "twice.csv", progress=False)
    with pytest.raises(InputError, match=r"^clips= '.*missing': no folder or list file .*; pass the folder of clips"):
        build_pairs(tmp_path / "missing", tmp_path / "out", captions=sources.captions, progress=False)
    with pytest.raises(InputError, match=r"^container='avi' is not one of \['mkv', 'mov'\]; pass 'mov'"):
        build_pairs(sources.folder, tmp_path / "out", captions=sources.captions, container="avi")
    with pytest.raises(InputError, match=r"^out= '.*sources.*' exists and is not an empty folder; pass a new folder"):
        pairs.write_pairs([], sources.folder)
    assert not (tmp_path / "out").exists()


def test_clips_from_a_list_file_and_from_tuples(sources, tmp_path):
    listing = tmp_path / "clips.txt"
    listing.write_text(f"# two clips\n{sources.clips['rain']}\n\n{sources.clips['dog']}\n")
    clips = pairs.load_clips(listing, sources.captions)
    assert [c.id for c in clips] == ["rain", "dog"] and clips[1].audio_caption == "A dog barks"
    tuples = [(str(sources.clips["dog"]), "barking", "a dog"), (sources.clips["bell"], "ringing", "a bell")]
    assert [(c.id, c.video_caption) for c in pairs.load_clips(tuples)] == [("dog", "a dog"), ("bell", "a bell")]
    with pytest.raises(InputError, match=r"clips\[0\] is .*pass \(path, audio_caption, video_caption\)"):
        pairs.load_clips([(sources.clips["dog"], "only one caption")])
    with pytest.raises(InputError, match="two clips have the id 'dog'"):
        pairs.load_clips([(sources.clips["dog"], "a", "b"), (sources.clips["dog"], "c", "d")])


# ------------------------------------------------------------------------------------ staging and resuming


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so no clean-up runs."""


def test_a_killed_run_resumes_and_a_failed_run_leaves_nothing(sources, tmp_path, monkeypatch):
    tuples = [(sources.clips[c], caption_of(c, "audio"), caption_of(c, "video")) for c in ("dog", "engine", "bell")]
    plan = plan_pairs(pairs.load_clips(tuples), pairing="random", seed=1)
    real, calls = pairs.remux_with_audio, []

    def remux(video, audio, out, container, fail_at=None, error=Killed):
        calls.append(Path(out).name)
        if len(calls) == fail_at:
            raise error("stopped")
        return real(video, audio, out, container)

    out = tmp_path / "a" / "pairs"
    monkeypatch.setattr(pairs, "remux_with_audio", lambda *a: remux(*a, fail_at=4))
    with pytest.raises(Killed):
        pairs.write_pairs(plan, out, progress=False)
    stage = tmp_path / "a" / ".pairs.partial"
    assert not out.exists() and stage.is_dir()
    (stage / "factual" / ".stale.partial").write_text("a clip half written when the run was killed")
    with (stage / "progress.jsonl").open("a") as log:
        log.write('{"id": "engine", "kind": "fact')  # a row cut short by the kill
    calls.clear()
    monkeypatch.setattr(pairs, "remux_with_audio", lambda *a: remux(*a))
    rows = pairs.write_pairs(plan, out, progress=False)
    assert len(calls) == len(plan) - 3, "the three clips finished before the kill are reused"
    assert [r.id for r in rows] == [p.id for p in plan] and not stage.exists()
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == sorted(
        [Path(r.path).name for r in rows] + ["manifest.csv", "manifest.jsonl"])
    for failure in (ValueError, KeyboardInterrupt):
        calls.clear()
        monkeypatch.setattr(pairs, "remux_with_audio", lambda *a, e=failure: remux(*a, fail_at=2, error=e))
        with pytest.raises(failure):
            pairs.write_pairs(plan, tmp_path / "b" / "c" / "pairs", progress=False)
        assert not (tmp_path / "b").exists(), f"{failure.__name__}: a failed run leaves no folder"


WHO_IMPORTS_SCIPY = """
import json, sys, traceback

importers = []


class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "scipy":  # the file whose import statement asked for it
            outside = [f for f in traceback.extract_stack()[:-1] if not f.filename.startswith("<")]
            importers.append(outside[-1].filename if outside else "?")
        return None


sys.meta_path.insert(0, Watch())
import hooked_avllm, hooked_avllm.study.pairs, hooked_avllm.__main__
print(json.dumps(sorted(set(importers))))
"""


def test_importing_the_pair_builder_does_not_import_scipy():
    """scipy (the ``study`` extra) is imported only where the optimal assignment runs: no module of
    ours imports it at import time (a dependency may: transformer-lens 3.x imports transformers)."""
    out = subprocess.run([sys.executable, "-c", WHO_IMPORTS_SCIPY], capture_output=True, text=True, cwd=ROOT, check=True)
    ours = [path for path in json.loads(out.stdout.strip().splitlines()[-1]) if str(ROOT) in path]
    assert not ours, f"these modules import scipy at import time: {ours}"


# ------------------------------------------------------------------------------------ the command line


def cli(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_the_command_line_end_to_end(sources, tmp_path, capsys):
    out = tmp_path / "new" / "pairs"
    status, stdout, stderr = cli(capsys, "pairs", "--clips", sources.folder, "--captions", sources.captions,
                                 "--out", out, "--n-counterfactual", "2", "--pairing", "random", "--seed", "7",
                                 "--no-progress")
    assert status == 0, stderr
    rows = pairs.read_manifest(out / "manifest.jsonl")
    assert [r.kind for r in rows].count("factual") == 4 and [r.kind for r in rows].count("counterfactual") == 2
    assert "wrote 4 factual and 2 counterfactual clips" in stdout and "word_overlap: mean" in stdout
    assert re.search(r"hooked-avllm: warning: \d of 6 clips end in silence .*'rain'", stderr), stderr  # rain's 0.5 s
    assert all((out / r.path).is_file() for r in rows)
    again = tmp_path / "again"
    assert cli(capsys, "pairs", "--clips", sources.folder, "--captions", sources.captions, "--out", again,
               "--n-counterfactual", "2", "--pairing", "random", "--seed", "7", "--no-progress")[0] == 0
    assert [(r.video_id, r.audio_id) for r in pairs.read_manifest(again / "manifest.jsonl")] == [
        (r.video_id, r.audio_id) for r in rows], "the seed fixes the pairs"


def setup_failure(name: str, sources, tmp_path: Path, monkeypatch) -> list[str]:
    """The arguments of one bad command line (files it needs are made here)."""
    base = ["--clips", sources.folder, "--captions", sources.captions]
    if name == "one clip":
        one = tmp_path / "one.csv"
        one.write_text("id,caption\ndog,a dog barks\n")
        return ["--clips", sources.folder, "--captions", one]
    if name == "a caption without its clip":
        extra = tmp_path / "extra.csv"
        extra.write_text(sources.captions.read_text() + "cat,a cat meows,,\n")
        return ["--clips", sources.folder, "--captions", extra]
    if name == "a clip without sound":
        listing = tmp_path / "list.txt"
        listing.write_text(f"{sources.clips['dog']}\n{sources.silent}\n")
        captions = tmp_path / "with_silent.csv"
        captions.write_text(sources.captions.read_text() + "silent,nothing,,\n")
        return ["--clips", listing, "--captions", captions]
    if name == "a VP9 clip in QuickTime":
        folder = tmp_path / "vp9"
        folder.mkdir()
        write_clip(folder / "dog.webm", 300, 1.0, video_codec="libvpx-vp9", audio_codec="libopus", rate=48000)
        write_clip(folder / "engine.mp4", 700, 1.0)
        return ["--clips", folder, "--captions", sources.captions.parent / "two.csv"]
    if name == "captions that cannot be parsed":
        (tmp_path / "broken.jsonl").write_text('{"id": "dog", "caption": \n')
        return ["--clips", sources.folder, "--captions", tmp_path / "broken.jsonl"]
    if name == "out is not empty":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "keep.txt").write_text("the user's file")
        return base
    if name == "out is a file":
        (tmp_path / "out").write_text("a file")
        return base
    if name in ("a clip fails mid-run", "Ctrl-C mid-run"):
        real, calls = pairs.remux_with_audio, []
        error = ValueError("a clip could not be used (stand-in)") if name.startswith("a clip") else KeyboardInterrupt()

        def remux(*args):
            calls.append(args)
            if len(calls) == 3:
                raise error
            return real(*args)

        monkeypatch.setattr(pairs, "remux_with_audio", remux)
        return base
    return {"no arguments": [], "no --captions": ["--clips", sources.folder],
            "--n-counterfactual 0": [*base, "--n-counterfactual", "0"],
            "more counterfactuals than clips": [*base, "--n-counterfactual", "5"],
            "an unknown pairing": [*base, "--pairing", "nearest"],
            "a negative seed": [*base, "--seed", "-1"],
            "no captions file": ["--clips", sources.folder, "--captions", tmp_path / "missing.csv"],
            "no clips folder": ["--clips", tmp_path / "missing", "--captions", sources.captions]}[name]


FAILURES = [  # name, exit status, what the one line says
    ("no arguments", 2, "the following arguments are required: --clips, --captions, --out"),
    ("no --captions", 2, "the following arguments are required: --captions$"),
    ("--n-counterfactual 0", 2, "argument --n-counterfactual: must be at least 1, got 0"),
    ("more counterfactuals than clips", 2, "argument --n-counterfactual: 5 is more than the 4 clips .* pass at most 4"),
    ("an unknown pairing", 2, "argument --pairing: invalid choice: 'nearest'"),
    ("a negative seed", 2, "argument --seed: must be at least 0, got -1"),
    ("no captions file", 1, "argument --captions: '.*missing.csv': is no file .*; pass a .csv or .jsonl file"),
    ("captions that cannot be parsed", 1, "argument --captions: '.*broken.jsonl': cannot be parsed .*JSON Lines"),
    ("no clips folder", 1, "argument --clips: no folder or list file .*missing"),
    ("one clip", 1, "argument --clips: .*1 clip; pass at least 2"),
    ("a caption without its clip", 1, "argument --clips: 1 of 5 caption ids have no video file .*'cat'"),
    ("a clip without sound", 1, "argument --clips: .*silent.mp4 has no sound track"),
    ("a VP9 clip in QuickTime", 1,
     "argument --clips: .*dog.webm: the mov container cannot hold its vp9 video .*--container mkv"),
    ("out is not empty", 1, "argument --out: .* exists and is not empty; pass a new or empty folder$"),
    ("out is a file", 1, "argument --out: .* is a file; pass a folder"),
    ("a clip fails mid-run", 1, "a clip could not be used"),
    ("Ctrl-C mid-run", 130, "interrupted; nothing was written"),
]


@pytest.mark.parametrize("name, status, message", FAILURES, ids=[f[0] for f in FAILURES])
def test_command_line_errors_are_one_line_with_their_status_and_leave_nothing(name, status, message, sources, tmp_path,
                                                                            capsys, monkeypatch):
    if name == "a VP9 clip in QuickTime":
        require_vp9_and_opus()
        (sources.captions.parent / "two.csv").write_text("id,caption\ndog,a dog barks\nengine,an engine revs\n")
    argv = setup_failure(name, sources, tmp_path, monkeypatch)
    out = tmp_path / "out"
    existed = sorted(p.name for p in tmp_path.rglob("*"))
    got, stdout, stderr = cli(capsys, "pairs", *argv, *(["--out", out] if argv else []), "--no-progress")
    assert got == status, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    line = stderr.strip()
    assert line.startswith("hooked-avllm: error: "), line
    assert re.search(message, line), line
    assert sorted(p.name for p in tmp_path.rglob("*")) == existed, "nothing written: no output, no staging folder"

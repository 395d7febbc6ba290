"""The bad-input catalogue, area "cli": ``hooked-avllm demo`` and ``hooked-avllm train-toy`` run
in-process through ``hooked_avllm.__main__.main``.

Every bad command line must end with one line on stderr (``hooked-avllm: error: ...`` naming the
argument and the value), no traceback, exit status 2 for arguments wrong on their own and 1 for a
file or model that cannot be used, no model loaded when the arguments alone are wrong, and nothing
left behind: no output folder, no staging folder. Valid but unusual command lines (``expect=None``)
assert what they do; training and the full demo are replaced by recorders where only the command
line is under test (``tests/test_demo.py`` runs the demo itself).
"""

from __future__ import annotations

import tempfile
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
from bad_inputs import Case, check
from test_inputs_support import write_mp4

from hooked_avllm.__main__ import main
from hooked_avllm.model import HookedAVLLM
from hooked_avllm.toy import CHECKPOINTS, OMNI_PATH, VL_PATH


class CLIFailed(Exception):
    """``main`` returned a non-zero status; the message is ``exit N: <the stderr line>``."""


class UsageError(CLIFailed):
    """Exit status 2: the arguments are wrong on their own."""


class FileProblem(CLIFailed):
    """Exit status 1: a file, folder or model the arguments name cannot be used."""


class Interrupted(CLIFailed):
    """Exit status 130: Ctrl-C."""


FAILURES = {2: UsageError, 1: FileProblem, 130: Interrupted}


def cli(ctx: SimpleNamespace, *argv: str) -> str:
    """Run the command line; on failure check the one-line message and raise its :class:`CLIFailed`;
    on success return stdout."""
    status = main([str(a) for a in argv])
    out, err = ctx.capsys.readouterr()
    if status == 0:
        return out
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("hooked-avllm: error: "), lines[0]
    raise FAILURES[status](f"exit {status}: {lines[0]}")


# ------------------------------------------------------------------------------------ media files


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("cli_media")
    clip = write_mp4(folder / "clip.mp4", seconds=1.0, fps=10, size=(56, 56))
    silent = write_mp4(folder / "silent.mp4", seconds=1.0, fps=10, size=(56, 56), audio_rate=None)
    t = np.arange(16000) / 16000
    other = folder / "other.wav"
    soundfile.write(other, 0.3 * np.sin(2 * np.pi * 2000 * t), 16000)
    empty = folder / "empty.wav"
    soundfile.write(empty, np.zeros(0), 16000)
    garbage_mp4, garbage_wav = folder / "garbage.mp4", folder / "garbage.wav"
    garbage_mp4.write_bytes(b"this is not a video\n" * 50)
    garbage_wav.write_bytes(b"RIFF nonsense" * 20)
    no_config = folder / "no_config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes(b"")
    return SimpleNamespace(clip=clip, silent=silent, other=other, empty=empty, garbage_mp4=garbage_mp4,
                           garbage_wav=garbage_wav, no_config=no_config, folder=folder)


# ------------------------------------------------------------------------------------ recorders


def record_training(ctx: SimpleNamespace) -> list[dict]:
    """Replace the training itself by a recorder of its arguments."""
    import hooked_avllm.toy.train as train_module

    calls: list[dict] = []
    ctx.monkeypatch.setattr(train_module, "train", lambda out, config, evaluate_after, base_from: calls.append(
        {"out": Path(out), "config": config, "evaluate_after": evaluate_after, "base_from": base_from}) or {})
    return calls


def record_demo(ctx: SimpleNamespace) -> list[dict]:
    """Replace the demo run by a recorder that writes a one-line report where the demo would."""
    import hooked_avllm.demo as demo_module

    calls: list[dict] = []

    def fake(out, **kwargs):
        calls.append({"out": Path(out), **kwargs})
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "report.md").write_text("# recorded\n")
        return Path(out) / "report.md"

    ctx.monkeypatch.setattr(demo_module, "run_demo", fake)
    return calls


def allow_model_loading(ctx: SimpleNamespace) -> None:
    ctx.monkeypatch.setattr(HookedAVLLM, "from_pretrained", ctx.from_pretrained)


def nonempty(ctx: SimpleNamespace, name: str) -> Path:
    folder = ctx.work / name
    folder.mkdir()
    (folder / "keep.txt").write_text("the user's file\n")
    return folder


def a_file(ctx: SimpleNamespace, name: str) -> Path:
    path = ctx.work / name
    path.write_text("a file, not a folder\n")
    return path


def interrupt(ctx: SimpleNamespace) -> None:
    import hooked_avllm.toy as toy

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    ctx.monkeypatch.setattr(toy, "load_toy", stop)


def fail_after_writing(ctx: SimpleNamespace) -> None:
    """A demo that writes a plot, then meets a bad input: nothing of it may stay."""
    import hooked_avllm.demo as demo_module

    def fake(report, n_clips, seed, progress):
        (report.folder / "attention_share.png").write_bytes(b"half a run")
        raise ValueError("a clip could not be used (stand-in for any input error in the middle of a run)")

    ctx.monkeypatch.setattr(demo_module, "_run_toy", fake)


# ------------------------------------------------------------------------------------ handled cases


def help_is_plain(ctx: SimpleNamespace, command: str) -> None:
    out = " ".join(cli(ctx, *([command] if command else []), "--help").split())  # help wraps lines anywhere
    for markup in ("``", ":func:", ":mod:", ":class:", "%(default)"):
        assert markup not in out, (markup, out)
    if command == "demo":
        assert "(default: 40)" in out and "(default: hooked_avllm_demo)" in out and "(default: 1000)" in out
    if command == "train-toy":
        assert "(default: ./hooked_avllm_toy)" in out and "(default: 0)" in out and "--replace-shipped" in out
    assert "exit status" in out


def version_printed(ctx: SimpleNamespace) -> None:
    assert cli(ctx, "--version").strip() == f"hooked-avllm {version('hooked-avllm')}"


def train_default_is_a_new_folder(ctx: SimpleNamespace) -> None:
    calls = record_training(ctx)
    cli(ctx, "train-toy", "--no-eval")
    assert calls[0]["out"] == Path("hooked_avllm_toy") and calls[0]["out"].resolve() != CHECKPOINTS.resolve()
    assert calls[0]["config"].seed == 0 and calls[0]["evaluate_after"] is False


def train_replaces_shipped_only_when_asked(ctx: SimpleNamespace) -> None:
    calls = record_training(ctx)
    cli(ctx, "train-toy", "--replace-shipped", "--av-steps", "3")
    assert calls[0]["out"] == CHECKPOINTS and calls[0]["config"].av.steps == 3


def train_force_into_nonempty(ctx: SimpleNamespace) -> None:
    calls = record_training(ctx)
    folder = nonempty(ctx, "old_run")
    cli(ctx, "train-toy", "--out", folder, "--force", "--av-mixture", '{"congruent:hear": 2, "audio_only:hear": 1}')
    assert calls[0]["out"] == folder and calls[0]["config"].av.mixture == {"congruent:hear": 2.0, "audio_only:hear": 1.0}


def train_into_empty_existing(ctx: SimpleNamespace) -> None:
    calls = record_training(ctx)
    (ctx.work / "empty").mkdir()
    cli(ctx, "train-toy", "--out", ctx.work / "empty", "--seed", "7", "--av-lr", "5e-4")
    assert calls[0]["out"] == ctx.work / "empty" and calls[0]["config"].seed == 7 and calls[0]["config"].av.lr == 5e-4


def demo_checked_arguments_reach_run_demo(ctx: SimpleNamespace) -> None:
    calls = record_demo(ctx)
    other_video = write_mp4(ctx.work.parent / "other.mp4", seconds=1.0, fps=10, size=(56, 56), tone=880.0)
    out = cli(ctx, "demo", "--model", OMNI_PATH, "--video", ctx.media.clip, "--audio", other_video, "--out", ctx.work / "o",
              "--no-progress")
    assert "# recorded" in out
    assert calls == [{"out": ctx.work / "o", "n_clips": 40, "seed": 1000, "progress": False, "model": str(OMNI_PATH),
                      "video": ctx.media.clip, "audio": other_video}]


def demo_toy_defaults(ctx: SimpleNamespace) -> None:
    calls = record_demo(ctx)
    cli(ctx, "demo", "--clips", "1", "--seed", "0")
    assert calls[0]["out"] == Path("hooked_avllm_demo") and calls[0]["n_clips"] == 1 and calls[0]["seed"] == 0
    assert calls[0]["model"] is None and calls[0]["video"] is None


# ------------------------------------------------------------------------------------ the catalogue

CASES = [
    # demo: values out of range (exit 2, before anything loads)
    Case("demo --clips 0", "cli", lambda c: cli(c, "demo", "--clips", "0"), UsageError,
         r"exit 2: .*argument --clips: must be at least 1, got 0"),
    Case("demo --clips -3", "cli", lambda c: cli(c, "demo", "--clips", "-3"), UsageError,
         r"exit 2: .*argument --clips: must be at least 1, got -3"),
    Case("demo --clips ten", "cli", lambda c: cli(c, "demo", "--clips", "ten"), UsageError,
         r"exit 2: .*argument --clips: expected a whole number, got 'ten'"),
    Case("demo --clips 2.5", "cli", lambda c: cli(c, "demo", "--clips", "2.5"), UsageError,
         r"exit 2: .*argument --clips: expected a whole number, got '2.5'"),
    Case("demo --clips 100000", "cli", lambda c: cli(c, "demo", "--clips", "100000"), UsageError,
         r"exit 2: .*argument --clips: must be at most 1000, got 100000"),
    Case("demo --seed -1", "cli", lambda c: cli(c, "demo", "--seed", "-1"), UsageError,
         r"exit 2: .*argument --seed: must be at least 0, got -1"),
    Case("demo --bogus", "cli", lambda c: cli(c, "demo", "--bogus"), UsageError, r"exit 2: .*unrecognized arguments: --bogus"),
    Case("no command", "cli", lambda c: cli(c), UsageError, r"exit 2: .*required: COMMAND"),
    Case("misspelt command", "cli", lambda c: cli(c, "demoo"), UsageError, r"exit 2: .*invalid choice: 'demoo'.*'demo'"),
    # demo: options that do not go together (exit 2)
    Case("demo --video without --model", "cli", lambda c: cli(c, "demo", "--video", c.media.clip), UsageError,
         r"exit 2: .*argument --video: .*add --model"),
    Case("demo --audio without --video", "cli", lambda c: cli(c, "demo", "--audio", c.media.other), UsageError,
         r"exit 2: .*argument --audio: .*add --video"),
    Case("demo --model without --video", "cli", lambda c: cli(c, "demo", "--model", OMNI_PATH), UsageError,
         r"exit 2: .*argument --model: '.*omni' needs your clip: add --video"),
    Case("demo --model with --clips", "cli",
         lambda c: cli(c, "demo", "--model", OMNI_PATH, "--video", c.media.clip, "--clips", "5"), UsageError,
         r"exit 2: .*argument --clips: applies to the toy model"),
    Case("demo --audio is the --video file", "cli",
         lambda c: cli(c, "demo", "--model", OMNI_PATH, "--video", c.media.clip, "--audio", c.media.clip), UsageError,
         r"exit 2: .*argument --audio: '.*clip.mp4' is the --video file itself"),
    # demo: files that cannot be used (exit 1, before any model loads)
    Case("demo --video missing", "cli", lambda c: cli(c, "demo", "--model", OMNI_PATH, "--video", c.work / "nope.mp4"),
         FileProblem, r"exit 1: .*argument --video: Video file not found: .*nope\.mp4"),
    Case("demo --video not a video", "cli",
         lambda c: cli(c, "demo", "--model", OMNI_PATH, "--video", c.media.garbage_mp4), FileProblem,
         r"exit 1: .*argument --video: Cannot read video .*garbage\.mp4"),
    Case("demo --video without sound", "cli", lambda c: cli(c, "demo", "--model", OMNI_PATH, "--video", c.media.silent),
         FileProblem, r"exit 1: .*argument --video: '.*silent\.mp4' has no sound track"),
    Case("demo --video is a folder", "cli", lambda c: cli(c, "demo", "--model", OMNI_PATH, "--video", c.media.folder),
         FileProblem, r"exit 1: .*argument --video: Video path .*cli_media.* is a folder"),
    Case("demo --audio missing", "cli",
         lambda c: cli(c, "demo", "--model", OMNI_PATH, "--video", c.media.clip, "--audio", c.work / "nope.wav"),
         FileProblem, r"exit 1: .*argument --audio: Audio file not found: .*nope\.wav"),
    Case("demo --audio not a sound", "cli",
         lambda c: cli(c, "demo", "--model", OMNI_PATH, "--video", c.media.clip, "--audio", c.media.garbage_wav),
         FileProblem, r"exit 1: .*argument --audio: .*garbage\.wav"),
    Case("demo --audio with no samples", "cli",
         lambda c: cli(c, "demo", "--model", OMNI_PATH, "--video", c.media.clip, "--audio", c.media.empty),
         FileProblem, r"exit 1: .*argument --audio: .*empty\.wav"),
    Case("demo --model missing folder", "cli",
         lambda c: cli(c, "demo", "--model", c.work / "no" / "such" / "checkpoint", "--video", c.media.clip), FileProblem,
         r"exit 1: .*argument --model: no folder '.*no/such/checkpoint'"),
    Case("demo --model is a file", "cli", lambda c: cli(c, "demo", "--model", c.media.other, "--video", c.media.clip),
         FileProblem, r"exit 1: .*argument --model: '.*other\.wav' is a file"),
    Case("demo --model folder without config.json", "cli",
         lambda c: cli(c, "demo", "--model", c.media.no_config, "--video", c.media.clip), FileProblem,
         r"exit 1: .*argument --model: '.*no_config' has no config\.json"),
    Case("demo --model without an audio tower", "cli",
         lambda c: (allow_model_loading(c), cli(c, "demo", "--model", VL_PATH, "--video", c.media.clip)), FileProblem,
         r"exit 1: .*--model '.*vl' is not an audio-visual model"),
    Case("demo --out is a file", "cli", lambda c: cli(c, "demo", "--out", a_file(c, "report.txt")), FileProblem,
         r"exit 1: .*argument --out: '.*report\.txt' is a file; pass a folder"),
    Case("demo --out under a file", "cli", lambda c: cli(c, "demo", "--out", a_file(c, "plain") / "sub"), FileProblem,
         r"exit 1: .*argument --out: '.*plain' is a file, so '.*plain/sub' cannot be created"),
    # demo: a run that fails or is interrupted leaves nothing behind
    Case("demo fails after writing a plot", "cli",
         lambda c: (fail_after_writing(c), cli(c, "demo", "--out", c.work / "new" / "demo")), FileProblem,
         r"exit 1: hooked-avllm: error: a clip could not be used"),
    Case("demo interrupted", "cli", lambda c: (interrupt(c), cli(c, "demo", "--out", c.work / "new")), Interrupted,
         r"exit 130: .*interrupted; nothing was written"),
    # train-toy
    Case("train-toy --out non-empty without --force", "cli",
         lambda c: cli(c, "train-toy", "--out", nonempty(c, "old_run")), FileProblem,
         r"exit 1: .*argument --out: '.*old_run' exists and holds files; .*--force"),
    Case("train-toy --out the shipped checkpoints", "cli", lambda c: cli(c, "train-toy", "--out", OMNI_PATH.parent),
         UsageError, r"exit 2: .*argument --out: '.*toy/checkpoints' is the shipped checkpoints' folder; pass --replace-shipped"),
    Case("train-toy --replace-shipped with --out", "cli",
         lambda c: cli(c, "train-toy", "--replace-shipped", "--out", c.work / "x"), UsageError,
         r"exit 2: .*argument --out: not allowed with --replace-shipped"),
    Case("train-toy --seed -1", "cli", lambda c: cli(c, "train-toy", "--seed", "-1"), UsageError,
         r"exit 2: .*argument --seed: must be at least 0, got -1"),
    Case("train-toy --av-steps 0", "cli", lambda c: cli(c, "train-toy", "--av-steps", "0"), UsageError,
         r"exit 2: .*argument --av-steps: must be at least 1, got 0"),
    Case("train-toy --threads 0", "cli", lambda c: cli(c, "train-toy", "--threads", "0"), UsageError,
         r"exit 2: .*argument --threads: must be at least 1, got 0"),
    Case("train-toy --av-lr nan", "cli", lambda c: cli(c, "train-toy", "--av-lr", "nan"), UsageError,
         r"exit 2: .*argument --av-lr: must be a finite number above 0, got nan"),
    Case("train-toy --av-new-lr -1", "cli", lambda c: cli(c, "train-toy", "--av-new-lr", "-1"), UsageError,
         r"exit 2: .*argument --av-new-lr: must be a finite number above 0, got -1"),
    Case("train-toy --av-lr words", "cli", lambda c: cli(c, "train-toy", "--av-lr", "fast"), UsageError,
         r"exit 2: .*argument --av-lr: invalid float value: 'fast'"),
    Case("train-toy --av-mixture invalid JSON", "cli", lambda c: cli(c, "train-toy", "--av-mixture", "{congruent:hear: 1}"),
         UsageError, r"exit 2: .*argument --av-mixture: not valid JSON .*'\{congruent:hear: 1\}'"),
    Case("train-toy --av-mixture unknown question", "cli",
         lambda c: cli(c, "train-toy", "--av-mixture", '{"congruent:smell": 1}'), UsageError,
         r"exit 2: .*argument --av-mixture: 'congruent:smell' is not kind:question"),
    Case("train-toy --av-mixture audio-only see", "cli",
         lambda c: cli(c, "train-toy", "--av-mixture", '{"audio_only:see": 1}'), UsageError,
         r"exit 2: .*argument --av-mixture: 'audio_only:see' asks what a clip without a picture shows"),
    Case("train-toy --av-mixture negative weight", "cli",
         lambda c: cli(c, "train-toy", "--av-mixture", '{"congruent:hear": -1}'), UsageError,
         r"exit 2: .*argument --av-mixture: the weight of 'congruent:hear' must be a number above 0, got -1"),
    Case("train-toy --av-mixture a list", "cli", lambda c: cli(c, "train-toy", "--av-mixture", '["congruent:hear"]'),
         UsageError, r"exit 2: .*argument --av-mixture: expected a JSON object of weights"),
    Case("train-toy --base-from missing", "cli", lambda c: cli(c, "train-toy", "--base-from", c.work / "old" / "vl"),
         FileProblem, r"exit 1: .*argument --base-from: '.*old/vl' is not a saved base"),
    Case("train-toy --base-from with --base-steps", "cli",
         lambda c: cli(c, "train-toy", "--base-from", VL_PATH, "--base-steps", "5"), UsageError,
         r"exit 2: .*argument --base-steps: stage 1 is skipped with --base-from"),
    # valid but unusual: handled
    Case("--version", "cli", version_printed, None),
    Case("--help plain with defaults", "cli", lambda c: help_is_plain(c, ""), None),
    Case("demo --help plain with defaults", "cli", lambda c: help_is_plain(c, "demo"), None),
    Case("train-toy --help plain with defaults", "cli", lambda c: help_is_plain(c, "train-toy"), None),
    Case("train-toy default out is a new folder", "cli", train_default_is_a_new_folder, None),
    Case("train-toy --replace-shipped", "cli", train_replaces_shipped_only_when_asked, None),
    Case("train-toy --force into a non-empty folder", "cli", train_force_into_nonempty, None),
    Case("train-toy into an empty existing folder", "cli", train_into_empty_existing, None),
    Case("demo --clips 1 --seed 0 reach the demo", "cli", demo_toy_defaults, None),
    Case("demo with an mp4 as the other sound", "cli", demo_checked_arguments_reach_run_demo, None),
]

# cases whose command writes a folder by design (the recorders stand in for the run)
WRITES = {"demo --clips 1 --seed 0 reach the demo": {"hooked_avllm_demo"},
          "demo with an mp4 as the other sound": {"o"}}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input(case, media, tmp_path, capsys, monkeypatch):
    work, staging = tmp_path / "work", tmp_path / "staging"
    work.mkdir(), staging.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(staging))  # the demo's staging folder goes here
    from_pretrained = HookedAVLLM.__dict__["from_pretrained"]

    def no_loading(*args, **kwargs):
        raise AssertionError(f"{case.name}: a model was loaded before the command line was checked")

    monkeypatch.setattr(HookedAVLLM, "from_pretrained", classmethod(no_loading))
    ctx = SimpleNamespace(capsys=capsys, monkeypatch=monkeypatch, media=media, work=work,
                          from_pretrained=from_pretrained)
    made_by_case = {"old_run", "report.txt", "plain", "empty"}
    check(case, ctx)
    left = {p.name for p in work.iterdir()} - made_by_case - WRITES.get(case.name, set())
    assert not left, f"{case.name}: left behind {sorted(left)}"
    stale = [p.name for p in staging.iterdir() if p.name.startswith("hooked_avllm_demo_")]
    assert not stale, f"{case.name}: the demo's staging folder was left behind: {stale}"
    if case.name == "train-toy --out non-empty without --force":
        assert [p.name for p in (work / "old_run").iterdir()] == ["keep.txt"]

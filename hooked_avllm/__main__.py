"""The command line: ``hooked-avllm demo`` (also ``python -m hooked_avllm demo``), ``hooked-avllm train-toy``
and ``hooked-avllm pairs``.

``demo`` runs the study in miniature on the shipped toy model (:mod:`hooked_avllm.demo`) and
writes a Markdown report with plots; ``--model`` with ``--video`` (and ``--audio``) runs it on a
real checkpoint and your clip. ``train-toy`` retrains the toy models from their fixed seeds into a
new folder (:mod:`hooked_avllm.toy.train`). ``pairs`` writes the study's factual and counterfactual
clips (another clip's sound) with a manifest (:mod:`hooked_avllm.study.pairs`).

A user error ends as one line on stderr, ``hooked-avllm: error: ...``, never a traceback: exit
status 2 for arguments that are wrong on their own (a value out of range, options that do not go
together), 1 for a file or model the arguments name that cannot be used (missing, unreadable, not
decodable, an output folder in the way). Every check runs before a model loads, and a run that
fails leaves no folder behind.

Example:
    >>> main(["demo", "--clips", "0"])  # doctest: +SKIP
    hooked-avllm: error: argument --clips: must be at least 1, got 0
    2
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

PROG = "hooked-avllm"
MAX_CLIPS = 1000  # clips of each kind; the default 40 takes seconds, 1000 minutes
EXIT_STATUS = "exit status: 0 done, 1 a file or model that cannot be used, 2 bad arguments"


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit status ``status`` (2 arguments, 1 files)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    """argparse whose errors become :class:`UserError` (one line, no usage dump, no exit inside)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(message, 2)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each help line (but not "None" for options without one); descriptions kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


# ------------------------------------------------------------------------------------ value types


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number in ``[low, high]``.

    Example:
        >>> int_range(1, 10)("3")
        3
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


# ------------------------------------------------------------------------------------ the parser


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("hooked-avllm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> Parser:
    """The ``hooked-avllm`` parser with its ``demo``, ``train-toy`` and ``pairs`` commands."""
    parser = Parser(prog=PROG, formatter_class=HelpFormatter, epilog=EXIT_STATUS,
                    description="Interpretability of audio-visual LLMs: the study in miniature, the toy model and "
                                "the study's counterfactual clips.")
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    add_demo(commands)
    add_train_toy(commands)
    add_pairs(commands)
    return parser


def add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", formatter_class=HelpFormatter, epilog=EXIT_STATUS,
        help="the study in miniature on the shipped toy model (or on a checkpoint and your clip)",
        description=(
            "Run every experiment of the study (captions, attention share, logit lens, knockout, activation\n"
            "patching, token shift, a frame heatmap) and write report.md, numbers.json and PNG plots.\n\n"
            "  hooked-avllm demo                                   the toy model on synthetic clips\n"
            "  hooked-avllm demo --model Qwen/Qwen2.5-Omni-3B --video clip.mp4 --audio other.wav\n"
            "                                                      a checkpoint on your clip with its own\n"
            "                                                      sound, and with the sound of other.wav"),
    )
    demo.add_argument("--out", default="hooked_avllm_demo", type=Path, metavar="FOLDER",
                      help="folder for report.md, numbers.json and the plots (created at the end of a "
                           "successful run; files of an earlier run there are replaced)")
    toy = demo.add_argument_group("toy model (the default)")
    toy.add_argument("--clips", type=int_range(1, MAX_CLIPS), default=None, metavar="N",
                     help="clips of each kind: N with their own sound, N with another object's sound (default: 40)")
    toy.add_argument("--seed", type=int_range(0, 2**32 - 1), default=None,
                     help="seed of the toy clips; training used 0 (default: 1000)")
    real = demo.add_argument_group("a checkpoint and your clip")
    real.add_argument("--model", metavar="NAME_OR_FOLDER",
                      help="a checkpoint folder or hub id of an audio-visual model; needs --video")
    real.add_argument("--video", type=Path, metavar="FILE",
                      help="with --model: a video file with its sound track")
    real.add_argument("--audio", type=Path, metavar="FILE",
                      help="with --video: another sound; the demo also runs your clip's frames with this sound "
                           "and patches from this sound alone")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(run=run_demo_command)


def add_train_toy(commands: Any) -> None:
    from hooked_avllm.toy.train import add_arguments

    train = commands.add_parser(
        "train-toy", formatter_class=HelpFormatter, epilog=EXIT_STATUS,
        help="retrain the toy models from their fixed seeds (into a new folder)",
        description="Retrain the toy vision-language base and the toy audio-visual model from their fixed seeds,\n"
                    "then evaluate them and write their model cards (about 8 minutes on 2 CPU cores).",
    )
    add_arguments(train)
    train.set_defaults(run=run_train_command)


def add_pairs(commands: Any) -> None:
    pairs = commands.add_parser(
        "pairs", formatter_class=HelpFormatter, epilog=EXIT_STATUS,
        help="write factual clips and counterfactual clips (another clip's sound), with a manifest",
        description=(
            "Write every clip with its own sound (factual/) and clips whose sound is another clip's\n"
            "(counterfactual/), plus manifest.jsonl and manifest.csv, into a new folder. The video is\n"
            "copied packet for packet; the sound is stored as float PCM in .mov, cut or padded with\n"
            "silence to the video's length. Partners minimise the total word overlap of the captions\n"
            "(an optimal assignment, no clip its own partner), or are drawn at random.\n\n"
            "  hooked-avllm pairs --clips clips/ --captions captions.csv --out pairs/\n\n"
            "Captions: CSV with a header, or JSON Lines; one row per clip with its id (id, clip_id or\n"
            "youtube_id: the clip's file name without suffix) and audio_caption and video_caption,\n"
            "or caption for both."),
    )
    pairs.add_argument("--clips", required=True, type=Path, metavar="DIR_OR_LIST",
                       help="a folder of video files with sound (the captions file says which are used), or a "
                            "text file with one clip path a line")
    pairs.add_argument("--captions", required=True, type=Path, metavar="FILE",
                       help="the clips' reference captions: .csv or .jsonl")
    pairs.add_argument("--out", required=True, type=Path, metavar="FOLDER",
                       help="a new or empty folder (written at the end of a successful run)")
    pairs.add_argument("--n-counterfactual", type=int_range(1), default=None, metavar="N",
                       help="counterfactual clips, for N clips drawn with --seed (default: one per clip)")
    pairs.add_argument("--pairing", choices=("overlap", "random"), default="overlap",
                       help="overlap: the optimal assignment minimising the captions' word overlap; random: a "
                            "random derangement drawn with --seed")
    pairs.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0,
                       help="seed of the random pairing and of the subset of --n-counterfactual")
    pairs.add_argument("--container", choices=("mov", "mkv"), default="mov",
                       help="mov keeps every timestamp; mkv also holds VP9 and AV1 video (times in milliseconds)")
    pairs.add_argument("--no-progress", action="store_true", help="no progress bars")
    pairs.set_defaults(run=run_pairs_command)


# ------------------------------------------------------------------------------------ the commands


def run_demo_command(args: argparse.Namespace) -> int:
    check_demo_arguments(args)
    check_output_folder(args.out, "--out")
    if args.model is not None:
        check_model_argument(args.model)
        check_video_file(args.video)
        if args.audio is not None:
            check_audio_file(args.audio)
    from hooked_avllm.demo import run_demo

    report = run_demo(args.out, n_clips=args.clips or 40, seed=1000 if args.seed is None else args.seed,
                      progress=not args.no_progress, model=args.model, video=args.video, audio=args.audio)
    print(report.read_text())
    print(f"report: {report}  (plots beside it)")
    return 0


def check_demo_arguments(args: argparse.Namespace) -> None:
    """Options that do not go together (exit status 2)."""
    if args.video is not None and args.model is None:
        raise UserError("argument --video: a clip of your own needs a checkpoint to run on: add --model NAME_OR_FOLDER "
                        "(the toy model makes its own clips)")
    if args.audio is not None and args.video is None:
        raise UserError("argument --audio: the other sound for your clip needs the clip: add --video FILE and --model "
                        "NAME_OR_FOLDER")
    if args.model is not None and args.video is None:
        raise UserError(f"argument --model: {args.model!r} needs your clip: add --video FILE (a video with sound)")
    if args.model is not None:
        toy_only = [flag for flag, value in (("--clips", args.clips), ("--seed", args.seed)) if value is not None]
        if toy_only:
            raise UserError(f"argument {toy_only[0]}: applies to the toy model's clips; with --model the demo runs "
                            "on your --video")
    if args.audio is not None and _same_file(args.audio, args.video):
        raise UserError(f"argument --audio: {str(args.audio)!r} is the --video file itself, so the other sound would "
                        "be the clip's own; pass a different sound")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.expanduser().resolve() == b.expanduser().resolve()
    except OSError:
        return False


def check_output_folder(folder: Path, flag: str, *, allow_nonempty: bool = True) -> None:
    """``folder`` can be created or written (exit status 1 when not); nothing is created here."""
    folder = folder.expanduser()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"argument {flag}: {str(folder)!r} is a file; pass a folder", 1)
    if folder.is_dir() and not allow_nonempty and any(folder.iterdir()):
        raise UserError(f"argument {flag}: {str(folder)!r} exists and is not empty; pass a new folder, or --force "
                        "to write into it", 1)
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"argument {flag}: {str(existing)!r} is a file, so {str(folder)!r} cannot be created", 1)
    import os

    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"argument {flag}: cannot write in {str(existing)!r} (permission denied); pass another folder", 1)


def check_model_argument(name: str) -> None:
    """A local checkpoint folder must hold config.json; a hub id is left to the loader (exit status 1)."""
    path = Path(name).expanduser()
    local = path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
    if not local:
        return
    if not path.exists():
        raise UserError(f"argument --model: no folder {name!r} (a local path, resolved from {Path.cwd()}); pass a "
                        "checkpoint folder or a hub id such as Qwen/Qwen2.5-Omni-3B", 1)
    if not path.is_dir():
        raise UserError(f"argument --model: {name!r} is a file; pass the checkpoint folder that holds config.json", 1)
    if not (path / "config.json").is_file():
        raise UserError(f"argument --model: {name!r} has no config.json; pass a Hugging Face checkpoint folder", 1)


def check_video_file(path: Path) -> None:
    """The video exists, opens, has frames and a sound track (exit status 1), without decoding it."""
    from hooked_avllm.inputs.decode import probe_video

    try:
        probe = probe_video(path)
    except (ValueError, OSError) as error:
        raise UserError(f"argument --video: {_one_line(error)}", 1) from error
    if probe.total_frames == 0:
        raise UserError(f"argument --video: {str(path)!r} has a video track without frames; re-encode it", 1)
    if not probe.has_audio:
        raise UserError(f"argument --video: {str(path)!r} has no sound track, and the demo compares your clip with its "
                        "own sound; add one (ffmpeg -i video -i sound -c:v copy out.mp4)", 1)


def check_audio_file(path: Path) -> None:
    """The sound exists and decodes to at least one sample (exit status 1)."""
    from hooked_avllm.inputs.decode import decode_audio_file

    try:
        samples, _ = decode_audio_file(path)
    except (ValueError, OSError) as error:
        raise UserError(f"argument --audio: {_one_line(error)}", 1) from error
    if samples.shape[-1] == 0:
        raise UserError(f"argument --audio: {str(path)!r} holds no samples; pass a sound that is not empty", 1)


def run_train_command(args: argparse.Namespace) -> int:
    from hooked_avllm.toy.train import checked_arguments, run

    try:
        args = checked_arguments(args)
    except ValueError as error:  # the options themselves (2) or the folders they name (FileExistsError...: 1)
        raise UserError(str(error), 1 if isinstance(error, OSError) else 2) from error
    check_output_folder(args.out, "--out")
    return run(args)


def run_pairs_command(args: argparse.Namespace) -> int:
    import warnings

    check_output_folder(args.out, "--out")
    if args.out.expanduser().is_dir() and any(args.out.expanduser().iterdir()):
        raise UserError(f"argument --out: {str(args.out)!r} exists and is not empty; pass a new or empty folder", 1)
    from hooked_avllm.study import pairs

    with _about_files("--captions", args.captions):
        captions = pairs.read_captions(args.captions)
    with _about_files("--clips"):
        clips = pairs.load_clips(args.clips, captions)
    if args.pairing == "overlap":
        _require_scipy()
    if args.n_counterfactual is not None and args.n_counterfactual > len(clips):
        raise UserError(f"argument --n-counterfactual: {args.n_counterfactual} is more than the {len(clips)} clips "
                        f"{str(args.clips)!r} and --captions give; pass at most {len(clips)}")
    with _about_files("--clips"):
        plan = pairs.plan_pairs(clips, args.n_counterfactual, args.pairing, args.seed)
        pairs.check_clips(clips, args.container, progress=not args.no_progress)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pairs.InputWarning)
        rows = pairs.write_pairs(plan, args.out, container=args.container, progress=not args.no_progress)
    print(pairs.summary(rows, args.out))
    for warning in caught:  # the library's warnings (padded sound), one line each
        print(f"{PROG}: warning: {_one_line(warning.message)}", file=sys.stderr)
    return 0


@contextmanager
def _about_files(flag: str, path: Path | None = None) -> Iterator[None]:
    """A file the flag names cannot be used (exit status 1): its error after the flag (and the file, if given)."""
    try:
        yield
    except (ValueError, OSError) as error:
        named = f"{str(path)!r}: " if path is not None else ""
        raise UserError(f"argument {flag}: {named}{_one_line(error)}", 1) from error


def _require_scipy() -> None:
    try:
        import scipy.optimize  # noqa: F401
    except ImportError:
        raise UserError("argument --pairing: overlap needs scipy's optimal assignment: pip install "
                        "'hooked-avllm[study]', or pass --pairing random", 1) from None


# ------------------------------------------------------------------------------------ entry point


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 1 a file or model that cannot be used, 2 bad arguments)."""
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except SystemExit as done:  # --help and --version
        return done.code if isinstance(done.code, int) else 0
    except UserError as error:
        return _fail(_one_line(error), error.status)
    except (ValueError, OSError) as error:  # a file, checkpoint or clip the library could not use: it says why
        return _fail(_one_line(error), 1)
    except KeyboardInterrupt:
        return _fail("interrupted; nothing was written", 130)


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``hooked-avllm demo`` (also ``python -m hooked_avllm demo``) and ``hooked-avllm train-toy``.

``demo`` runs the study in miniature on the shipped toy model (see :mod:`hooked_avllm.demo`) and
writes a Markdown report with plots; ``--model`` with ``--video``/``--audio`` runs it on a real
checkpoint. ``train-toy`` retrains the shipped toy models from their fixed seeds.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hooked-avllm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the study in miniature on the shipped toy model (or --model)")
    demo.add_argument("--out", default="hooked_avllm_demo", help="folder for report.md and the plots")
    demo.add_argument("--clips", type=int, default=40, help="factual and counterfactual clips each (toy model)")
    demo.add_argument("--seed", type=int, default=1000, help="seed of the toy clips (training used 0)")
    demo.add_argument("--model", help="a real checkpoint folder or hub id instead of the toy model")
    demo.add_argument("--video", help="with --model: a video file with its sound track")
    demo.add_argument("--audio", help="with --model: another sound for the counterfactual run")
    demo.add_argument("--no-progress", action="store_true")
    train = sub.add_parser("train-toy", help="retrain the shipped toy models (fixed seeds)")
    train.add_argument("args", nargs=argparse.REMAINDER, help="passed to python -m hooked_avllm.toy.train")
    args = parser.parse_args(argv)
    if args.command == "train-toy":
        from hooked_avllm.toy.train import main as train_main

        return int(train_main(args.args) or 0)
    from hooked_avllm.demo import run_demo

    report = run_demo(args.out, n_clips=args.clips, seed=args.seed, progress=not args.no_progress,
                      model=args.model, video=args.video, audio=args.audio)
    print(report.read_text())
    print(f"report: {report}  (plots beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Data-parallel sweeps on the shipped toy model: a knockout sweep and an attention-share sweep over
N counterfactual clips ("What do you hear?" about an object shown with another object's sound),
one model copy per rank (``hooked_avllm.parallel.device_for_rank()``), the clips split by rank and
the tables gathered; rank 0 writes them (JSON) with the wall time and the world size.

    python bench/sweep_parallel.py --clips 8 --out t1.json
    torchrun --nproc_per_node=2 bench/sweep_parallel.py --clips 8 --out t2.json
    python bench/sweep_parallel.py --compare t1.json t2.json      # equal tables?

The knockout score is 1 when the answer names the clip's true sound (``parse_answer``), for the
rules generated -> video and generated -> audio over three windows of the 6 layers. On CPU each
process uses ``--threads`` threads (default 1, what torchrun gives each process): CPU kernels split
their sums by thread count, so runs with different thread counts can differ in the last float bit
of the attention shares (never by the split over ranks; ``--compare`` prints the largest difference).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hooked_avllm import parallel  # noqa: E402
from hooked_avllm.analysis import KnockoutRule, attention_share, knockout_sweep  # noqa: E402
from hooked_avllm.toy import ToyScenes, load_toy, parse_answer  # noqa: E402
from hooked_avllm.toy.evaluate import prepare_clips  # noqa: E402

RULES = {
    "gen->video": lambda layers: KnockoutRule("generated", "video", layers),
    "gen->audio": lambda layers: KnockoutRule("generated", "audio", layers),
}
WINDOWS = [(0, 2), (2, 4), (4, 6)]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=8, help="counterfactual clips to sweep")
    parser.add_argument("--new-tokens", type=int, default=8, help="greedy tokens per generation")
    parser.add_argument("--seed", type=int, default=1000, help="ToyScenes seed (1000: the held-out clips)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process on CPU")
    parser.add_argument("--out", type=Path, default=None, help="JSON file rank 0 writes")
    parser.add_argument("--compare", type=Path, nargs=2, default=None, metavar=("A", "B"),
                        help="only compare the tables of two outputs")
    return parser.parse_args()


def compare(a: Path, b: Path) -> int:
    first, second = json.loads(a.read_text()), json.loads(b.read_text())
    same = {key: first[key] == second[key] for key in ("knockout", "attention_share")}
    shares = [(x["share"], y["share"]) for x, y in zip(first["attention_share"], second["attention_share"])]
    print(json.dumps({"equal": same, "max_share_difference": max((abs(x - y) for x, y in shares), default=0.0),
                      "world_size": [first["world_size"], second["world_size"]],
                      "threads": [first["threads"], second["threads"]], "wall_s": [first["wall_s"], second["wall_s"]]},
                     indent=1))
    return 0 if all(same.values()) else 1


def sweep(model, clips, inputs, new_tokens: int) -> tuple[dict, dict]:
    """The two sweeps (every rank returns the whole tables) and their wall times."""

    def heard_true_sound(new: torch.Tensor, clip: int) -> float:
        text = model.tokenizer.decode(new, skip_special_tokens=True)
        return float(parse_answer(text)[1] == clips[clip].sound_word)

    wall, tables = {}, {}
    start = time.perf_counter()
    knock = knockout_sweep(model, inputs, RULES, WINDOWS, heard_true_sound, max_new_tokens=new_tokens)
    wall["knockout"] = time.perf_counter() - start
    start = time.perf_counter()
    shares = attention_share(model, inputs, max_new_tokens=new_tokens)
    wall["attention_share"] = time.perf_counter() - start
    tables["knockout"] = knock.table().to_dict("records")
    tables["attention_share"] = shares.table().to_dict("records")
    return tables, wall


def main() -> int:
    args = arguments()
    if args.compare:
        return compare(*args.compare)
    rank, world_size = parallel.init_from_env()
    device = parallel.device_for_rank()
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    model = load_toy("omni", device=str(device))
    scenes = ToyScenes(seed=args.seed)
    clips = [scenes.clip("counterfactual", i) for i in range(args.clips)]
    inputs = [prepare_clips(model, [clip], "hear") for clip in clips]  # every rank the full list
    if world_size > 1:
        torch.distributed.barrier()  # start the clock together
    start = time.perf_counter()
    tables, wall = sweep(model, clips, inputs, args.new_tokens)
    wall["total"] = time.perf_counter() - start
    if parallel.is_main():
        record = {"world_size": world_size, "device": str(device), "threads": torch.get_num_threads(),
                  "clips": args.clips, "new_tokens": args.new_tokens, "wall_s": {k: round(v, 3) for k, v in wall.items()},
                  "mean_true_sound": {}, **tables}
        baseline = [row["score"] for row in tables["knockout"] if row["rule"] == "none"]
        record["mean_true_sound"]["none"] = sum(baseline) / max(1, len(baseline))
        for name in RULES:
            for first, end in WINDOWS:
                rows = [r["score"] for r in tables["knockout"] if r["rule"] == name and r["first_layer"] == first]
                record["mean_true_sound"][f"{name} {first}-{end}"] = sum(rows) / max(1, len(rows))
        text = json.dumps(record, indent=1)
        if args.out:
            args.out.write_text(text)
        summary = {k: record[k] for k in ("world_size", "device", "threads", "clips", "wall_s", "mean_true_sound")}
        print(json.dumps(summary, indent=1))
    parallel.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Host time of the "is anything watching the towers?" check of every plain forward, for
Qwen2.5-Omni-3B's towers (built on the ``meta`` device: no memory, the same modules).

    PYTHONPATH=. python bench/time_towers_unwatched.py [--calls 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hooked_avllm import HookedAVLLM
from hooked_avllm.architectures.qwen2_5_omni.config import config_from_hf
from hooked_avllm.components.hook_state import towers_unwatched

CONFIG = Path(__file__).with_name("qwen2_5_omni_3b_thinker_config.json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    cfg = config_from_hf({**json.loads(CONFIG.read_text()), "model_type": "qwen2_5_omni_thinker"})
    with torch.device("meta"):
        model = HookedAVLLM(cfg)
    towers = (model.audio, model.audio_proj, model.vision, model.vision_proj)
    for name, args_ in (("towers", towers), ("vision blocks", (model.vision.blocks,))):
        started = time.perf_counter()
        for _ in range(args.calls):
            towers_unwatched(*args_)
        print(f"{name}: {(time.perf_counter() - started) / args.calls * 1e3:.2f} ms per call")


if __name__ == "__main__":
    main()

"""Device check on the GPU machine: the toy notebook's every tool with the models on CUDA (float32
and bfloat16), and the demo's real-checkpoint path (``--model``) on CUDA with media files.

    PYTHONPATH=.:tests python bench/check_cuda.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def run_notebook(dtype: torch.dtype) -> float:
    import hooked_avllm.toy as toy

    original = toy.load_toy
    toy.load_toy = lambda kind="omni", **_: original(kind, dtype=dtype, device="cuda")
    try:
        start = time.perf_counter()
        cells = json.loads((ROOT / "notebooks" / "toy_study.ipynb").read_text())["cells"]
        namespace: dict = {}
        for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
            exec(compile("".join(cell["source"]), f"toy_study[{i}]", "exec"), namespace)
        assert namespace["omni"].embed.weight.device.type == "cuda"
        return time.perf_counter() - start
    finally:
        toy.load_toy = original


def main() -> None:
    results = {"gpu": torch.cuda.get_device_name()}
    for dtype in (torch.float32, torch.bfloat16):
        results[f"notebook_{str(dtype)[6:]}_s"] = run_notebook(dtype)
        print(results, flush=True)
    # generation cache with CPU offload, cache.select and a batched forward on CUDA
    from hooked_avllm.toy import ToyScenes, load_toy

    model = load_toy("omni").to("cuda")
    scenes = ToyScenes(1000)
    inputs = model.prepare(prompt=["What do you hear?"] * 4, video=[scenes.clip("counterfactual", i).as_video() for i in range(4)])
    tokens, cache = model.generate_with_cache(inputs, 6, names_filter=lambda n: n.endswith("resid_post"), device="cpu")
    assert cache["blocks.5.hook_resid_post"].device.type == "cpu"
    results["generated_select_shape"] = list(cache.select("blocks.5.hook_resid_post", "generated").shape)
    cpu_model = load_toy("omni")
    with torch.no_grad():
        diff = (model(inputs).float().cpu() - cpu_model(inputs.to("cpu"))).abs().max()
    results["cuda_vs_cpu_logits_max_abs_diff_fp32"] = float(diff)
    # the demo's real-checkpoint path on CUDA
    import soundfile
    from test_inputs_support import write_mp4

    from hooked_avllm.__main__ import main as cli
    from hooked_avllm.toy import OMNI_PATH

    mp4 = write_mp4(Path("/tmp/clip.mp4"), seconds=2.0, fps=10, size=(112, 112))
    t = np.arange(32000) / 16000
    soundfile.write("/tmp/other.wav", 0.3 * np.sin(2 * np.pi * 2000 * t), 16000)
    start = time.perf_counter()
    assert cli(["demo", "--model", str(OMNI_PATH), "--video", str(mp4), "--audio", "/tmp/other.wav",
                "--out", "/tmp/real_demo", "--no-progress"]) == 0
    results["demo_real_path_cuda_s"] = time.perf_counter() - start
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

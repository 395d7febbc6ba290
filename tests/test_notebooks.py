"""The notebooks in notebooks/ run top to bottom, each in a fresh Jupyter kernel as nbmake runs them
(``pytest --nbmake notebooks/`` does the same from the command line, with the package installed),
and the numbers each one prints agree with the library called directly.

How a notebook runs here (once per session, shared by the tests below, see :func:`executed`):

- in a kernel started by ``nbclient`` (what nbmake and papermill drive), in a temporary folder of
  its own, with matplotlib's inline backend (the kernel's default): every figure is rendered;
- ``PYTHONPATH`` led by this checkout, so the kernel imports this ``hooked_avllm`` also where the
  package is not installed (or installed from elsewhere);
- ``OMP_NUM_THREADS=1``: the toy's matrices are tiny, and on two shared cores two torch threads
  wait on each other more than they compute (e2_logit_lens_probes: 44 s with two threads, 17 s
  with one, measured on the 2-core CI machine while other jobs ran);
- ``JUDGE_URL`` unset: pipeline_judge scores with the keyword scorer
  (``test_pipeline_judge_runs_with_an_llm_judge`` runs it again against a local fake judge).

A notebook reports its key numbers as lines ``RESULT name = <json>`` (printed by its cells); the
``*_numbers_agree_with_the_library`` tests parse them and recompute the same quantities from the
library, by another path where there is one (explicit attention patterns for the attention shares
and the heatmap, a hand-written patching hook for activation patching, clip-by-clip calls for
batched ones), on the toy model loaded in this process.

Notebooks are stored without outputs (``jupyter nbconvert --clear-output --inplace notebooks/*.ipynb``),
open with a markdown cell saying what they show, take the model from a ``MODEL = "toy"`` line in
their first code cell (tagged ``parameters``, so papermill can set it: ``papermill in.ipynb out.ipynb
-p MODEL Qwen/Qwen2.5-Omni-3B``) and end with their figure, saved as a PNG and shown.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import threading
from dataclasses import dataclass
from concurrent.futures import Future, ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from nbclient import NotebookClient

from torch_threads import torch_threads

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NEW = [p for p in NOTEBOOKS if p.stem != "toy_study"]  # the study-by-experiment notebooks (toy_study predates the rules)
RESULT = re.compile(r"^RESULT (.+?) = (.+)$", re.MULTILINE)
CELL_TIMEOUT_S = 600


# ------------------------------------------------------------------------------------ running a notebook


@dataclass
class Executed:
    """A notebook after a run: its cells with outputs, the folder it ran in, the RESULT lines it printed."""

    notebook: nbformat.NotebookNode
    cwd: Path
    results: dict
    error: Exception | None = None

    def check(self) -> None:
        if self.error is not None:
            raise self.error


_RUNS: dict[tuple[str, str | None], Future] = {}  # the runs of this session, started or done


def kernel_env(judge_url: str | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = "1"
    env.pop("MPLBACKEND", None)  # the kernel's inline backend, as a user sees it
    env.pop("JUDGE_URL", None)
    if judge_url is not None:
        env["JUDGE_URL"] = judge_url
    return env


def stdout_of(notebook: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []) if out.output_type == "stream" and out.name == "stdout")


def execute(path: Path, cwd: Path, judge_url: str | None = None, parameters: dict | None = None) -> Executed:
    """``path`` run top to bottom in a fresh kernel in ``cwd``; ``parameters`` (name -> value) are
    set in a cell after the one tagged ``parameters``, as papermill's ``-p NAME VALUE`` does."""
    notebook = nbformat.read(path, as_version=4)
    if parameters:
        at = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.get("metadata", {}).get("tags", []))
        source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
        notebook.cells.insert(at + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    error = None
    try:
        client.execute(env=kernel_env(judge_url))
    except Exception as err:  # CellExecutionError names the cell and carries its traceback
        error = err
    results = {name: json.loads(value) for name, value in RESULT.findall(stdout_of(notebook))}
    return Executed(notebook, cwd, results, error)


_POOL: ThreadPoolExecutor | None = None


def executed(path: Path, tmp_path_factory: pytest.TempPathFactory, judge_url: str | None = None) -> Executed:
    """``path`` run in a fresh kernel in a temporary folder (once per session and ``judge_url``):
    the run :func:`start_all` began, or one started now."""
    key = (path.name, judge_url)
    if key not in _RUNS:
        _RUNS[key] = _pool().submit(execute, path, tmp_path_factory.mktemp(path.stem), judge_url)
    return _RUNS[key].result()


def real_branch_run(stem: str) -> Executed:
    """The run of notebook ``stem`` with its real-checkpoint parameters (started by :func:`start_all`)."""
    return _RUNS[(f"{stem}.ipynb", "real")].result()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:  # two kernels at a time: each runs one torch thread (OMP_NUM_THREADS=1), CI has 2 cores
        _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="notebook")
    return _POOL


@pytest.fixture(scope="module", autouse=True)
def start_all(tmp_path_factory):
    """Every notebook this environment can run starts at once, two kernels at a time, while the
    tests below wait for the one they read (each kernel is single-threaded and mostly waits on
    itself; two in parallel halve the notebooks' share of the suite on two cores); then each
    notebook's real-checkpoint branch, on tiny checkpoints laid out as the released ones
    (:func:`real_branch_parameters`), with a fake judge serving the pipeline's."""
    runnable = [p for p in NOTEBOOKS if all(importlib.util.find_spec(m) is not None for m in requirements(p))]
    for path in runnable:
        key = (path.name, None)
        if key not in _RUNS:
            _RUNS[key] = _pool().submit(execute, path, tmp_path_factory.mktemp(path.stem))
    judge = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    threading.Thread(target=judge.serve_forever, daemon=True).start()
    parameters = real_branch_parameters(tmp_path_factory.mktemp("real_checkpoints"),
                                        f"http://127.0.0.1:{judge.server_address[1]}/v1")
    for path in runnable:
        key = (path.name, "real")
        if path.stem in parameters and key not in _RUNS:
            _RUNS[key] = _pool().submit(execute, path, tmp_path_factory.mktemp(f"{path.stem}_real"),
                                        parameters=parameters[path.stem])
    yield
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(wait=True)
        _POOL = None
    judge.shutdown()


def real_branch_parameters(folder: Path, judge_url: str) -> dict[str, dict]:
    """Each notebook's parameters for its real-checkpoint branch: ``MODEL`` a folder holding a tiny
    random Qwen2.5-Omni-3B thinker as released (config, safetensors written by ``transformers``,
    tokenizer, chat template, preprocessor config; ``tests/real_checkpoints.py``), ``DEVICE="cpu"``,
    and media files (H.264 + AAC clips, a WAV) where the notebook reads them."""
    from real_checkpoints import clip_file, omni_checkpoint, vl_checkpoint, wav_file

    omni, base = str(omni_checkpoint(folder / "omni")), str(vl_checkpoint(folder / "vl"))
    clips = [str(clip_file(folder / f"clip{i}.mp4", seed=i)) for i in range(4)]
    clips_dir = folder / "clips"
    clips_dir.mkdir()
    with open(folder / "captions.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "audio_caption", "video_caption"])
        for i in range(4):
            clip_file(clips_dir / f"clip{i}.mp4", seed=10 + i)
            writer.writerow([f"clip{i}", ["barking", "ringing"][i % 2], ["dog", "bell"][i % 2]])
    common = {"MODEL": omni, "DEVICE": "cpu"}
    return {
        "quickstart": {**common, "CLIP": clips[0]},
        "e1_attention_share": {**common, "CLIPS": clips[:2]},
        "e2_logit_lens_probes": {**common, "CLIPS": clips * 2, "LABELS": ["dog", "engine"] * 4},
        "e3_knockout_sweep": {**common, "CLIPS": clips[:2], "SOUND_WORDS_OF_CLIPS": ["barking", "ringing"]},
        "e4_token_shift_heatmaps": {**common, "CLIPS": clips[:2], "BASE": base},
        "patching": {**common, "SOUND": str(wav_file(folder / "dog.wav", seed=0)), "PICTURE": clips[1]},
        "token_dropping": {**common, "CLIPS": [(clips[0], "barking", "ringing"), (clips[1], "engine", "dog")]},
        "pipeline_judge": {**common, "CLIPS_DIR": str(clips_dir), "CAPTIONS": str(folder / "captions.csv"),
                           "JUDGE_URL": judge_url},
        "sae_audio_tokens": {**common, "CLIPS": clips * 2, "LABELS": ["dog", "engine"] * 4, "LAYER": 1, "EPOCHS": 2},
    }


def requirements(path: Path) -> list[str]:
    """The optional packages a notebook needs (its metadata's ``hooked_avllm.requires``)."""
    return list(nbformat.read(path, as_version=4).metadata.get("hooked_avllm", {}).get("requires", []))


def require(module: str):
    """``module``, imported; a skip where it is not installed, except in CI's SAELens environment
    (``HOOKED_AVLLM_REQUIRE_SAE_LENS=1``), where its absence fails."""
    if os.environ.get("HOOKED_AVLLM_REQUIRE_SAE_LENS") == "1":
        return __import__(module)
    return pytest.importorskip(module)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path_factory):
    for module in requirements(path):
        require(module)
    run = executed(path, tmp_path_factory)
    run.check()
    if path in NEW:
        last = [cell for cell in run.notebook.cells if cell.cell_type == "code"][-1]
        assert any("image/png" in out.get("data", {}) for out in last.outputs), \
            f"{path.name}: the last code cell shows no figure"
        assert list(run.cwd.rglob("*.png")), f"{path.name}: no figure was saved as a PNG"
        assert run.results, f"{path.name}: printed no RESULT line"


@pytest.mark.parametrize("path", NEW, ids=lambda p: p.name)
def test_notebook_runs_on_a_released_checkpoint_layout(path):
    """The branch a researcher takes by setting ``MODEL`` to a checkpoint: ``from_pretrained`` of a
    folder laid out as Qwen2.5-Omni-3B's (tiny random weights, the released tokenizer, chat template
    and preprocessing), media files decoded by ``prepare``, bf16 on the CPU; it runs to its figure."""
    for module in requirements(path):
        require(module)
    run = real_branch_run(path.stem)
    run.check()
    out = stdout_of(run.notebook)
    assert "toy" not in out.lower().split("\n")[0], f"{path.name}: the first output is the toy's"
    last = [cell for cell in run.notebook.cells if cell.cell_type == "code"][-1]
    assert any("image/png" in o.get("data", {}) for o in last.outputs), f"{path.name}: the last code cell shows no figure"
    assert list(run.cwd.rglob("*.png")), f"{path.name}: no figure was saved as a PNG"


# ------------------------------------------------------------------------------------ how notebooks are stored


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: code cells {dirty} are stored with outputs or an execution count; clear them"


@pytest.mark.parametrize("path", NEW, ids=lambda p: p.name)
def test_notebook_opens_with_what_it_shows_and_one_model_parameter(path):
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# "), \
        f"{path.name}: the first cell must be markdown with a title saying what the notebook shows"
    assert "figure at the end" in cells[0].source, f"{path.name}: the opening cell must say what the final figure shows"
    first_code = next(cell for cell in cells if cell.cell_type == "code")
    assert "parameters" in first_code.metadata.get("tags", []), f"{path.name}: tag the first code cell 'parameters'"
    assert re.search(r'^MODEL = "toy"', first_code.source, re.MULTILINE), \
        f"{path.name}: the first code cell must set MODEL = \"toy\" (the one parameter to change)"
    assert cells[-1].cell_type == "markdown", f"{path.name}: end with the figure and its caption"


def test_every_new_notebook_has_a_numbers_check():
    missing = [p.name for p in NEW if f"test_{p.stem}_numbers_agree_with_the_library" not in globals()]
    assert not missing, f"add a test that recomputes the numbers of {missing}"


# ------------------------------------------------------------------------------------ the numbers, recomputed


@pytest.fixture(scope="module")
def one_thread():
    with torch_threads(1):  # see the module docstring
        yield


@pytest.fixture(scope="module")
def toy(one_thread):
    from hooked_avllm.toy import load_toy

    return load_toy("omni")


@pytest.fixture(scope="module")
def toy_vl(one_thread):
    from hooked_avllm.toy import load_toy

    return load_toy("vl")


def results_of(name: str, tmp_path_factory) -> dict:
    return run_of(name, tmp_path_factory).results


def run_of(name: str, tmp_path_factory) -> Executed:
    path = ROOT / "notebooks" / f"{name}.ipynb"
    for module in requirements(path):
        require(module)
    run = executed(path, tmp_path_factory)
    run.check()
    return run


def scenes():
    from hooked_avllm.toy import ToyScenes

    return ToyScenes(seed=1000)


def close(a, b, atol=1e-4) -> bool:
    return np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), atol=atol, rtol=1e-4)


@torch.no_grad()
def test_quickstart_numbers_agree_with_the_library(toy, tmp_path_factory):
    results = results_of("quickstart", tmp_path_factory)
    clip = scenes().clip("counterfactual", 0)
    inputs = toy.prepare(prompt="What do you hear?", **clip.media())
    _, cache = toy.run_with_cache(inputs, names_filter=lambda n: n.endswith("hook_resid_post"))
    for kind in ("text", "audio", "video"):
        mask = getattr(inputs.layout, kind)[0]  # by the layout's mask, not cache.select
        medians = [float(np.median(cache[f"blocks.{l}.hook_resid_post"][0][mask].norm(dim=-1).numpy()))
                   for l in range(toy.cfg.n_layers)]
        assert close(results[f"median_resid_norm_{kind}"], medians), kind


@torch.no_grad()
def test_e1_attention_share_numbers_agree_with_the_library(toy, tmp_path_factory):
    """Clip 0's shares from the notebook's batched generation, against the explicit attention
    patterns of its caption teacher-forced through the model (queries: the last prompt position and
    the fed caption tokens up to the one that predicts the end token)."""
    from hooked_avllm.inputs import teacher_forced_inputs

    results = results_of("e1_attention_share", tmp_path_factory)
    clip = scenes().clip("counterfactual", 0)
    inputs = toy.prepare(prompt="Describe what you see and hear.", **clip.media())
    n_prompt = inputs.input_ids.shape[1]
    new = toy.generate(inputs, max_new_tokens=12)[0, n_prompt:]
    end = torch.isin(new, toy.end_tokens())
    n_fed = int(end.float().argmax()) if end.any() else len(new)
    forced = teacher_forced_inputs(inputs, new[:n_fed])
    _, cache = toy.run_with_cache(forced, names_filter=lambda n: n.endswith("attn.hook_pattern"))
    queries = torch.arange(n_prompt - 1, n_prompt + n_fed)
    for kind in ("audio", "video", "text"):
        keys = getattr(forced.layout, kind)[0].float()
        if kind == "text":  # the prompt's text only (the caption's tokens are "generated")
            keys[n_prompt:] = 0
        shares = [float((cache[f"blocks.{l}.attn.hook_pattern"][0][:, queries] @ keys).mean())
                  for l in range(toy.cfg.n_layers)]
        assert close(results[f"share_{kind}_by_layer_clip0"], shares, atol=2e-4), kind


@torch.no_grad()
def test_e2_logit_lens_probes_numbers_agree_with_the_library(toy, tmp_path_factory):
    """The lens shares from the unembedding applied by hand; the probe from
    ``hooked_avllm.toy.evaluate``'s own features (``audio_residuals``) and ``probe_accuracy``."""
    from hooked_avllm.toy.data import SOUND_WORDS
    from hooked_avllm.toy.evaluate import audio_residuals, probe_accuracy

    results = results_of("e2_logit_lens_probes", tmp_path_factory)
    clips = [scenes().clip("counterfactual", 10_000 + i) for i in range(60)]
    lens_clips = clips[:4]
    batch = toy.prepare(prompt=["What do you hear?"] * 4, video=[c.as_video() for c in lens_clips], audio_padding="longest")
    _, cache = toy.run_with_cache(batch, names_filter=lambda n: n.endswith("hook_resid_post"))
    sound_ids = torch.tensor(toy.tokenizer.convert_tokens_to_ids(list(SOUND_WORDS)))
    rows, cols = torch.nonzero(batch.layout.audio, as_tuple=True)
    truth = {"true": torch.tensor([SOUND_WORDS.index(lens_clips[r].sound_word) for r in rows]),
             "picture": torch.tensor([SOUND_WORDS.index(lens_clips[r].implied_sound_word) for r in rows])}
    for norm, tag in ((True, "norm"), (False, "raw")):
        for which, target in truth.items():
            shares = []
            for l in range(toy.cfg.n_layers):
                resid = cache[f"blocks.{l}.hook_resid_post"][rows, cols]
                logits = toy.unembed(toy.ln_final(resid) if norm else resid)[:, sound_ids]
                shares.append(float((logits.argmax(-1) == target).float().mean()))
            assert close(results[f"lens_{which}_on_top_{tag}"], shares, atol=0.011), (which, tag)  # a near-tie may flip
    features = audio_residuals(toy, clips, batch_size=30)["audio_mean"]  # [layer + 1, clip, d_model]
    classes = sorted({c.sound_word for c in clips})
    y = torch.tensor([classes.index(c.sound_word) for c in clips])
    assert results["probe_split"] == [40, 20]
    for layer in (0, len(features) - 1):
        accuracy = probe_accuracy(features[layer][:40], y[:40], features[layer][40:], y[40:])
        assert abs(results["probe_accuracy"][layer] - accuracy) <= 0.051, layer  # one test clip of 20


@torch.no_grad()
def test_e3_knockout_sweep_numbers_agree_with_the_library(toy, tmp_path_factory):
    """The baseline and one rule x window, generated clip by clip with ``generate_with_knockout``
    (no shared prefill, no batching); the results folder read back."""
    from hooked_avllm.analysis import KnockoutRule, generate_with_knockout
    from hooked_avllm.analysis.sweep_store import read_table
    from hooked_avllm.toy import parse_answer

    results = results_of("e3_knockout_sweep", tmp_path_factory)
    clips = [scenes().clip("counterfactual", i) for i in range(24)]
    windows = [tuple(w) for w in results["windows"]]
    window = windows[len(windows) // 2]
    base, knocked = [], []
    for clip in clips:
        inputs = toy.prepare(prompt="What do you hear?", **clip.media())
        n = inputs.input_ids.shape[1]
        for scores, tokens in ((base, toy.generate(inputs, max_new_tokens=6)),
                               (knocked, generate_with_knockout(toy, inputs, KnockoutRule("generated", "video", window), 6,
                                                                last_prompt_as_generated=True))):
            text = toy.tokenizer.decode(tokens[0, n:], skip_special_tokens=True)
            scores.append(float(parse_answer(text)[1] == clip.sound_word))
    assert results["baseline_scores"] == base
    assert close(results["mean_score[generated -> video]"][windows.index(window)], np.mean(knocked))
    run = executed(ROOT / "notebooks" / "e3_knockout_sweep.ipynb", tmp_path_factory)
    table = read_table(run.cwd / "runs" / "e3_knockout")
    assert close(table[table.rule == "none"].score.mean(), results["baseline_mean"])


@torch.no_grad()
def test_e4_token_shift_heatmaps_numbers_agree_with_the_library(toy, toy_vl, tmp_path_factory):
    """Clip 0's token shift alone (not in a list), and its heatmap scores from explicit attention
    patterns (the sound word's row, averaged over heads and the second half of the layers)."""
    from hooked_avllm.analysis import token_shift
    from hooked_avllm.inputs import teacher_forced_inputs
    from hooked_avllm.toy.data import SOUND_WORDS, Clip

    results = results_of("e4_token_shift_heatmaps", tmp_path_factory)
    clip = scenes().clip("counterfactual", 0)
    prompt = "Describe what you see and hear."
    inputs = toy.prepare(prompt=prompt, **clip.media())
    base_inputs = toy_vl.prepare(prompt=prompt, video=Clip("video_only", clip.frames, None, clip.visible, None).as_video())
    shift = token_shift(toy, inputs, toy_vl, base_inputs, max_new_tokens=12)
    summary = shift.summary()
    for key, value in results["shift_summary_clip0"].items():
        assert close(value, summary[key], atol=1e-4 if key != "mean_kl" else 1e-3), key
    word = next(i for i, token in enumerate(shift.decoded) if token.strip() in SOUND_WORDS)
    forced = teacher_forced_inputs(inputs, shift.caption_ids)
    L = toy.cfg.n_layers
    _, cache = toy.run_with_cache(forced, names_filter=lambda n: n.endswith("attn.hook_pattern"))
    query = inputs.input_ids.shape[1] + word
    rows = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][0, :, query] for l in range(L // 2, L)])  # [layer, head, key]
    scores = rows.mean((0, 1))[forced.layout.video[0]]
    assert close(results["video_attention_clip0"], scores, atol=1e-5)


@torch.no_grad()
def test_patching_numbers_agree_with_the_library(toy, tmp_path_factory):
    """Pair 0 of the component sweep, patched by a hand-written hook: the source run's activation
    at its k-th audio token written over the target run's k-th audio token, the logit difference read
    after the teacher-forced "I hear"."""
    from hooked_avllm.inputs import teacher_forced_inputs

    results = results_of("patching", tmp_path_factory)
    clip = scenes().clip("counterfactual", 0)
    prefix = torch.tensor(toy.tokenizer.encode("I hear", add_special_tokens=False))
    source = teacher_forced_inputs(toy.prepare(prompt="What do you hear?", audio=(clip.audio, 16000)), prefix)
    target = teacher_forced_inputs(toy.prepare(prompt="What do you hear?", **clip.media()), prefix)
    true_id, picture_id = toy.tokenizer.convert_tokens_to_ids([clip.sound_word, clip.implied_sound_word])

    def metric(logits):
        return float(logits[0, -1, true_id] - logits[0, -1, picture_id])

    source_logits, source_cache = toy.run_with_cache(source)
    gap = metric(source_logits) - metric(toy(target))
    assert close(results["gap_per_pair"][0], gap, atol=1e-3)
    src_audio, tgt_audio = source.layout.audio[0], target.layout.audio[0]
    short = {"resid_pre": "hook_resid_pre", "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out"}
    for r, component in enumerate(results["real_rows"]):
        for layer in range(toy.cfg.n_layers):
            name = f"blocks.{layer}.{short[component]}"

            def write(activation, hook, name=name):
                activation = activation.clone()
                activation[0, tgt_audio] = source_cache[name][0, src_audio]
                return activation

            patched = metric(toy.run_with_hooks(target, fwd_hooks=[(name, write)]))
            assert close(results["real_per_pair0"][r][layer], patched, atol=1e-3), (component, layer)


@torch.no_grad()
def test_token_dropping_numbers_agree_with_the_library(toy, tmp_path_factory):
    """Dropping video after layer 1, clip by clip (no batch); dropping video before layer 0, as a
    knockout of every query's edges to the video tokens in every layer."""
    from hooked_avllm.analysis import KnockoutRule, drop_tokens, generate_with_knockout
    from hooked_avllm.toy import parse_answer

    results = results_of("token_dropping", tmp_path_factory)
    clips = [scenes().clip("counterfactual", i) for i in range(16)]
    after_1, never = [], []
    for clip in clips:
        inputs = toy.prepare(prompt="What do you hear?", **clip.media())
        n = inputs.input_ids.shape[1]
        with drop_tokens(toy, "video", after_layer=1):
            tokens = toy.generate(inputs, max_new_tokens=6)
        after_1.append(parse_answer(toy.tokenizer.decode(tokens[0, n:], skip_special_tokens=True))[1] == clip.sound_word)
        tokens = generate_with_knockout(toy, inputs, KnockoutRule("any", "video"), 6)
        never.append(parse_answer(toy.tokenizer.decode(tokens[0, n:], skip_special_tokens=True))[1] == clip.sound_word)
    layers = results["drop_layers"]
    assert close(results["true_share_drop_video"][layers.index(1)], np.mean(after_1))
    assert close(results["true_share_drop_video"][layers.index(-1)], np.mean(never))


@torch.no_grad()
def test_pipeline_judge_numbers_agree_with_the_library(toy, tmp_path_factory):
    """The notebook's captions re-scored (keyword scorer, fidelity table), two of them captioned again
    from the written pair files, and every counterfactual clip carrying another clip's sound."""
    from hooked_avllm.study.pairs import read_manifest
    from hooked_avllm.study.scoring import CaptionRow, KeywordScorer, fidelity_table, score_rows
    from hooked_avllm.toy.data import OBJECT_WORDS, SOUND_WORDS

    results = results_of("pipeline_judge", tmp_path_factory)
    run = executed(ROOT / "notebooks" / "pipeline_judge.ipynb", tmp_path_factory)
    out = run.cwd / "pipeline_run"
    with open(out / "captions_generated.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 24
    caption_rows = [CaptionRow(r["clip_id"], r["condition"], r["caption"], r["audio_reference"], r["video_reference"])
                    for r in rows]
    table = fidelity_table(score_rows(KeywordScorer(vocabularies={"audio": SOUND_WORDS, "video": OBJECT_WORDS}), caption_rows))
    for condition in ("factual", "counterfactual"):
        for kind in ("audio", "video"):
            assert close(results[f"{kind}_fidelity[{condition}]"], table.loc[condition, f"{kind}_fidelity"])
    manifest = read_manifest(out / "pairs" / "manifest.jsonl")
    assert all((row.audio_id != row.video_id) == (row.kind == "counterfactual") for row in manifest)
    for r in (rows[0], rows[-1]):
        inputs = toy.prepare(prompt="Describe what you see and hear.", video=str(out / "pairs" / r["path"]))
        tokens = toy.generate(inputs, max_new_tokens=12)
        assert toy.tokenizer.decode(tokens[0, inputs.input_ids.shape[1]:], skip_special_tokens=True) == r["caption"]


# ------------------------------------------------------------------------------------ the LLM-judge branch


class FakeJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat-completions endpoint that judges like the keyword scorer: 100 when the
    reference's word is the candidate's first word of the toy's vocabulary of that kind, else 0."""

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        from hooked_avllm.toy.data import OBJECT_WORDS, SOUND_WORDS

        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        last = request["messages"][-1]["content"]
        reference = re.search(r"^Reference[^:]*:\s*(.*)$", last, re.MULTILINE).group(1).strip().lower()
        candidate = re.search(r"^Candidate[^:]*:\s*(.*)$", last, re.MULTILINE).group(1).lower()
        vocabulary = SOUND_WORDS if reference in SOUND_WORDS else OBJECT_WORDS
        named = [w.strip(".,") for w in candidate.split() if w.strip(".,") in vocabulary]
        score = 100 if named and named[0] == reference else 0
        type(self).requests += 1
        body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": request["model"],
                           "choices": [{"index": 0, "finish_reason": "stop", "message": {
                               "role": "assistant", "content": json.dumps({"score": score, "reason": "fake"})}}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    requests = 0


def test_pipeline_judge_runs_with_an_llm_judge(tmp_path_factory):
    """With JUDGE_URL set the notebook scores with ``LLMJudge``; against a fake judge that scores as the
    keyword scorer does, the fidelity table is the keyword scorer's."""
    pytest.importorskip("openai")
    from hooked_avllm.study.judge import build_messages

    probe = build_messages("I hear barking.", "barking", "audio")[-1]["content"]
    assert re.search(r"^Reference[^:]*:", probe, re.MULTILINE) and re.search(r"^Candidate[^:]*:", probe, re.MULTILINE), \
        "the judge's user message changed its layout; update FakeJudge"
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        judged = executed(ROOT / "notebooks" / "pipeline_judge.ipynb", tmp_path_factory,
                          judge_url=f"http://127.0.0.1:{server.server_address[1]}/v1")
        judged.check()
    finally:
        server.shutdown()
    assert FakeJudge.requests > 0, "the notebook did not call the judge"
    assert "scored by: LLM judge" in stdout_of(judged.notebook)
    keyword = results_of("pipeline_judge", tmp_path_factory)
    for name, value in keyword.items():
        assert close(judged.results[name], value), name


@torch.no_grad()
def test_sae_audio_tokens_numbers_agree_with_the_library(toy, tmp_path_factory):
    """The SAE the notebook trained and saved, reloaded with SAELens, on the audio rows of
    ``run_with_cache`` (not the store): its reconstruction, its chosen latents and their held-out
    AUROC (from ranks, not pairwise comparisons); the clean answers scored by the toy's own
    evaluation; the splice by the batch's layout instead of the forward context."""
    run = run_of("sae_audio_tokens", tmp_path_factory)
    sae_lens = require("sae_lens")
    from hooked_avllm.analysis.runner import left_padded_batches
    from hooked_avllm.toy.evaluate import score

    results = run.results
    sae = sae_lens.SAE.load_from_disk(str(run.cwd / "sae_audio"), device="cpu").eval()
    hook = sae.cfg.metadata.hook_name
    clips = [scenes().clip("counterfactual", 100 + i, visible=(i % 10 + 1 + i // 10) % 10, sound=i % 10) for i in range(60)]
    prepared = [toy.prepare(prompt="What do you hear?", video=clip.as_video()) for clip in clips]
    make = left_padded_batches(toy)
    batches = [make(prepared[i : i + 10]) for i in range(0, 60, 10)]
    rows, clip_of = [], []
    for b, batch in enumerate(batches):
        _, cache = toy.run_with_cache(batch, names_filter=hook)
        audio = batch.layout.audio
        rows.append(cache[hook][audio].float())
        clip_of.append(10 * b + torch.nonzero(audio)[:, 0])
    rows, clip_of = torch.cat(rows), torch.cat(clip_of)
    acts = sae.encode(rows)
    recon = sae.decode(acts)
    assert results["store_rows"] == rows.shape[0]
    assert close(results["variance_explained"], 1 - float(((recon - rows) ** 2).sum() / ((rows - rows.mean(0)) ** 2).sum()))
    assert close(results["l0"], float((acts > 0).float().sum(-1).mean()))
    assert close(results["dead_share"], float(((acts > 0).sum(0) == 0).float().mean()))

    def rank_auroc(score_, positive):  # Mann-Whitney U from average ranks
        order = torch.tensor(np.argsort(np.argsort(score_.numpy(), kind="stable"), kind="stable"), dtype=torch.float64)
        ranks = order.clone()
        for value in score_.unique():
            tied = score_ == value
            ranks[tied] = order[tied].mean()
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        return float((ranks[positive] + 1).sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)

    clip_score = torch.stack([acts[clip_of == c].mean(0) for c in range(60)])
    classes = sorted({clip.sound_word for clip in clips})  # the notebook's order of the sounds
    sound = torch.tensor([classes.index(clip.sound_word) for clip in clips])
    for s, latent in enumerate(results["chosen_latent"]):
        first = [rank_auroc(clip_score[:30, k], sound[:30] == s) for k in range(clip_score.shape[1])]
        assert first[latent] == pytest.approx(max(first), abs=1e-9), s  # the best on the first half (ties allowed)
        assert rank_auroc(clip_score[30:, latent], sound[30:] == s) == pytest.approx(results["held_out_auroc"][s], abs=1e-5)
    assert np.mean(results["held_out_auroc"]) > np.mean(results["shuffled_auroc"]) + 0.2  # the control stays near chance

    clean = score(toy_answers(toy, batches), clips, "hear")  # the toy's own parser of its templated answers
    assert close(results["names_played_clean"], clean["true_sound_share"])
    assert close(results["names_picture_clean"], clean["visual_sound_share"])

    def by_layout(batch):
        def splice(resid, hook):  # the prompt's forward only: the batch's layout says where the audio rows are
            if resid.shape[1] == batch.input_ids.shape[1]:
                resid = resid.clone()
                resid[batch.layout.audio] = sae.decode(sae.encode(resid[batch.layout.audio])).to(resid.dtype)
            return resid
        return splice

    spliced = score(toy_answers(toy, batches, lambda batch: [(hook, by_layout(batch))]), clips, "hear")
    assert close(results["names_played_sae"], spliced["true_sound_share"])
    assert close(results["names_picture_sae"], spliced["visual_sound_share"])


def toy_answers(model, batches, hooks=lambda batch: []) -> list[str]:
    out = []
    for batch in batches:
        with model.hooks(fwd_hooks=hooks(batch)):
            new = model.generate(batch, max_new_tokens=8)[:, batch.input_ids.shape[1]:]
        out += model.tokenizer.batch_decode(new, skip_special_tokens=True)
    return out

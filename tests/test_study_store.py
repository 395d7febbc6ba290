"""The audio-visual activation store (``hooked_avllm.study.store``, ``store_dataset``, ``probes``), on
the shipped toy model and on every family's tiny random model.

What is checked, against what we did not write into the store:

- round trip: every stored row equals ``model.run_with_cache`` (same batch, same ``names_filter``,
  ``cache_dtype``) at the layout's positions, bit for bit, in bf16 and fp32; tower rows equal the
  tower's own cached tokens; projector rows are the ``hook_embed`` rows at the placeholders;
- metadata: clip, position among the real tokens (batch padding removed), modality, time,
  frame group / row / column, token id, read from each clip's own (unbatched) layout, plus
  known answers counted by hand (the toy's 50 audio tokens at 0.04 s, 2 frame groups of 4 x 4);
- a run stopped mid-way (an exception in-process, and a process killed with SIGKILL) resumes to
  the same files, byte for byte, as an uninterrupted run;
- the Dataset opens nothing at construction and one file for one row;
- an empty selection raises; other arguments on an existing store are refused;
- the SAELens export loads with ``datasets.load_from_disk`` as SAELens loads it, and SAELens
  trains from it (where ``sae_lens`` is installed; ``HOOKED_AVLLM_REQUIRE_SAE_LENS=1`` turns its
  absence into a failure, as in CI's SAELens environment);
- the probe decodes the sound of counterfactual clips from their audio tokens, does not decode
  random labels, and does not decode the *visible* object from the audio positions of the LLM
  input (where no video has been mixed in yet); its plot says what it shows;
- the size on disk is the row count times the bytes a row needs (throughput: bench/bench_store.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hooked_avllm.analysis.arguments import AnalysisWarning
from hooked_avllm.analysis.runner import left_padded_batches
from hooked_avllm.study import store_dataset
from hooked_avllm.study.probes import probe_layers
from hooked_avllm.study.store import StoreError, write_activation_store
from hooked_avllm.study.store_dataset import META_FIELDS, ActivationStore
from hooked_avllm.toy import ToyScenes, load_toy
from hooked_avllm.vocabulary import KIND_CODE

ROOT = Path(__file__).resolve().parents[1]
LLM_HOOKS = ["hook_embed", "blocks.*.hook_resid_post"]
KEPT = ["text", "audio", "video"]
BITS = {torch.bfloat16: torch.int16, torch.float32: torch.int32}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the toy's small matrices run several times faster so on 2 shared cores
    (every run in this module uses the same setting, so byte-identity holds between them)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy():
    return load_toy("omni")


def hear(toy):
    return lambda clip: toy.prepare(prompt="What do you hear?", **clip.media())


@pytest.fixture(scope="module")
def clips():
    """Two counterfactual clips, an audio-only one (shorter: the second batch is padded), another
    counterfactual one and a video-only one (no audio)."""
    scenes = ToyScenes(seed=1000)
    return [scenes.clip("counterfactual", 0), scenes.clip("counterfactual", 1), scenes.clip("audio_only", 0),
            scenes.clip("counterfactual", 2), scenes.clip("video_only", 0)]


@pytest.fixture(scope="module")
def prepared(toy, clips):
    return [hear(toy)(clip) for clip in clips]


def write(toy, clips, path, dtype, **kwargs):
    args = dict(hooks=LLM_HOOKS, modalities=KEPT, prepare=hear(toy), batch_size=2, dtype=dtype, shard_mb=0.05,
                progress=False, clip_ids=[f"clip{i}" for i in range(len(clips))])
    args.update(kwargs)
    return write_activation_store(toy, clips, path, **args)


@pytest.fixture(scope="module")
def stores(toy, clips, tmp_path_factory):
    return {dtype: write(toy, clips, tmp_path_factory.mktemp(str(dtype)), dtype) for dtype in BITS}


def batches_of(toy, prepared, size=2):
    make = left_padded_batches(toy)
    groups = [prepared[i : i + size] for i in range(0, len(prepared), size)]
    return [rows[0] if len(rows) == 1 else make(rows) for rows in groups]


def cached(model, inputs, **kwargs):
    """``run_with_cache`` as the store runs its forwards: without autograd (PyTorch may pick another
    attention kernel when autograd records: VideoLLaMA2's BEATs blocks then differ in the last bit)."""
    with torch.no_grad():
        return model.run_with_cache(inputs, **kwargs)[1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_of(path: Path) -> dict[str, str]:
    return {p.name: digest(p) for p in sorted(path.glob("shard-*.safetensors"))}


# ---------------------------------------------------------------------------------------------
# round trip and metadata


@pytest.mark.parametrize("dtype", list(BITS), ids=["bf16", "fp32"])
def test_rows_equal_run_with_cache_bit_for_bit(toy, prepared, stores, dtype):
    store = stores[dtype]
    assert len(store.manifest["shards"]) > 2 and store.complete
    expected: dict[str, list[torch.Tensor]] = {hook: [] for hook in store.hooks}
    for batch in batches_of(toy, prepared):
        cache = cached(toy, batch, names_filter=store.hooks, cache_dtype=dtype)
        mask = batch.layout.text | batch.layout.audio | batch.layout.video
        for hook in store.hooks:
            expected[hook].append(cache[hook][mask])
    assert store.hooks == ["hook_embed"] + [f"blocks.{l}.hook_resid_post" for l in range(toy.cfg.n_layers)]
    for hook in store.hooks:
        got, want = store.read(hook), torch.cat(expected[hook])
        assert got.dtype == dtype and got.shape == want.shape
        assert torch.equal(got.view(BITS[dtype]), want.view(BITS[dtype])), hook


def test_metadata_follows_each_clips_own_layout(prepared, stores):
    store = stores[torch.float32]
    _, meta = store.read("blocks.0.hook_resid_post", with_metadata=True)
    want = {field: [] for field in META_FIELDS}
    for i, clip in enumerate(prepared):  # each clip alone: no padding to undo
        layout = clip.layout
        mask = (layout.text | layout.audio | layout.video)[0]
        codes = layout.kind_codes()[0, mask]
        time = torch.where(codes == KIND_CODE["audio"], layout.audio_time[0, mask],
                           torch.where(codes == KIND_CODE["video"], layout.video_time[0, mask], torch.tensor(-1.0)))
        want["clip"].append(torch.full((int(mask.sum()),), i))
        want["position"].append(torch.nonzero(mask).flatten())
        want["modality"].append(codes)
        want["time"].append(time)
        want["frame_group"].append(layout.frame_group[0, mask])
        want["row"].append(layout.row[0, mask])
        want["col"].append(layout.col[0, mask])
        want["token_id"].append(layout.input_ids[0, mask])
    for field, parts in want.items():
        assert torch.equal(meta[field].to(torch.float64), torch.cat(parts).to(torch.float64)), field
    # known answers: 2 s of sound at 25 tokens a second; 4 frames at 2 fps -> 2 frame groups of 4 x 4 merged cells
    first = meta["clip"] == 0
    audio = first & (meta["modality"] == KIND_CODE["audio"])
    video = first & (meta["modality"] == KIND_CODE["video"])
    assert torch.allclose(meta["time"][audio], torch.arange(50) * 0.04, atol=1e-6)
    assert torch.bincount(meta["frame_group"][video].long()).tolist() == [16, 16]
    cells = sorted(set(zip(meta["row"][video].tolist(), meta["col"][video].tolist())))
    assert cells == [(r, c) for r in range(4) for c in range(4)]
    assert torch.equal(meta["time"][video], meta["frame_group"][video].float())  # one frame group a second
    text = meta["modality"] == KIND_CODE["text"]
    assert (meta["time"][text] == -1).all() and (meta["row"][text] == -1).all()
    # the video-only clip has no audio rows, the audio-only clip no video rows
    assert not ((meta["clip"] == 4) & (meta["modality"] == KIND_CODE["audio"])).any()
    assert not ((meta["clip"] == 2) & (meta["modality"] == KIND_CODE["video"])).any()
    assert store.clip_ids == [f"clip{i}" for i in range(5)] and store.manifest["clips_done"] == store.clip_ids
    assert store.rows_by_modality("hook_embed")["audio"] == 4 * 50


def test_tower_rows_are_the_towers_own_tokens(toy, prepared, tmp_path):
    hooks = ["audio.blocks.*.hook_resid_post", "audio_proj.hook_out", "vision_proj.hook_out"]
    last_block = []
    handle = toy.blocks[-1].register_forward_hook(lambda *args: last_block.append(1))
    try:
        store = write_activation_store(toy, prepared[1:3], tmp_path, hooks=hooks, modalities=["audio", "video"],
                                       progress=False)
    finally:
        handle.remove()
    assert last_block == []  # only tower hooks: the forward stops at the LLM's input
    assert not any(point.fwd_hooks for point in toy.hook_dict.values()) and toy.forward_context is None  # nothing left
    assert set(store.groups) == set(store.hooks) and len(store.hooks) == 5
    for k, clip in enumerate(prepared[1:3]):
        cache = cached(toy, clip, names_filter=store.hooks + ["hook_embed"])
        for hook in store.hooks:
            rows, meta = store.read(hook, with_metadata=True)
            mine = meta["clip"] == k
            if hook not in cache:  # the audio-only clip has no picture
                assert hook == "vision_proj.hook_out" and k == 1 and not mine.any()
                continue
            assert torch.equal(rows[mine], cache[hook][0]), hook
            assert torch.equal(meta["position"][mine], torch.arange(int(mine.sum()), dtype=torch.int32))
        layout = clip.layout
        rows, meta = store.read("audio_proj.hook_out", with_metadata=True)
        mine = meta["clip"] == k
        assert torch.equal(rows[mine], cache["hook_embed"][layout.audio])  # one row per placeholder, in order
        assert torch.equal(meta["time"][mine], layout.audio_time[layout.audio])
        _, meta = store.read("audio.blocks.0.hook_resid_post", with_metadata=True)
        assert int((meta["clip"] == k).sum()) == 100 and (meta["time"] == -1).all()  # before pooling: no LLM time
    _, meta = store.read("vision_proj.hook_out", with_metadata=True)
    assert (meta["modality"] == KIND_CODE["video"]).all()
    assert torch.equal(meta["frame_group"], prepared[1].layout.frame_group[prepared[1].layout.video].int())


def test_every_family_stores_what_it_caches(family, model, tmp_path):
    rows = [family.clip(model, seconds=3), family.clip(model, **family.other_length)]
    store = write_activation_store(model, rows, tmp_path / "llm", hooks="blocks.*.hook_resid_post",
                                   modalities=["audio", "video"], batch_size=2, progress=False)
    batch = left_padded_batches(model)(rows)
    cache = cached(model, batch, names_filter=store.hooks)
    mask = batch.layout.audio | batch.layout.video
    for hook in store.hooks:
        assert torch.equal(store.read(hook), cache[hook][mask]), (family.name, hook)
    towers = write_activation_store(model, rows, tmp_path / "towers", hooks=["audio_proj.hook_out"], progress=False)
    _, meta = towers.read("audio_proj.hook_out", with_metadata=True)
    for k, clip in enumerate(rows):  # the projector's rows are the audio placeholders: they carry their times
        assert torch.equal(meta["time"][meta["clip"] == k], clip.layout.audio_time[clip.layout.audio])


def test_size_on_disk_is_rows_times_row_bytes(stores):
    store = stores[torch.bfloat16]
    rows = store.n_rows("hook_embed")
    per_row = sum(store.d(hook) * 2 for hook in store.hooks) + sum(t.itemsize for t in META_FIELDS.values())
    headers = store.nbytes() - rows * per_row
    assert per_row == 7 * 96 * 2 + 29
    assert 0 < headers < 4096 * len(store.files())  # safetensors' JSON headers only
    assert store.nbytes() == sum((store.path / e["file"]).stat().st_size for e in store.files())


# ---------------------------------------------------------------------------------------------
# resuming


class Killed(Exception):
    pass


def test_a_stopped_run_resumes_to_the_same_bytes(toy, clips, stores, tmp_path):
    calls = []

    def dies_at_the_fourth_clip(clip):
        if len(calls) == 3:
            raise Killed
        calls.append(clip)
        return hear(toy)(clip)

    with pytest.raises(Killed):
        write(toy, clips, tmp_path, torch.bfloat16, prepare=dies_at_the_fourth_clip)
    stopped = ActivationStore(tmp_path)
    assert not stopped.complete and stopped.manifest["clips_done"] == ["clip0", "clip1"]  # batch [2, 3] was in flight
    assert stopped.n_rows("hook_embed") > 0  # readable as it stands
    # what a hard kill can leave: a half-written file, a part written but not recorded
    (tmp_path / "pending" / "part-00000002.safetensors").write_bytes(b"half")
    (tmp_path / "shard-00009.safetensors.tmp").write_bytes(b"half")
    resumed = write(toy, clips, tmp_path, torch.bfloat16)
    reference = stores[torch.bfloat16]
    assert resumed.complete and files_of(tmp_path) == files_of(reference.path)
    assert resumed.manifest == reference.manifest
    assert not list(tmp_path.glob("**/*.tmp")) and not list((tmp_path / "pending").iterdir())


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from hooked_avllm import AVLLMConfig, HookedAVLLM
    from hooked_avllm.study.store import write_activation_store
    model = HookedAVLLM.from_config(AVLLMConfig.tiny())
    clips = [[1 + (3 * i + j) % 190 for j in range(5 + i % 4)] for i in range(12)]
    def prepare(ids):
        if ids == clips[7]:
            os.kill(os.getpid(), signal.SIGKILL)
        return model.to_inputs(torch.tensor([ids]))
    write_activation_store(model, clips, sys.argv[1], hooks=["blocks.*.hook_resid_post"], modalities="text",
                           prepare=prepare, dtype=torch.bfloat16, shard_mb=0.004, progress=False)
""")


def test_a_killed_process_resumes_to_the_same_bytes(tmp_path):
    from hooked_avllm import AVLLMConfig, HookedAVLLM

    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path / "killed")], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert len(manifest["clips_done"]) == 7 and manifest["shards"]  # clips 0-6 done, clip 7 lost with the process
    model = HookedAVLLM.from_config(AVLLMConfig.tiny())
    clips = [[1 + (3 * i + j) % 190 for j in range(5 + i % 4)] for i in range(12)]
    args = dict(hooks=["blocks.*.hook_resid_post"], modalities="text", dtype=torch.bfloat16, shard_mb=0.004,
                prepare=lambda ids: model.to_inputs(torch.tensor([ids])), progress=False)
    resumed = write_activation_store(model, clips, tmp_path / "killed", **args)
    whole = write_activation_store(model, clips, tmp_path / "whole", **args)
    assert resumed.complete and len(files_of(whole.path)) > 2
    shards = whole.manifest["shards"]  # several clips' parts merged into each, as soon as they reach shard_mb:
    assert min(b - a for a, b in (entry["clips"] for entry in shards[:-1])) > 1
    assert max(entry["bytes"] for entry in shards) < 0.004 * 2**20 + 4096  # held at once: a shard + a clip (< 4 KiB)
    assert files_of(resumed.path) == files_of(whole.path)
    assert torch.equal(resumed.read("blocks.1.hook_resid_post"), whole.read("blocks.1.hook_resid_post"))


def test_other_arguments_on_an_existing_store_are_refused(toy, clips, stores):
    with pytest.raises(ValueError, match=r"dtype: stored \"bfloat16\", asked \"float32\".*overwrite=True"):
        write(toy, clips, stores[torch.bfloat16].path, torch.float32)


# ---------------------------------------------------------------------------------------------
# empty selections


def fake_ranks(monkeypatch, rank: int, size: int) -> None:
    """Pretend to be ``rank`` of ``size`` for the checks a store makes before any rank writes."""
    from hooked_avllm import parallel

    monkeypatch.setattr(parallel, "world", lambda: (rank, size))
    monkeypatch.setattr(parallel, "_all_gather_object", lambda obj: [obj] * size)
    monkeypatch.setattr(parallel, "barrier", lambda: None)


def test_ranks_refuse_a_single_process_store_and_a_folder_of_other_files(toy, clips, stores, monkeypatch, tmp_path):
    """(The two-process run, its resume and its reading back as one process: tests/test_parallel.py.)"""
    fake_ranks(monkeypatch, 0, 2)
    with pytest.raises(ValueError, match="written by a single process; .*distributed=False"):
        write(toy, clips, stores[torch.float32].path, torch.float32, distributed=True)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no activation store"):
        write(toy, clips, tmp_path, torch.float32, distributed=True)


def test_empty_selections_raise_before_anything_is_written(toy, prepared, tmp_path):
    target = tmp_path / "never"
    cases = [
        (KeyError, "did you mean 'blocks.*.hook_resid_post'", dict(hooks="blocks.*.hook_resid_pots")),
        (KeyError, "6 blocks, 0-5", dict(hooks="blocks.9.hook_resid_post")),
        (StoreError, r"none of the 5 clips holds \['image'\]", dict(hooks=LLM_HOOKS, modalities=["audio", "image"])),
        (ValueError, "modalities=\\['audio'\\] keeps none of them", dict(hooks="vision_proj.hook_out")),
        (ValueError, "pass batch_size=1", dict(hooks="audio_proj.hook_out", batch_size=2)),
        (ValueError, r"\[batch, head, query, key\]", dict(hooks="blocks.0.attn.hook_pattern")),
        (ValueError, "use some of 'text', 'audio'", dict(hooks=LLM_HOOKS, modalities="sound")),
        (ValueError, "clips is empty", dict(hooks=LLM_HOOKS, clips=[])),
    ]
    for error, message, kwargs in cases:
        given = kwargs.pop("clips", prepared)
        with pytest.raises(error, match=message):
            write_activation_store(toy, given, target, progress=False, **kwargs)
        assert not target.exists()


def test_a_modality_no_clip_has_raises_after_the_run(toy, clips, tmp_path):
    audio_only = [clips[2]]
    with pytest.warns(AnalysisWarning, match=r"no \['video'\] positions"), \
            pytest.raises(StoreError, match=r"no \['video'\] position in the LLM"):
        write_activation_store(toy, audio_only, tmp_path, hooks="blocks.0.hook_resid_post", modalities=["audio", "video"],
                               prepare=hear(toy), progress=False)
    with pytest.raises(StoreError, match="video"):  # and again on the finished store: never silently
        write_activation_store(toy, audio_only, tmp_path, hooks="blocks.0.hook_resid_post", modalities=["audio", "video"],
                               prepare=hear(toy), progress=False)


# ---------------------------------------------------------------------------------------------
# reading


def test_the_dataset_is_lazy_and_filters(stores, monkeypatch):
    store = stores[torch.bfloat16]
    opened = []
    real = store_dataset.safe_open
    monkeypatch.setattr(store_dataset, "safe_open", lambda path, *a, **k: opened.append(path) or real(path, *a, **k))
    hook = "blocks.2.hook_resid_post"
    dataset = store.dataset(hook, modalities="audio")
    assert opened == [] and len(dataset) == store.n_rows(hook, "audio") == 4 * 50
    row = dataset[-1]
    assert len(opened) == 1 and len(store.files()) == 3
    values, meta = store.read(hook, modalities="audio", with_metadata=True)
    assert torch.equal(row[hook], values[-1]) and row["modality"] == "audio" and row["clip_id"] == "clip3"
    assert (row["clip"], row["position"], row["time"]) == (3, int(meta["position"][-1]), pytest.approx(49 * 0.04))
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=8)))
    assert batch[hook].shape == (8, 96) and batch["modality"] == ["audio"] * 8
    both = store.dataset(["hook_embed", hook], modalities=["video"])
    assert set(both[0]) >= {"hook_embed", hook, "frame_group", "row", "col"} and both[0]["modality"] == "video"
    with pytest.raises(IndexError, match="out of range"):
        dataset[len(dataset)]
    with pytest.raises(ValueError, match="no rows"):
        store.dataset(hook, modalities="image")
    with pytest.raises(KeyError, match="did you mean"):
        store.dataset("blocks.2.hook_resid_pots")


# ---------------------------------------------------------------------------------------------
# SAELens


def require(module: str):
    if os.environ.get("HOOKED_AVLLM_REQUIRE_SAE_LENS") == "1":
        return __import__(module)  # CI's SAELens environment: fail, do not skip
    return pytest.importorskip(module)


def test_the_export_reads_as_sae_lens_reads_it(stores, tmp_path):
    datasets = require("datasets")
    store, hook = stores[torch.bfloat16], "blocks.3.hook_resid_post"
    export = store.export_sae_lens(tmp_path / "sae", hook, context_size=16, modalities="audio", max_file_mb=0.02)
    assert (export.sequences, export.rows, export.rows_dropped, export.d_in) == (12, 192, 8, 96)
    loaded = datasets.load_from_disk(export.path)
    assert len(loaded.cache_files) == 4  # 3 sequences a file
    assert loaded.features[hook] == datasets.Array2D(shape=(16, 96), dtype="float32")
    loaded.set_format(type="torch", columns=[hook], dtype=torch.float32)  # as SAELens's ActivationsStore does
    want = store.read(hook, modalities="audio").float()[:192].reshape(12, 16, 96)
    assert torch.equal(loaded[:][hook], want)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        store.export_sae_lens(tmp_path / "sae", hook, context_size=16)


def test_sae_lens_trains_from_the_export(toy, stores, tmp_path):
    sae_lens = require("sae_lens")
    import datasets

    export = stores[torch.bfloat16].export_sae_lens(tmp_path / "sae", "blocks.3.hook_resid_post", context_size=16,
                                                    modalities="audio")
    cfg = sae_lens.LanguageModelSAERunnerConfig(
        sae=sae_lens.StandardTrainingSAEConfig(d_in=export.d_in, d_sae=4 * export.d_in), **export.config_kwargs(),
        training_tokens=32 * 6, train_batch_size_tokens=32, store_batch_size_prompts=2, n_batches_in_buffer=4,
        device="cpu", logger=sae_lens.LoggingConfig(log_to_wandb=False), output_path=str(tmp_path / "out"),
        checkpoint_path=str(tmp_path / "checkpoints"), model_name="toy", lr=1e-3,
    )
    # the runner wants a token dataset and a model beside the cached activations; it trains from the cache
    tokens = datasets.Dataset.from_dict({"tokens": [[0] * export.context_size]})
    runner = sae_lens.LanguageModelSAETrainingRunner(cfg, override_dataset=tokens, override_model=toy)
    assert runner.activations_store.cached_activation_dataset is not None
    before = runner.sae.W_dec.detach().clone()
    sae = runner.run()
    after = sae.W_dec.detach()
    assert torch.isfinite(after).all() and not torch.equal(before, after)


# ---------------------------------------------------------------------------------------------
# probes


@pytest.fixture(scope="module")
def probe_clips():
    """40 counterfactual clips, 4 of each sound, each shown with another object."""
    scenes = ToyScenes(seed=1000)
    return [scenes.clip("counterfactual", 100 + i, visible=(i % 10 + 1 + i // 10) % 10, sound=i % 10) for i in range(40)]


@pytest.fixture(scope="module")
def probe_store(toy, probe_clips, tmp_path_factory):
    return write_activation_store(toy, probe_clips, tmp_path_factory.mktemp("probe"), hooks=LLM_HOOKS, modalities="audio",
                                  prepare=hear(toy), batch_size=10, dtype=torch.bfloat16, progress=False)


def test_the_probe_decodes_the_sound_not_shuffled_labels_and_the_picture_only_late(probe_store, probe_clips, tmp_path):
    sounds = [clip.sound for clip in probe_clips]
    sound = probe_layers(probe_store, sounds, target="sound", n_splits=3, steps=100)
    assert sound.chance == pytest.approx(0.1) and sound.n_classes == 10 and (sound.n_train, sound.n_test) == (30, 10)
    # measured: 1.00 at the LLM input, 0.73-0.87 in layers 0-2, 0.43-0.50 in layers 3-5 (the picture mixes in)
    assert sound.mean[:4].min() > 0.65 and sound.mean.min() > 0.3, sound
    order = torch.randperm(40, generator=torch.Generator().manual_seed(7)).tolist()
    shuffled = probe_layers(probe_store, [sounds[j] for j in order], target="shuffled sound", n_splits=2, steps=100)
    assert shuffled.mean.mean() < 0.25, shuffled  # chance 0.10; measured 0.09
    # the picture: absent from the audio tokens of the LLM input (the sound's projection alone), there in late layers
    seen = probe_layers(probe_store, [clip.visible for clip in probe_clips], target="visible object", n_splits=2, steps=100)
    assert seen.mean[0] <= 0.15 and seen.mean[4:].max() > 0.35, seen  # measured 0.00 and 0.50-0.57
    figure = sound.plot(tmp_path / "probe.png")
    assert (tmp_path / "probe.png").read_bytes()[:4] == b"\x89PNG"
    ax = figure.axes[0]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert ax.get_ylabel() == "test accuracy" and "blocks.{l}.hook_resid_post" in ax.get_xlabel()
    assert any(text.startswith("chance (1/10") for text in legend) and "±1 s.d. over splits" in legend
    assert "disjoint" in ax.get_title() and sound.table().shape == (7, 6)


def test_probe_arguments_are_checked(probe_store):
    with pytest.raises(ValueError, match="40 clips"):
        probe_layers(probe_store, [0, 1])
    with pytest.raises(ValueError, match="at least two"):
        probe_layers(probe_store, [3] * 40)
    with pytest.raises(ValueError, match="no video rows"):  # this store kept audio only
        probe_layers(probe_store, [i % 10 for i in range(40)], modality="video")

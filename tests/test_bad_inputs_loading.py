"""The bad-input catalogue, area "loading": checkpoint folders a new user could hand to
``HookedAVLLM.from_pretrained`` (a broken ``config.json`` or index, stray and duplicate weight
files, pickles, dtype and device arguments, remote tokenizer code), for every family.

Each family's checkpoint is its kit's reference, saved in the released layout
(``kit.reference_pair``: one ``model.safetensors`` for the Qwen families, two shards with an index
for MiniCPM-o and VideoLLaMA2, plus VideoLLaMA2's ``audio_tower.bin``); every case edits a fresh
copy. The weights a valid but unusual folder loads are compared with the plain folder's; the plain
folder's own load is checked against the reference by the parity tests.
"""

from __future__ import annotations

import builtins
import contextlib
import itertools
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from bad_inputs import Case, check, environment
from kits import kit_named
from safetensors.torch import load_file, save_file

from hooked_avllm import HookedAVLLM
from hooked_avllm.inputs.tokenizer import load_tokenizer
from hooked_avllm.toy.tokenizer import save_tokenizer

INDEX = "model.safetensors.index.json"
_copies = itertools.count()


# ------------------------------------------------------------------------------- checkpoint helpers


def load(folder: Path, **kwargs) -> HookedAVLLM:
    return HookedAVLLM.from_pretrained(folder, load_tokenizer=kwargs.pop("load_tokenizer", False), **kwargs)


def shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def llm_section(config: dict) -> dict:
    """The dict of ``config.json`` that describes the LLM (it holds ``vocab_size`` and ``num_hidden_layers``)."""
    if "vocab_size" in config and "num_hidden_layers" in config:
        return config
    for value in config.values():
        if isinstance(value, dict):
            try:
                return llm_section(value)
            except LookupError:
                continue
    raise LookupError("no LLM section")


def edit_config(folder: Path, edit) -> Path:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def reindex(folder: Path) -> None:
    """Write an index listing every tensor of the folder's shards (the unsharded Qwen folders get one)."""
    weight_map = {key: f.name for f in shards(folder) for key in load_file(f)}
    (folder / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def same_weights(model: HookedAVLLM, params: dict, dtype: torch.dtype = torch.float32) -> None:
    state = model.state_dict()
    assert state.keys() == params.keys()
    changed = [k for k, v in params.items() if not torch.equal(state[k], v.to(dtype))]
    assert not changed, f"weights differ from the plain folder's: {changed[:5]}"



@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """``checkpoint(kit)``: the family's reference checkpoint folder and the weights our loader reads
    from it (saved once per family)."""
    saved: dict[str, SimpleNamespace] = {}

    def checkpoint(kit) -> SimpleNamespace:
        if kit.name not in saved:
            folder = tmp_path_factory.mktemp(f"checkpoint_{kit.name}")
            _, ours = kit.reference_pair(0, folder)
            saved[kit.name] = SimpleNamespace(folder=folder, params={k: v.detach().clone() for k, v in ours.state_dict().items()})
        return saved[kit.name]

    return checkpoint


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("copies")


def context(family, saved, scratch) -> SimpleNamespace:
    def copy() -> Path:
        target = scratch / f"{family.name}_{next(_copies)}"
        shutil.copytree(saved.folder, target)
        return target

    return SimpleNamespace(family=family, folder=saved.folder, params=saved.params, copy=copy, scratch=scratch)


# ------------------------------------------------------------------------------- run functions


def invalid_json(ctx):
    folder = ctx.copy()
    (folder / "config.json").write_text('{"model_type": "x",\n "hidden_size": 64,,}')
    load(folder)


def config_list(ctx):
    folder = ctx.copy()
    (folder / "config.json").write_text("[1, 2, 3]")
    load(folder)


def drop_model_type(ctx):
    load(edit_config(ctx.copy(), lambda c: c.pop("model_type")))


def unknown_model_type(ctx):
    load(edit_config(ctx.copy(), lambda c: c.update(model_type="llava_next_video")))


def drop_layers(ctx):
    load(edit_config(ctx.copy(), lambda c: llm_section(c).pop("num_hidden_layers")))


def set_llm(key, value):
    return lambda ctx: load(edit_config(ctx.copy(), lambda c: llm_section(c).update({key: value})))


def hidden_size_as_string(ctx):
    load(edit_config(ctx.copy(), lambda c: llm_section(c).update(hidden_size=str(llm_section(c)["hidden_size"]))))


def index_without_weight_map(ctx):
    folder = ctx.copy()
    (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": 1}}))
    load(folder)


def index_not_json(ctx):
    folder = ctx.copy()
    (folder / INDEX).write_text('{"weight_map": {"a": "model.safetensors"')
    load(folder)


def index_lists_missing_shard(ctx):
    folder = ctx.copy()
    reindex(folder)
    shards(folder)[-1].unlink()
    load(folder)


def stray_copy_without_index(ctx):
    folder = ctx.copy()
    (folder / INDEX).unlink(missing_ok=True)
    shutil.copy(shards(folder)[0], folder / "zz-stray.safetensors")
    load(folder)


def stray_file_beside_index(ctx):
    """A stray shard with other values, not in the index: not read (a warning says so)."""
    folder = ctx.copy()
    if not (folder / INDEX).exists():
        reindex(folder)
    stray = {k: torch.zeros_like(v) for k, v in load_file(shards(folder)[0]).items()}
    save_file(stray, str(folder / "zz-stray.safetensors"))
    same_weights(load(folder), ctx.params)


def shards_and_audio_tower_bin(ctx):
    """VideoLLaMA2: the audio tower in a shard and in audio_tower.bin."""
    folder = ctx.copy()
    tower = torch.load(folder / "audio_tower.bin", weights_only=True)
    shard = shards(folder)[-1]
    tensors = load_file(shard)
    tensors.update({k: v.clone() for k, v in tower.items()})
    save_file(tensors, str(shard), metadata={"format": "pt"})
    reindex(folder)
    load(folder)


def two_names_one_parameter(ctx):
    """VideoLLaMA2: a SigLIP tensor under the released name and again under transformers 5.x's name."""
    folder = ctx.copy()
    shard = next(f for f in shards(folder) if any("vision_model." in k for k in load_file(f)))
    tensors = load_file(shard)
    name = next(k for k in tensors if "vision_tower.vision_tower.vision_model.embeddings" in k)
    tensors[name.replace("vision_model.", "")] = tensors[name].clone()
    save_file(tensors, str(shard), metadata={"format": "pt"})
    reindex(folder)
    load(folder)


def audio_tower_as_safetensors(ctx):
    """VideoLLaMA2: ``mm_audio_tower`` naming ``audio_tower.safetensors`` beside an index that does not list it."""
    folder = ctx.copy()
    tower = torch.load(folder / "audio_tower.bin", weights_only=True)
    (folder / "audio_tower.bin").unlink()
    save_file(tower, str(folder / "audio_tower.safetensors"))
    edit_config(folder, lambda c: c.update(mm_audio_tower="/train/run7/audio_tower.safetensors"))
    same_weights(load(folder), ctx.params)


class RunsCode:
    """Unpickling this would write a marker file: a state dict must never do that."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ.get("BAD_INPUTS_MARKER", "/nonexistent/marker")),))


def pickled_code_in_audio_tower_bin(ctx):
    folder = ctx.copy()
    marker = ctx.scratch / f"marker_{next(_copies)}"
    torch.save({"model.audio_tower.post_extract_proj.weight": RunsCode()}, folder / "audio_tower.bin")
    try:
        with environment(BAD_INPUTS_MARKER=str(marker)):
            load(folder)
    finally:
        assert not marker.exists(), "unpickling ran code"


def only_pickle_weights(ctx):
    folder = ctx.copy()
    state = {k: v for f in shards(folder) for k, v in load_file(f).items()}
    for f in shards(folder):
        f.unlink()
    (folder / INDEX).unlink(missing_ok=True)
    torch.save(state, folder / "pytorch_model.bin")
    load(folder)


def truncated_shard(ctx):
    folder = ctx.copy()
    shard = shards(folder)[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    load(folder)


def config_without_weights(ctx):
    folder = ctx.copy()
    for f in shards(folder) + sorted(folder.glob("*.bin")):
        f.unlink()
    (folder / INDEX).unlink(missing_ok=True)
    load(folder)


def dtype_string(name, want):
    def run(ctx):
        model = load(ctx.copy(), dtype=name)
        assert {p.dtype for p in model.parameters()} == {want}
        same_weights(model, ctx.params, want)

    return run


def dtype_auto(ctx):
    """``"auto"``: the dtype config.json records (here bfloat16), as transformers' from_pretrained."""
    folder = edit_config(ctx.copy(), lambda c: (c.pop("dtype", None), c.update(torch_dtype="bfloat16")))
    model = load(folder, dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    same_weights(model, ctx.params, torch.bfloat16)


def load_with(**kwargs):
    return lambda ctx: load(ctx.folder, **kwargs)


def readme_and_license_beside_index(ctx):
    folder = ctx.copy()
    if not (folder / INDEX).exists():
        reindex(folder)
    (folder / "README.md").write_text("# a model card\n")
    (folder / "LICENSE").write_text("Apache-2.0\n")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (folder / "notes.json").write_text('{"comment": "not a model file"}')
    same_weights(load(folder), ctx.params)


def resharded(ctx):
    """The same tensors in one file (the sharded folders) or in two shards with an index (the others)."""
    folder = ctx.copy()
    state = {k: v for f in shards(folder) for k, v in load_file(f).items()}
    for f in shards(folder):
        f.unlink()
    (folder / INDEX).unlink(missing_ok=True)
    if ctx.family.name in ("minicpm_o", "videollama2"):
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        keys = sorted(state)
        halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
        for name, part in halves.items():
            save_file({k: state[k] for k in part}, str(folder / name), metadata={"format": "pt"})
        reindex(folder)
    same_weights(load(folder), ctx.params)


def no_input(*args, **kwargs):
    raise AssertionError(f"input() was called: {args}")


def remote_tokenizer_folder(folder: Path, remote_class: bool) -> Path:
    """The toy tokenizer whose tokenizer_config.json names the checkpoint's own code (``auto_map``);
    importing that code would write ``RAN_REMOTE_CODE``."""
    save_tokenizer(folder, "omni")
    (folder / "tokenization_custom.py").write_text(
        "from pathlib import Path\nPath(__file__).with_name('RAN_REMOTE_CODE').touch()\n"
        "from transformers import PreTrainedTokenizerFast\nclass CustomTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_custom.CustomTokenizer", None]}
    if remote_class:
        config["tokenizer_class"] = "CustomTokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@contextlib.contextmanager
def no_prompt_no_code(folder: Path):
    saved_input = builtins.input
    builtins.input = no_input
    try:
        yield
    finally:
        builtins.input = saved_input
        assert not (folder / "RAN_REMOTE_CODE").exists(), "the checkpoint's code ran"


def remote_tokenizer_class(ctx):
    folder = remote_tokenizer_folder(ctx.scratch / f"remote_{next(_copies)}", remote_class=True)
    with no_prompt_no_code(folder):
        load_tokenizer(folder)


def auto_map_with_standard_class(ctx):
    folder = remote_tokenizer_folder(ctx.scratch / f"remote_{next(_copies)}", remote_class=False)
    with no_prompt_no_code(folder):
        tokenizer = load_tokenizer(folder)
    assert type(tokenizer).__module__.startswith("transformers.")
    assert tokenizer.convert_tokens_to_ids("<|AUDIO|>") == 243  # the toy vocabulary's audio placeholder


def checkpoint_with_remote_tokenizer(ctx):
    """Every family's from_pretrained on a checkpoint whose tokenizer names remote code: a standard
    class or a clear refusal, never a prompt, never the code."""
    folder = ctx.copy()
    remote_tokenizer_folder(folder, remote_class=True)
    with no_prompt_no_code(folder):
        try:
            model = load(folder, load_tokenizer=True)
        except ValueError as error:
            assert "never runs a checkpoint's code" in str(error)
        else:
            assert type(model.tokenizer).__module__.startswith("transformers.")


def missing_hub_id(ctx):
    with environment(HF_HUB_OFFLINE="1"):
        load("nobody/no-such-model")


# ------------------------------------------------------------------------------- the catalogue

FAMILY_CASES = [
    Case("config.json is not valid JSON", "loading", invalid_json, ValueError,
         r"config\.json is not valid JSON \(.* at line 2, column \d+\)"),
    Case("config.json holds a list", "loading", config_list, TypeError, r"config\.json holds a JSON list, not an object"),
    Case("config.json without model_type", "loading", drop_model_type, KeyError,
         r"config\.json has no 'model_type'.*supported\(\)"),
    Case("config.json with an unknown model_type", "loading", unknown_model_type, ValueError,
         r"config\.json: unknown architecture: model_type 'llava_next_video'\. Supported: \[.*'qwen3_omni_moe_thinker'"),
    Case("config.json without num_hidden_layers", "loading", drop_layers, KeyError,
         r"config\.json has no key 'num_hidden_layers', which the \w+ config needs.*add it"),
    Case("hidden_size written as a string", "loading", hidden_size_as_string, TypeError,
         r"config\.json: (\w+\.)?hidden_size is the string '\d+', a number in quotes; write it without quotes \(\d+\)"),
    Case("hidden_size written as a word", "loading", set_llm("hidden_size", "sixty-four"), TypeError,
         r"hidden_size is 'sixty-four' \(a word\), but it counts or identifies something; write a whole number"),
    Case("num_hidden_layers = 2.5", "loading", set_llm("num_hidden_layers", 2.5), TypeError,
         r"num_hidden_layers is 2\.5 \(not a whole number\).*write a whole number"),
    Case("num_hidden_layers = -7", "loading", set_llm("num_hidden_layers", -7), ValueError,
         r"num_hidden_layers is -7 \(int\) but \w+\.text\.n_layers must be a positive int"),
    Case("num_key_value_heads that do not divide the heads", "loading", set_llm("num_key_value_heads", 3), ValueError,
         r"num_key_value_heads is 3 \(int\) but \w+\.text\.n_kv_heads must be a divisor of n_heads=4"),
    Case("index without weight_map", "loading", index_without_weight_map, KeyError,
         r"model\.safetensors\.index\.json has no 'weight_map'.*download the index again, or delete it"),
    Case("index that is not valid JSON", "loading", index_not_json, ValueError,
         r"model\.safetensors\.index\.json is not valid JSON"),
    Case("index listing a missing shard", "loading", index_lists_missing_shard, FileNotFoundError,
         r"shards listed in .*index\.json are missing from .*: \['model[-\w]*\.safetensors'\]; download them"),
    Case("a stray copy of a shard, no index", "loading", stray_copy_without_index, ValueError,
         r"tensor \S+ is defined in both model[-\w]*\.safetensors and zz-stray\.safetensors.*delete the stray file"),
    Case("a stray shard beside an index", "loading", stray_file_beside_index, UserWarning,
         r"\['zz-stray\.safetensors'\] in .* is not listed in model\.safetensors\.index\.json and not read; delete"),
    Case("only pytorch_model.bin", "loading", only_pickle_weights, ValueError,
         r"only pickle checkpoints \(\*\.bin/\*\.pt\); we load safetensors only, since unpickling can run code"),
    Case("a truncated shard", "loading", truncated_shard, ValueError,
         r"could not read .*\.safetensors: .*truncated or corrupt; download it again"),
    Case("config.json but no weights", "loading", config_without_weights, FileNotFoundError,
         r"has no \*\.safetensors weights; download them too \(`hf download"),
    Case("dtype='bfloat16' (a string)", "loading", dtype_string("bfloat16", torch.bfloat16), None),
    Case("dtype='torch.float16' (a string)", "loading", dtype_string("torch.float16", torch.float16), None),
    Case("dtype='auto' (config.json's torch_dtype)", "loading", dtype_auto, None),
    Case("dtype='bf16'", "loading", load_with(dtype="bf16"), ValueError,
         r"dtype='bf16' is not a dtype torch knows; pass torch\.bfloat16.*'bfloat16'"),
    Case("dtype=torch.int8", "loading", load_with(dtype=torch.int8), ValueError,
         r"dtype=torch\.int8 is not a floating-point dtype"),
    Case("dtype=16", "loading", load_with(dtype=16), TypeError, r"dtype=16 is not a dtype torch knows"),
    Case("device='cuda:99'", "loading", load_with(device="cuda:99"), ValueError,
         r"device='cuda:99' is not on this machine, which has \['cpu'.*\]; use one of these"),
    Case("device='gpu'", "loading", load_with(device="gpu"), ValueError, r"device='gpu' is not a device; use a GPU index, 'cuda:N', 'cpu' \(this machine has \['cpu'"),
    Case("device='meta'", "loading", load_with(device="meta"), ValueError,
         r"device='meta': the meta device holds no values"),
    Case("device_map={'': 'cuda:99'}", "loading", load_with(device_map={"": "cuda:99"}), ValueError,
         r"device_map\[''\]='cuda:99' is not on this machine, which has \['cpu', 'disk'"),
    Case("device and device_map together", "loading", load_with(device="cuda:0", device_map="auto"), ValueError,
         r"device='cuda:0' and device_map='auto' both place the model; pass only one"),
    Case("README, LICENSE and other files beside an index", "loading", readme_and_license_beside_index, None),
    Case("sharded vs unsharded checkpoint", "loading", resharded, None),
    Case("a checkpoint whose tokenizer names remote code", "loading", checkpoint_with_remote_tokenizer, None),
    Case("VideoLLaMA2's audio tower in a shard and in audio_tower.bin", "loading", shards_and_audio_tower_bin, ValueError,
         r"tensor model\.audio_tower\.\S+ is defined in both model-0000\d-of-00002\.safetensors and audio_tower\.bin",
         families=("videollama2",)),
    Case("two names for one SigLIP tensor", "loading", two_names_one_parameter, ValueError,
         r"model\.vision_tower\.vision_tower\.\S+ in model-0000\d-of-00002\.safetensors and "
         r"model\.vision_tower\.vision_tower\.\S+ in model-0000\d-of-00002\.safetensors both "
         r"fill vision\.\S+: a tensor is defined twice", families=("videollama2",)),
    Case("VideoLLaMA2's audio tower as a separate safetensors file", "loading", audio_tower_as_safetensors, None,
         families=("videollama2",)),
    Case("audio_tower.bin that unpickles code", "loading", pickled_code_in_audio_tower_bin, ValueError,
         r"audio_tower\.bin could not be read with torch\.load\(weights_only=True\), which reads tensors and runs no "
         r"code: it must be a plain state dict of tensors.*Unsupported global",
         families=("videollama2",)),
]

PLAIN_CASES = [
    Case("a hub id that is not there (offline)", "loading", missing_hub_id, ValueError,
         r"could not find 'nobody/no-such-model'.*download it first with `hf download nobody/no-such-model`"),
    Case("the path of config.json, not its folder", "loading", lambda ctx: load(ctx.config_file), ValueError,
         r"config\.json is a file; pass the checkpoint folder that holds config\.json"),
    Case("name_or_path=None", "loading", lambda ctx: load(None), TypeError, r"name_or_path=None is a NoneType"),
    Case("name_or_path=''", "loading", lambda ctx: load(""), ValueError, r"name_or_path is empty"),
    Case("a folder without config.json", "loading", lambda ctx: load(ctx.scratch), FileNotFoundError,
         r"has no config\.json; is it a Hugging Face checkpoint folder\?"),
    Case("tokenizer_class from the checkpoint's code (auto_map)", "loading", remote_tokenizer_class, ValueError,
         r"names tokenizer_class 'CustomTokenizer', defined by the checkpoint's own code.*never runs a checkpoint's "
         r"code.*load_tokenizer=False"),
    Case("auto_map beside a standard tokenizer_class", "loading", auto_map_with_standard_class, None),
]

CASES = FAMILY_CASES + PLAIN_CASES
EVERY_FAMILY = [c for c in FAMILY_CASES if c.families is None]
SOME_FAMILIES = [(c, name) for c in FAMILY_CASES if c.families is not None for name in c.families]


@pytest.mark.parametrize("case", EVERY_FAMILY, ids=lambda c: c.name)
def test_bad_checkpoint(case, family, checkpoints, scratch):
    check(case, context(family, checkpoints(family), scratch))


@pytest.mark.parametrize("case, name", SOME_FAMILIES, ids=[f"{name}-{c.name}" for c, name in SOME_FAMILIES])
def test_bad_checkpoint_of_one_family(case, name, checkpoints, scratch):
    kit = kit_named(name)
    check(case, context(kit, checkpoints(kit), scratch))


@pytest.mark.parametrize("case", PLAIN_CASES, ids=lambda c: c.name)
def test_bad_loading_argument(case, tmp_path):
    config_file = tmp_path / "folder" / "config.json"
    config_file.parent.mkdir()
    config_file.write_text("{}")
    check(case, SimpleNamespace(scratch=tmp_path, config_file=config_file))

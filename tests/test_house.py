"""The house's rules, checked on the code as it stands: the layer contracts (import-linter, as
``lint-imports`` runs them in CI), no import cycle among the package's modules (function-level
imports included), generic modules that name no family, subpackages that import without building
the model, a short core, and every moved public path still resolving with a deprecation warning."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hooked_avllm", "weights_conversion")


def test_the_layer_contracts_hold():
    """The contracts in pyproject.toml ([tool.importlinter]): layers, independent family folders,
    converters free of family code, a generic core that reaches families only through the registry."""
    out = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports; raise SystemExit(lint_imports())"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def import_graph():
    """Every import between the package's modules, the ones inside functions included (grimp reads
    them all); imports made only for type checkers are left out, as they never run."""
    grimp = pytest.importorskip("grimp")
    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)


def test_no_import_cycle_among_the_modules():
    graph = import_graph()
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for module in modules:
        if module not in index:
            connect(module)
    assert not cycles, f"import cycles: {cycles}"


FAMILY_NAMES = re.compile(r"qwen|omni|videollama|minicpm|thinker", re.I)
GENERIC = ["hooked_avllm/model.py", "hooked_avllm/decoder_inputs.py", "hooked_avllm/generation.py", "hooked_avllm/edits.py",
           "hooked_avllm/tl_surface.py", "hooked_avllm/cache.py", "hooked_avllm/loading.py", "hooked_avllm/vocabulary.py",
           "hooked_avllm/architectures/base.py", "hooked_avllm/architectures/registry.py",
           *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "hooked_avllm/inputs").glob("*.py")),
           *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "hooked_avllm/analysis").glob("*.py"))]


def is_deprecated_shim(path: Path) -> bool:
    return (ast.get_docstring(ast.parse(path.read_text())) or "").startswith("Deprecated")


def code_without_docstrings(path: Path) -> str:
    """The module's code (names, strings, calls) with docstrings and comments left out."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


@pytest.mark.parametrize("path", [p for p in GENERIC if not is_deprecated_shim(ROOT / p)])  # a shim names where it moved
def test_generic_code_names_no_family(path):
    named = [line.strip() for line in code_without_docstrings(ROOT / path).splitlines() if FAMILY_NAMES.search(line)]
    assert not named, f"{path} names a family: {named[:3]}"


FRESH_IMPORT = """
import json, sys, warnings
import torch, transformer_lens  # the heavy third-party imports, once
OURS = ("hooked_avllm", "weights_conversion")
out = {}
for name in sys.argv[1:]:
    for module in [m for m in sys.modules if m.split(".")[0] in OURS]:
        del sys.modules[module]  # as in a fresh interpreter, for our (pure Python) modules
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        __import__(name)
    out[name] = {"loaded": [m for m in ("hooked_avllm.model", "hooked_avllm.architectures.registry", "hooked_avllm.analysis")
                            if m in sys.modules],
                 "deprecations": [str(w.message) for w in caught if w.category is DeprecationWarning]}
print(json.dumps(out))
"""


def fresh_imports(*modules: str) -> dict:
    """Each module imported as in a fresh interpreter (one subprocess for all: our modules are
    dropped from ``sys.modules`` before each import): what it loaded, the deprecations it raised."""
    out = subprocess.run([sys.executable, "-c", FRESH_IMPORT, *modules], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


SUBPACKAGES = ["weights_conversion", "hooked_avllm", "hooked_avllm.inputs", "hooked_avllm.vocabulary",
               "hooked_avllm.components", "hooked_avllm.towers", "hooked_avllm.config"]


def test_importing_a_subpackage_does_not_build_the_model():
    loaded = {module: result["loaded"] for module, result in fresh_imports(*SUBPACKAGES).items()}
    assert loaded == {module: [] for module in SUBPACKAGES}, f"these imports load the model's modules: {loaded}"


def test_the_core_stays_short():
    assert len((ROOT / "hooked_avllm/model.py").read_text().splitlines()) <= 300


MOVED_NAMES = [
    ("hooked_avllm.inputs", "prepare_inputs", "hooked_avllm.architectures.qwen.prepare"),
    ("hooked_avllm.inputs", "PreprocessorConfig", "hooked_avllm.architectures.qwen.preprocessor_config"),
    ("hooked_avllm.inputs", "load_video", "hooked_avllm.architectures.qwen.vision"),
    ("hooked_avllm.inputs", "ModelInputSpec", "hooked_avllm.architectures.qwen.spec"),
    ("hooked_avllm", "VisionConfig", "hooked_avllm.towers.qwen_vision"),
    ("hooked_avllm.config", "AudioConfig", "hooked_avllm.towers.whisper_audio"),
]


@pytest.mark.parametrize("module, name, new_home", MOVED_NAMES)
def test_moved_names_still_resolve_with_a_deprecation_warning(module, name, new_home):
    with pytest.warns(DeprecationWarning, match=re.escape(new_home)):
        value = getattr(importlib.import_module(module), name)
    assert value is not None


MOVED_MODULES = {
    "hooked_avllm.inputs.model_spec": "hooked_avllm.architectures.qwen.spec",
    "hooked_avllm.inputs.positions": "hooked_avllm.architectures.qwen.positions",
    "hooked_avllm.inputs.processor": "hooked_avllm.architectures.qwen.prepare",
    "hooked_avllm.analysis.select": "hooked_avllm.inputs.select",
    "hooked_avllm.position_kinds": "hooked_avllm.vocabulary",
    "hooked_avllm.generation_cache": "hooked_avllm.generation",
}


def test_moved_modules_still_import_with_a_deprecation_warning():
    results = fresh_imports(*MOVED_MODULES)
    for old, new in MOVED_MODULES.items():
        assert any(new in message for message in results[old]["deprecations"]), (old, results[old])


def test_the_library_itself_uses_no_deprecated_path():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
                "import hooked_avllm.model, hooked_avllm.analysis, hooked_avllm.toy, hooked_avllm.demo, weights_conversion.qwen3_omni\n"
                "from hooked_avllm.architectures import supported; supported()")
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# import name -> distribution name, where they differ
DISTRIBUTIONS = {"PIL": "pillow", "huggingface_hub": "huggingface-hub", "transformer_lens": "transformer-lens",
                 "triton": "torch"}  # Triton ships with CUDA builds of torch (imported only where present)
OPTIONAL = {"accelerate": "multi-gpu", "openai": "study", "pyarrow": "study", "scipy": "study"}  # imported only where that extra's feature is asked for


def test_every_third_party_module_the_library_imports_is_declared():
    """What ``hooked_avllm`` imports from outside the standard library is a runtime dependency of
    ``pyproject.toml`` (or, for a feature that names it, of that feature's extra): a fresh install
    without the test extras has everything the public API uses (pandas behind ``.table()``...)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower() for r in requirements}

    declared = names(project["dependencies"])
    imported = set()
    for path in (ROOT / "hooked_avllm").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in ("hooked_avllm", "weights_conversion")}
    for module in sorted(third_party):
        if module in OPTIONAL:
            assert module.lower() in names(project["optional-dependencies"][OPTIONAL[module]]), module
        else:
            assert DISTRIBUTIONS.get(module, module).lower() in declared, f"hooked_avllm imports {module}, which pyproject.toml does not declare"

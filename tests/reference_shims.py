"""Stand-ins for torchaudio and torchvision, so independent reference implementations import on
the CPU machines (torchaudio and torchvision cannot be installed beside the CPU torch wheel).

* ESPnet's ``BeatsEncoder`` imports ``torchaudio.compliance.kaldi`` at module top; the tests feed it
  features directly, so the stand-in is never used (calling it fails loudly)
  (:func:`import_espnet_beats`).
* timm imports torchvision for its data transforms; the RegNet stage the tests compare against
  never calls them, so while timm imports, every torchvision attribute is an inert placeholder
  class (:func:`import_timm_regnet`).

Only reference code imported by tests sees these; the library never imports either package.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import types


class _Placeholder(type):
    """A torchvision class or enum nobody calls: attribute access gives a unique name."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return f"{cls.__name__}.{name}"

    def __call__(cls, *args, **kwargs):
        raise RuntimeError(f"torchvision stand-in {cls.__name__} was called; the reference needs real torchvision here")


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, root: str):
        self.root = root

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] == self.root:
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def _import_with_stand_in(module: str, stood_in: str):
    """Import ``module`` with ``stood_in`` replaced by placeholders during that import only (unless
    the real package is installed, as on the GPU machine)."""
    try:
        importlib.import_module(stood_in)
        return importlib.import_module(module)
    except ImportError:
        pass
    try:  # transformers probes optional packages when first imported: let it see the truth first
        importlib.import_module("transformers")
    except ImportError:
        pass
    finder = _StubFinder(stood_in)
    sys.meta_path.insert(0, finder)
    try:
        return importlib.import_module(module)
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.split(".")[0] == stood_in]:
            del sys.modules[name]


def import_espnet_beats():
    """``espnet2.asr.encoder.beats_encoder`` (ESPnet's BEATs), with torchaudio stood in while it imports."""
    return _import_with_stand_in("espnet2.asr.encoder.beats_encoder", "torchaudio")


def import_timm_regnet():
    """``timm.models.regnet`` (timm's RegNet stages), with torchvision stood in while it imports."""
    return _import_with_stand_in("timm.models.regnet", "torchvision")

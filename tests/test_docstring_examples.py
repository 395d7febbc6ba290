"""Every docstring example of the library runs (``python -m doctest`` over each module of
``hooked_avllm`` and ``weights_conversion``), so an example cannot drift from the code it shows.
Examples that need a real checkpoint, a GPU or a model built beforehand say ``# doctest: +SKIP``."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import warnings

import pytest

import hooked_avllm
import weights_conversion


def modules() -> list[str]:
    names = []
    for package in (hooked_avllm, weights_conversion):
        names.append(package.__name__)
        names += [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    return sorted(n for n in names if not n.endswith("__main__"))


@pytest.mark.parametrize("name", modules())
def test_docstring_examples_run(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the deprecated re-exports warn on import
        module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (run: python -m doctest -v)"

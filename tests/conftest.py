"""Shared fixtures.

* ``hub_fixtures``: the real hub files copied into the repository (``tests/fixtures/hub``).
* ``family``: one family's test kit (``tests/kits/<family>.py``, see ``kits.FamilyKit``), parametrized
  over every kit found, test ids the family names. A test that must run on every family takes it; a
  test for the families with some property narrows it with ``kits.families_where(predicate)``.
* ``model``: the family's tiny random model, once per test module, seeded by ``model_seed`` (0; a
  module overrides ``model_seed`` with its own fixture to draw other weights). A module that needs
  another model defines its own ``model`` fixture, which takes precedence.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
# Two cores in CI, shared by the pytest-xdist workers (``-n auto`` in pyproject.toml): each worker
# runs as many torch threads as it has cores of its own (one each in CI; a lone process two).
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))

from kits import KITS  # noqa: E402  (after the path above)

HUB = Path(__file__).resolve().parent / "fixtures" / "hub"  # real hub files, copied into the repo (SOURCES.md)


@pytest.fixture(scope="session")
def hub_fixtures() -> Path:
    if not HUB.exists():
        raise FileNotFoundError(f"the hub fixtures are expected at {HUB} (tests/fixtures/hub in the repository)")
    return HUB


@pytest.fixture(scope="module", params=KITS, ids=[kit.name for kit in KITS])
def family(request):
    """One family's test kit (every kit in tests/kits/, found automatically)."""
    return request.param


@pytest.fixture(scope="module")
def model_seed() -> int:
    """The seed of the ``model`` fixture's weights (override in a module for others)."""
    return 0


@pytest.fixture(scope="module")
def model(family, model_seed):
    """The family's tiny random model (float32, eval mode), once per module."""
    return family.model(seed=model_seed)


MAX_WORKERS = 4  # more processes than this gain nothing on a suite of tiny models, and each imports torch


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``'s number of worker processes: one per core (at most :data:`MAX_WORKERS`); none
    (the tests in this process) for a run of one file, or on a machine with a GPU, whose tests
    share the one device and time it."""
    paths = [arg for arg in config.args if not arg.startswith("-")]
    if torch.cuda.is_available() or (len(paths) == 1 and paths[0].split("::")[0].endswith(".py")):
        return 0
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(2)

HUB = Path(__file__).resolve().parent / "fixtures" / "hub"  # real hub files, copied into the repo (SOURCES.md)


@pytest.fixture(scope="session")
def hub_fixtures() -> Path:
    if not HUB.exists():
        raise FileNotFoundError(f"the hub fixtures are expected at {HUB} (tests/fixtures/hub in the repository)")
    return HUB

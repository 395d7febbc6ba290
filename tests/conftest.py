import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(2)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
HUB = SHARED / "fixtures" / "hub"


@pytest.fixture(scope="session")
def hub_fixtures() -> Path:
    if not HUB.exists():
        raise FileNotFoundError(f"the shared hub fixtures are expected at {HUB}")
    return HUB

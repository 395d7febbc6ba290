"""The test kits keep the contract the shared tests rely on (``kits.FamilyKit``'s docstring), and the
harness modules' examples run."""

from __future__ import annotations

import doctest

import pytest
import torch

import kits
import parity


def test_each_kit_builds_its_own_family_at_the_documented_size(family, model):
    assert model.architecture.name == family.name, "the kit's model is another family's"
    assert (model.cfg.n_layers, model.cfg.n_heads) == (2, 4) and model.cfg.d_model <= 256 and not model.training
    assert family.model(seed=1, audio=False).audio is None
    three = family.clip(model, seconds=3, seed=1)
    other = family.clip(model, seed=2, **family.other_length)
    assert three.layout.audio.any() and three.layout.video.any()
    assert three.input_ids.shape[1] != other.input_ids.shape[1], "other_length must give another sequence length"
    batch = family.batch(model, [three, other])
    assert batch.input_ids.shape[0] == 2 and bool((batch.attention_mask[:, 0] == 0).any()), "left-padded by default"
    assert family.audio_token_times(4).shape == (4,)
    alone = family.text(model, torch.tensor([[5, 6, 7]]))
    assert not alone.layout.audio.any() and alone.input_ids.shape == (1, 3)


@pytest.mark.parametrize("module", [kits, parity], ids=["kits", "parity"])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

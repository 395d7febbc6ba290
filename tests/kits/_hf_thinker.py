"""The reference side shared by families whose reference is a Hugging Face thinker
(``*ThinkerForConditionalGeneration``): it takes the same ids and media keyword arguments as our
model, generates from ids (the prompt is returned with the new tokens), and its decoder is
``reference.model.language_model`` (transformers 5.x) or ``reference.model``."""

from __future__ import annotations

import torch

from kits import FamilyKit
from parity import reference_pair


def rows(n: int, generator: torch.Generator) -> list[int]:
    """``n`` random text ids below the tiny vocabularies' media ids."""
    return torch.randint(0, 199, (n,), generator=generator).tolist()


def features(frames: int, generator: torch.Generator) -> torch.Tensor:
    """Random log-mel features ``[1, 128, frames]``."""
    return torch.randn(1, 128, frames, generator=generator)


class HFThinkerKit(FamilyKit):
    """A kit whose reference is a transformers thinker: subclasses set ``build_reference(variant,
    seed)`` (the tiny random thinker) and ``build_case(name, seed, padding_side)`` (a named case's
    keyword arguments for both models)."""

    lays_out_bare_ids = True
    reference_generates_prompt = True

    @staticmethod
    def build_reference(variant: str, seed: int):
        raise NotImplementedError

    @staticmethod
    def build_case(name: str, seed: int = 0, padding_side: str = "left") -> dict:
        raise NotImplementedError

    def text(self, model, input_ids):
        return model.to_inputs(input_ids, torch.ones_like(input_ids))

    def reference_pair(self, seed, folder, variant="a"):
        return reference_pair(self.build_reference(variant, seed=seed), folder)

    def reference_forward(self, reference, inputs, mask):
        kwargs = dict(inputs.model_kwargs(), attention_mask=mask)
        return reference(**kwargs, position_ids=inputs.layout.position_ids, output_hidden_states=True)

    def reference_decoder(self, reference, inputs):
        # 3 position rows (M-RoPE); transformers 5.x keeps the decoder under model.language_model
        return getattr(reference.model, "language_model", reference.model), inputs.layout.position_ids

    def reference_generator(self, reference, inputs):
        return reference, (inputs if isinstance(inputs, dict) else inputs.model_kwargs())

    def generation_case(self, ours, case, seed, padding_side="left"):
        return self.build_case(case, seed=seed, padding_side=padding_side)

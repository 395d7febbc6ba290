"""The bad-input catalogue's harness: every case a user could meet, and what the library must do.

Each ``tests/test_bad_inputs_<area>.py`` defines ``CASES``, a list of :class:`Case`, and runs each
through :func:`check`: the bad call must raise the expected exception type (or warn with the
expected warning category) with a message matching ``match`` (the argument, the value and what to
do), or, for valid but unusual inputs (``expect=None``), run and pass its own assertions. Cases
that take a model get the family's tiny model (every kit, ``tests/kits/``) and must leave it as a
fresh one: no hook, attention edit or SAE left behind, weights, mode and outputs unchanged
(:class:`ModelSnapshot`). ``tests/test_bad_inputs_catalogue.py`` counts the cases for the README.

Example:
    >>> case = Case("a word where a number belongs", "cli", lambda ctx: int("x"), ValueError, "invalid literal")
    >>> type(check(case, None)).__name__
    'ValueError'
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch

AREAS = ("loading", "media", "prompt", "tensors", "hooks", "analysis", "generation", "cli", "device_map", "saes",
         "parallel")


@dataclass(frozen=True)
class Case:
    """One catalogue entry.

    name:    what the user did (the test id).
    area:    one of :data:`AREAS`.
    run:     ``run(ctx)`` performs the call; ``ctx`` is the area file's context (a model, a
             folder, ...), or ``None``.
    expect:  the exception type the call must raise, a ``Warning`` subclass it must warn with, or
             ``None`` for a valid input the library must handle (``run`` asserts the result).
    match:   a regular expression the message must match (searched, case-sensitive).
    families: ``None`` (any family, or none needed), or the kit names the case applies to.
    """

    name: str
    area: str
    run: Callable[[Any], Any]
    expect: type[BaseException] | type[Warning] | None
    match: str = ""
    families: tuple[str, ...] | None = None
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.area not in AREAS:
            raise ValueError(f"area {self.area!r} is not one of {AREAS}")
        if self.expect is not None and not self.match:
            raise ValueError(f"case {self.name!r}: an expected error or warning needs a message pattern (match=)")

    @property
    def kind(self) -> str:
        if self.expect is None:
            return "handled"
        return "warning" if issubclass(self.expect, Warning) else "error"


def check(case: Case, ctx: Any) -> Any:
    """Run ``case`` and assert what it must do (see :class:`Case`); returns the call's result."""
    if case.expect is None:
        return case.run(ctx)
    if issubclass(case.expect, Warning):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = case.run(ctx)
        messages = [str(w.message) for w in caught if issubclass(w.category, case.expect)]
        assert messages, f"{case.name}: expected a {case.expect.__name__}; got {[str(w.message) for w in caught]}"
        assert any(re.search(case.match, m) for m in messages), f"{case.name}: no warning matches {case.match!r}: {messages}"
        return result
    try:
        case.run(ctx)
    except case.expect as error:
        message = str(error)
        assert re.search(case.match, message), f"{case.name}: the message does not match {case.match!r}:\n{message}"
        assert "Traceback" not in message
        return error
    except BaseException as error:  # noqa: BLE001 - the wrong kind of failure is the finding
        raise AssertionError(f"{case.name}: expected {case.expect.__name__}, got {type(error).__name__}: {error}") from error
    raise AssertionError(f"{case.name}: expected {case.expect.__name__}, but the call went through silently")


class ModelSnapshot:
    """A model's state before a case: ``assert_unchanged()`` after it checks that no hook, attention
    edit or SAE was left behind and that the weights, the mode and a probe's logits are as they were.

    Example:
        >>> snapshot = ModelSnapshot(model)  # doctest: +SKIP
        >>> snapshot.assert_unchanged()      # doctest: +SKIP
    """

    def __init__(self, model: Any, probe: torch.Tensor | None = None):
        self.model = model
        self.training = model.training
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.probe = torch.tensor([[5, 6, 7, 8]]) if probe is None else probe
        with torch.no_grad():
            self.logits = model(self.probe)

    def assert_unchanged(self) -> None:
        model = self.model
        leftover = [name for name, hp in model.hook_dict.items() if hp._forward_hooks or hp._backward_hooks]
        assert not leftover, f"hooks left behind on {leftover[:5]}"
        assert not getattr(model, "has_attention_edits", False), "an attention edit was left behind"
        attached = model.acts_to_saes if hasattr(model, "acts_to_saes") else {}
        assert not attached, f"SAEs left attached at {sorted(attached)}"
        assert model.training == self.training, "the model's train/eval mode changed"
        state = model.state_dict()
        assert state.keys() == self.state.keys(), "the model's parameters changed"
        changed = [k for k, v in self.state.items() if not torch.equal(state[k], v)]
        assert not changed, f"weights changed: {changed[:5]}"
        with torch.no_grad():
            logits = model(self.probe)
        assert torch.equal(logits, self.logits), "the model's output on a probe changed"


__all__ = ["AREAS", "Case", "ModelSnapshot", "check"]


def family_cases(cases: list[Case]) -> list:
    """Every case on every family it applies to (a case restricted by ``families`` runs on those
    only), as ``pytest.param(case, kit)`` for ``parametrize("case, family", ..., indirect=["family"])``."""
    from kits import KITS

    return [pytest.param(case, kit, id=f"{case.name}-{kit.name}")
            for case in cases for kit in KITS if case.families is None or kit.name in case.families]


@contextlib.contextmanager
def environment(**values: str | None):
    """Set (or, with None, unset) environment variables inside the block; the real ones after."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)

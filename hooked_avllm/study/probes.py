"""Linear probes over layers, on an activation store: which class (e.g. which sound) a layer's
audio tokens encode, the study's "latent audio understanding".

Per hook (layer), each clip becomes one feature vector, the mean of its rows of one modality
(:func:`clip_means`, one pass over the store, shard by shard). A multinomial logistic regression
(torch, full-batch L-BFGS, L2-penalised, features standardised with the training clips' mean and
spread) is trained on some clips and scored on the others: train and test clips never overlap, so
the probe cannot score by remembering a clip. Splits are stratified (each class keeps the same
share in the test set) and repeated over ``n_splits`` seeds; :class:`LayerProbe` holds the test
accuracy of every split and layer, the chance level (1 / number of classes) and the majority-class
baseline (always answering the most frequent training class), and plots the mean accuracy per
layer with a band of plus/minus one standard deviation over the splits.

A probe that scores well above chance says the information is linearly readable from those
tokens, not that the model uses it; labels that say nothing about the clips (shuffled or random)
must score near chance, which the tests check.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> labels = torch.arange(40) % 4
    >>> signal = torch.nn.functional.one_hot(labels, 8).float() * 3 + torch.randn(40, 8, generator=g)
    >>> train, test = torch.arange(40) < 28, torch.arange(40) >= 28
    >>> probe_accuracy(signal[train], labels[train], signal[test], labels[test], n_classes=4)
    1.0
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_avllm.analysis.arguments import AnalysisWarning
from hooked_avllm.analysis.plotting import pyplot, save
from hooked_avllm.study.store_dataset import LLM_GROUP, ActivationStore

__all__ = ["LayerProbe", "clip_means", "fit_probe", "probe_accuracy", "probe_layers", "stratified_split"]


def clip_means(
    store: ActivationStore, hooks: Sequence[str] | None = None, modality: str = "audio",
) -> tuple[Float[Tensor, "hook clip d"], Int[Tensor, "clip"]]:
    """The mean row of each clip at each hook, over its rows of ``modality`` (float32, one pass
    over the store), and each clip's number of such rows (0: the clip has none; its mean is 0).

    Example:
        >>> means, counts = clip_means(store, ["blocks.3.hook_resid_post"], "audio")  # doctest: +SKIP
        >>> means.shape  # [1 hook, clips, d_model]  # doctest: +SKIP
    """
    hooks = list(hooks) if hooks is not None else _default_hooks(store)
    n_clips = len(store.clip_ids)
    sums = [torch.zeros(n_clips, store.d(h), dtype=torch.float64) for h in hooks]
    counts = torch.zeros(n_clips, dtype=torch.long)
    for part in store.iter_shards(hooks, modality):
        clip = part["clip"].long()
        counts.index_add_(0, clip, torch.ones_like(clip))
        for k, hook in enumerate(hooks):
            sums[k].index_add_(0, clip, part[hook].double())
    means = torch.stack([s / counts.clamp(min=1)[:, None] for s in sums]).float()  # [hook, clip, d]
    return means, counts


def _default_hooks(store: ActivationStore) -> list[str]:
    """The store's LLM hooks (in layer order), or the hooks of its only group."""
    return store.groups.get(LLM_GROUP) or store._group(None)[1]


def stratified_split(labels: Int[Tensor, "n"], test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Disjoint train / test indices: each class's items shuffled (``seed``) and
    ``round(test_fraction * n_class)`` of them (at least one, leaving at least one) to test.

    Example:
        >>> train, test = stratified_split(torch.tensor([0, 0, 0, 1, 1, 1]), 0.34, seed=0)
        >>> sorted(train.tolist() + test.tolist()), len(test)
        ([0, 1, 2, 3, 4, 5], 2)
    """
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        n_test = min(max(1, round(test_fraction * len(members))), len(members) - 1) if len(members) > 1 else 0
        test.append(members[:n_test])
        train.append(members[n_test:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(test)).values


def fit_probe(x: Float[Tensor, "n d"], y: Int[Tensor, "n"], n_classes: int, steps: int = 200,
              weight_decay: float = 1e-3, seed: int = 0) -> tuple[torch.nn.Linear, Tensor, Tensor]:
    """A multinomial logistic regression on standardised ``x``: ``(linear, mean, std)``, where
    ``linear((x - mean) / std)`` are the class logits. Full-batch L-BFGS on the cross-entropy plus
    ``weight_decay`` times the squared weights."""
    generator = torch.Generator().manual_seed(seed)
    x = x.float()
    mean, std = x.mean(0), x.std(0, unbiased=False) + 1e-6
    xs = (x - mean) / std
    probe = torch.nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(probe.weight.shape, generator=generator) * 0.01)
        probe.bias.zero_()
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(xs), y) + weight_decay * probe.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad(), _one_thread(xs.numel() * n_classes < 10_000_000):
        optimizer.step(closure)
    return probe, mean, std


@contextmanager
def _one_thread(small: bool) -> Iterator[None]:
    """One intra-op thread for a small problem: its many tiny operations cost more in thread
    hand-offs than they gain (30x slower on 2 shared cores); the setting is restored after."""
    before = torch.get_num_threads()
    if small and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def probe_accuracy(train_x: Float[Tensor, "n d"], train_y: Int[Tensor, "n"], test_x: Float[Tensor, "m d"],
                   test_y: Int[Tensor, "m"], n_classes: int | None = None, **fit: Any) -> float:
    """Test accuracy of :func:`fit_probe` trained on ``(train_x, train_y)``."""
    n_classes = n_classes or int(max(train_y.max(), test_y.max())) + 1
    probe, mean, std = fit_probe(train_x, train_y, n_classes, **fit)
    with torch.no_grad():
        return float((probe((test_x.float() - mean) / std).argmax(-1) == test_y).float().mean())


def layer_label(hook: str) -> str:
    """``"blocks.3.hook_resid_post"`` -> ``"3"``, ``"hook_embed"`` -> ``"embed"``, others unchanged."""
    found = re.fullmatch(r"(?:\w+\.)?blocks\.(\d+)\.[\w.]+", hook)
    if found:
        return found.group(1)
    return "embed" if hook == "hook_embed" else hook


@dataclass
class LayerProbe:
    """Test accuracy of a linear probe per hook (layer) and split; see the module docstring.

    ``accuracy`` is ``[split, hook]``; ``mean`` and ``std`` are over splits; ``chance`` is
    1 / ``n_classes``; ``majority`` ``[split]`` the majority-class baseline's test accuracy.
    """

    hooks: list[str]
    accuracy: Float[Tensor, "split hook"]
    chance: float
    majority: Float[Tensor, "split"]
    n_classes: int
    n_train: int
    n_test: int
    modality: str
    target: str = "label"
    clips_without_rows: list[int] = field(default_factory=list)

    @property
    def mean(self) -> Float[Tensor, "hook"]:
        return self.accuracy.mean(0)

    @property
    def std(self) -> Float[Tensor, "hook"]:
        return self.accuracy.std(0, unbiased=False)

    @property
    def labels(self) -> list[str]:
        return [layer_label(hook) for hook in self.hooks]

    def table(self) -> Any:
        """One row per hook: mean and std of the test accuracy over splits, chance, majority baseline."""
        import pandas as pd

        return pd.DataFrame({"hook": self.hooks, "layer": self.labels, "accuracy": self.mean.tolist(),
                             "std": self.std.tolist(), "chance": self.chance,
                             "majority_baseline": float(self.majority.mean())})

    def plot(self, path: str | Path | None = None) -> Any:
        """Mean test accuracy per layer, a band of +/- 1 standard deviation over the splits, the
        chance line (and the majority-class baseline where it is higher); saved as PNG when
        ``path`` is given. Returns the figure.

        Example:
            >>> probe_layers(store, labels).plot("probe.png")  # doctest: +SKIP
        """
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(self.hooks) + 2.0), 3.4))
        x = torch.arange(len(self.hooks)).numpy()
        mean, std = self.mean.numpy(), self.std.numpy()
        n_splits = self.accuracy.shape[0]
        ax.plot(x, mean, marker="o", color="C0", label=f"test accuracy (mean of {n_splits} splits)")
        if n_splits > 1:
            ax.fill_between(x, mean - std, mean + std, color="C0", alpha=0.2, label="±1 s.d. over splits")
        ax.axhline(self.chance, color="0.3", linestyle="--", label=f"chance (1/{self.n_classes} = {self.chance:.2f})")
        majority = float(self.majority.mean())
        if majority > self.chance + 0.01:
            ax.axhline(majority, color="C3", linestyle=":", label=f"majority class ({majority:.2f})")
        ax.set_xticks(x, self.labels, rotation=0 if all(len(l) <= 5 for l in self.labels) else 60)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(_x_label(self.hooks))
        ax.set_ylabel("test accuracy")
        ax.set_title(f"linear probe of the {self.target} from each clip's mean {self.modality}-token activation\n"
                     f"({self.n_train} train / {self.n_test} test clips per split, disjoint)", fontsize=9)
        ax.legend(fontsize=7, loc="best")
        return save(fig, path)

    def __repr__(self) -> str:
        cells = ", ".join(f"{label}: {m:.2f}" for label, m in zip(self.labels, self.mean.tolist()))
        return (f"LayerProbe({self.target} from {self.modality} tokens, {self.n_classes} classes, chance {self.chance:.2f}, "
                f"{self.n_train} train / {self.n_test} test clips x {self.accuracy.shape[0]} splits; {cells})")


def _x_label(hooks: list[str]) -> str:
    kinds = {re.sub(r"blocks\.\d+\.", "blocks.{l}.", hook) for hook in hooks if hook != "hook_embed"}
    if len(kinds) == 1:
        kind = kinds.pop()
        return f"layer l ({kind}" + (", and the LLM input hook_embed)" if "hook_embed" in hooks else ")")
    return "hook"


def _labels_per_clip(store: ActivationStore, labels: Sequence[Any] | Mapping[Any, Any] | Tensor) -> dict[int, Any]:
    """Clip index -> label, from a list (one per clip, ``None`` to leave a clip out) or a mapping
    from clip id (or index) to label."""
    ids = store.clip_ids
    if isinstance(labels, Mapping):
        where = {clip_id: k for k, clip_id in enumerate(ids)}
        unknown = [key for key in labels if key not in where]
        if unknown:
            raise KeyError(f"labels names clip {unknown[0]!r}, which the store does not hold (store.clip_ids lists them)")
        return {where[key]: value for key, value in labels.items() if value is not None}
    values = labels.tolist() if isinstance(labels, Tensor) else list(labels)
    if len(values) != len(ids):
        raise ValueError(f"labels has {len(values)} entries for the store's {len(ids)} clips; pass one per clip "
                         "(None to leave one out) or a mapping from clip id to label")
    return {k: value for k, value in enumerate(values) if value is not None}


def probe_layers(
    store: ActivationStore,
    labels: Sequence[Any] | Mapping[Any, Any] | Tensor,
    hooks: Sequence[str] | None = None,
    modality: str = "audio",
    test_fraction: float = 0.3,
    n_splits: int = 5,
    seed: int = 0,
    target: str = "label",
    steps: int = 200,
    weight_decay: float = 1e-3,
) -> LayerProbe:
    """Per hook, a linear probe of ``labels`` from each clip's mean ``modality`` row, trained and
    tested on disjoint clips over ``n_splits`` stratified splits.

    Args:
        store: an activation store holding ``hooks`` at ``modality``.
        labels: one label per clip (any hashable; ``None`` leaves a clip out), or a mapping from
            clip id to label.
        hooks: hooks of one group (default: the store's LLM hooks, in layer order).
        modality: whose rows are averaged per clip.
        test_fraction: share of each class's clips held out for testing in a split.
        n_splits: random splits (the plot's band is +/- 1 s.d. over them).
        target: what the labels are, for the plot's title (``"sound"``).

    Example:
        >>> result = probe_layers(store, [clip.sound for clip in clips], target="sound")  # doctest: +SKIP
        >>> result.mean, result.chance  # doctest: +SKIP
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 1:
        raise ValueError(f"n_splits must be an int >= 1, got {n_splits!r}")
    hooks = list(hooks) if hooks is not None else _default_hooks(store)
    store._group(hooks)  # one group, or a clear error
    by_clip = _labels_per_clip(store, labels)
    means, counts = clip_means(store, hooks, modality)
    if int(counts.sum()) == 0:
        raise ValueError(f"the store holds no {modality} rows of {hooks[0]} (rows by modality: "
                         f"{store.rows_by_modality(hooks[0])}); pick a modality it kept")
    empty = sorted(k for k in by_clip if counts[k] == 0)
    kept = sorted(k for k in by_clip if counts[k] > 0)
    if empty:
        warnings.warn(f"{len(empty)} labelled clips hold no {modality} rows in the store and are left out of the probe "
                      f"(clips {empty[:8]})", AnalysisWarning, stacklevel=2)
    classes = sorted({by_clip[k] for k in kept}, key=repr)
    if len(classes) < 2:
        raise ValueError(f"labels of the clips with {modality} rows hold {len(classes)} class(es) {classes}; a probe needs "
                         "at least two (did the store keep that modality? store.rows_by_modality(hook) says)")
    code = {label: k for k, label in enumerate(classes)}
    y = torch.tensor([code[by_clip[k]] for k in kept])
    too_few = [label for label in classes if int((y == code[label]).sum()) < 2]
    if too_few:
        raise ValueError(f"classes {too_few[:5]} have fewer than 2 clips: each class needs clips on both sides of a split")
    x = means[:, kept]  # [hook, clip, d]
    accuracy = torch.zeros(n_splits, len(hooks))
    majority = torch.zeros(n_splits)
    n_train = n_test = 0
    for split in range(n_splits):
        train, test = stratified_split(y, test_fraction, seed + split)
        n_train, n_test = len(train), len(test)
        most = torch.bincount(y[train], minlength=len(classes)).argmax()
        majority[split] = (y[test] == most).float().mean()
        for h in range(len(hooks)):
            accuracy[split, h] = probe_accuracy(x[h, train], y[train], x[h, test], y[test], n_classes=len(classes),
                                                steps=steps, weight_decay=weight_decay, seed=seed + split)
    return LayerProbe(hooks, accuracy, 1 / len(classes), majority, len(classes), n_train, n_test, modality, target, empty)

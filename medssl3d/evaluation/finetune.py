"""Supervised fine-tuning of a classifier on in-memory images, with optional class-balanced sampling."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler

from medssl3d.transfer import parameter_groups

__all__ = ["RepeatFactorSampler", "fine_tune_classifier", "predict_proba", "repeat_factors"]


def repeat_factors(labels: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Per-sample repeat factors of repeat-factor sampling (LVIS, Gupta et al. 2019), single-label form:
    ``r_c = max(1, sqrt(t / f_c))`` with ``f_c`` the fraction of samples of class ``c``; a sample repeats
    ``r`` of its class. ``threshold`` ``t`` defaults to ``1 / C`` (the frequency of a class in a balanced
    set), so only classes rarer than that are oversampled. Shape ``(N,)`` -> ``(N,)`` float64."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"repeat_factors: expected non-empty labels (N,), got shape {labels.shape}.")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    threshold = 1.0 / len(classes) if threshold is None else threshold
    if threshold <= 0:
        raise ValueError(f"repeat_factors: threshold must be > 0, got {threshold}.")
    per_class = np.maximum(1.0, np.sqrt(threshold / (counts / len(labels))))
    return per_class[inverse]


class RepeatFactorSampler(Sampler[int]):
    """Sampler drawing each sample ``floor(r) + Bernoulli(r - floor(r))`` times per epoch (LVIS stochastic
    rounding), shuffled; ``r`` from :func:`repeat_factors`. Epoch ``e`` is a pure function of
    ``(seed, e)``; the epoch advances at every iteration (or is set with :meth:`set_epoch`)."""

    def __init__(self, labels: np.ndarray, threshold: float | None = None, seed: int = 0) -> None:
        self.factors = repeat_factors(labels, threshold)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        whole = np.floor(self.factors)
        repeats = (whole + (rng.random(len(self.factors)) < self.factors - whole)).astype(np.int64)
        indices = np.repeat(np.arange(len(self.factors)), repeats)
        return iter(rng.permutation(indices).tolist())

    def __len__(self) -> int:  # expected number of draws per epoch
        return round(self.factors.sum())


def _parameter_groups(model: nn.Module, lr: float, encoder_lr: float | None, weight_decay: float) -> list[dict]:
    """:func:`medssl3d.transfer.parameter_groups` for a model with an ``encoder``; one group otherwise."""
    if isinstance(getattr(getattr(model, "module", model), "encoder", None), nn.Module):
        return parameter_groups(model, lr, encoder_lr, weight_decay)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr, "weight_decay": weight_decay}]


def fine_tune_classifier(
    model: nn.Module,
    train_images,
    train_labels,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 1e-3,
    encoder_lr: float | None = None,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    class_balanced: bool = False,
    repeat_threshold: float | None = None,
    on_epoch_end: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Train ``model`` (any ``nn.Module`` mapping ``(B, C, *spatial)`` to logits ``(B, num_classes)``) with
    cross-entropy and AdamW; return it in eval mode.

    Parameters of ``model.encoder`` (when it has one) use ``encoder_lr`` (default ``lr``); frozen parameters
    are left out. ``augment`` is applied to each training batch tensor. ``class_balanced`` replaces the
    plain shuffle by :class:`RepeatFactorSampler` (LVIS repeat-factor sampling, Gupta et al. 2019:
    ``r_c = max(1, sqrt(t / f_c))``, ``t`` = ``repeat_threshold``). Shuffling, dropout and augmentation
    draw from torch's global generator seeded with ``seed``. ``on_epoch_end(epoch, mean_loss)`` is called
    after every epoch. Shapes: images ``(N, C, *spatial)`` (tensor or array), labels ``(N,)`` ints.
    """
    images = torch.as_tensor(train_images)
    labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.int64)
    if images.ndim < 3 or labels.shape != images.shape[:1] or len(labels) == 0:
        raise ValueError(f"fine_tune_classifier: expected images (N, C, *spatial) and labels (N,) with N > 0, got "
                         f"{tuple(images.shape)} and {tuple(labels.shape)}.")
    torch.manual_seed(seed)
    sampler = RepeatFactorSampler(labels.numpy(), repeat_threshold, seed) if class_balanced else None
    model.to(device).train()
    optimizer = torch.optim.AdamW(_parameter_groups(model, lr, encoder_lr, weight_decay))
    for epoch in range(epochs):
        order = torch.as_tensor(list(sampler)) if sampler is not None else torch.randperm(len(labels))
        total, seen = 0.0, 0
        batches = list(order.split(batch_size))
        if len(batches) > 1 and len(batches[-1]) == 1:  # BatchNorm cannot train on a batch of one
            batches[-2:] = [torch.cat(batches[-2:])]
        for batch in batches:
            x = images[batch].float().to(device)
            x = augment(x) if augment is not None else x
            loss = nn.functional.cross_entropy(model(x), labels[batch].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * len(batch), seen + len(batch)
        if on_epoch_end is not None:
            on_epoch_end(epoch, total / max(seen, 1))
    return model.eval()


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    images,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    views: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> np.ndarray:
    """Softmax class probabilities ``(N, num_classes)`` of ``model`` (in eval mode) on images ``(N, C, *spatial)``.

    ``views``: deterministic test-time augmentation, the softmax averaged over ``view(batch)`` for every view
    (e.g. the flips or the cube's symmetries the model was fine-tuned with). MONAI's ``TestTimeAugmentation``
    draws random dictionary transforms and inverts them for segmentation; a classifier over a finite group
    needs only this mean, so it is written here. Include the identity to keep the plain prediction.
    """
    images = torch.as_tensor(images)
    views = [lambda x: x] if views is None else list(views)
    if not views:
        raise ValueError("predict_proba: views must hold at least one view (include the identity).")
    model.to(device).eval()
    probs = []
    for chunk in images.split(batch_size):
        chunk = chunk.float().to(device)
        probs.append(torch.stack([model(view(chunk)).softmax(dim=1).double() for view in views]).mean(0).cpu())
    return torch.cat(probs).numpy()

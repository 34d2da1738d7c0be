"""Frozen-encoder features of a labelled dataset: the input of kNN, probes, t-SNE and representation quality."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["extract_features"]


@torch.no_grad()
def extract_features(
    encoder,
    data: Sequence[dict],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    image_key: str = "image",
    label_key: str = "class",
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled embeddings ``encoder.embed(image)`` of every item of ``data``, with the items' labels.

    ``data``: a sequence of dicts (e.g. a MONAI ``Dataset`` with deterministic transforms) whose
    ``image_key`` holds a channel-first ``(C, *spatial)`` array/tensor of one common shape and whose
    ``label_key`` holds an int class. The encoder runs in eval mode without gradients (its previous mode is
    restored afterwards). Returns ``(features float32 (N, D), labels int64 (N,))``.
    """
    if batch_size < 1:
        raise ValueError(f"extract_features: batch_size must be >= 1, got {batch_size}.")
    if len(data) == 0:
        raise ValueError("extract_features: the dataset is empty.")
    was_training = encoder.training
    encoder.eval().to(device)
    features, labels = [], []
    try:
        for start in range(0, len(data), batch_size):
            items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
            for offset, item in enumerate(items):
                for key in (image_key, label_key):
                    if key not in item:
                        raise KeyError(f"extract_features: item {start + offset} has no key '{key}'; "
                                       f"keys: {sorted(item)}.")
            images = [torch.as_tensor(item[image_key]).as_subclass(torch.Tensor) for item in items]
            shapes = {tuple(image.shape) for image in images}
            if len(shapes) > 1:
                raise ValueError(f"extract_features: items {start}..{start + len(items) - 1} have different "
                                 f"'{image_key}' shapes {sorted(shapes)}; resize or crop them to one size.")
            batch = torch.stack(images)
            features.append(encoder.embed(batch.float().to(device)).float().cpu().numpy())
            labels += [int(item[label_key]) for item in items]
    finally:
        encoder.train(was_training)
    return np.concatenate(features).astype(np.float32), np.asarray(labels, dtype=np.int64)

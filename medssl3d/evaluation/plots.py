"""Figures of an evaluation, written as PNG (matplotlib's Agg canvas, no display needed): label-efficiency
curves, a t-SNE map of the features, and Grad-CAM overlays of a classifier."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator
from sklearn.manifold import TSNE

from medssl3d.atomic import atomic_path

__all__ = ["gradcam_overlays", "plot_label_fraction_curves", "plot_tsne"]


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or "png")
    return Path(path)


def plot_label_fraction_curves(
    summary: list[dict],
    metric: str,
    path: str | os.PathLike,
    group_key: str = "init",
    fraction_key: str = "fraction",
) -> Path:
    """Metric against the percentage of labels used (log x-axis), one line per ``group_key`` value (e.g. SSL
    vs scratch initialisation) with ±std error bars and band; ``summary``: rows of :func:`summarize_runs` holding
    ``fraction_key``, ``group_key``, ``<metric>_mean`` and ``<metric>_std``."""
    needed = (group_key, fraction_key, f"{metric}_mean", f"{metric}_std")
    missing = sorted({key for row in summary for key in needed if key not in row})
    if not summary or missing:
        raise ValueError(f"plot_label_fraction_curves: need summary rows with keys {list(needed)}; "
                         f"{'no rows' if not summary else f'missing {missing}'}.")
    figure = Figure(figsize=(5.5, 4))
    axes = figure.add_subplot()
    percentages = sorted({100 * float(row[fraction_key]) for row in summary})
    for group in dict.fromkeys(row[group_key] for row in summary):
        rows = sorted((row for row in summary if row[group_key] == group), key=lambda row: row[fraction_key])
        x = 100 * np.array([row[fraction_key] for row in rows], dtype=float)
        mean = np.array([row[f"{metric}_mean"] for row in rows], dtype=float)
        std = np.array([row[f"{metric}_std"] for row in rows], dtype=float)
        line = axes.errorbar(x, mean, yerr=std, marker="o", capsize=4, label=str(group))
        axes.fill_between(x, mean - std, mean + std, alpha=0.15, color=line[0].get_color())
    axes.set_xscale("log")
    axes.set_xticks(percentages, [f"{p:g}" for p in percentages])
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xlabel("labelled training data (%)")
    axes.set_ylabel(metric)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(title=group_key)
    return _save(figure, path)


def plot_tsne(
    features: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    perplexity: float = 30.0,
) -> np.ndarray:
    """2-D t-SNE (van der Maaten & Hinton 2008; scikit-learn, PCA init) of ``features (N, D)`` coloured by
    class, saved to ``path``; returns the embedding ``(N, 2)``. The perplexity is capped at ``(N - 1) / 3``
    (at least 1) so small sets work."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.shape != features.shape[:1] or len(features) < 2:
        raise ValueError(f"plot_tsne: expected features (N, D) with N >= 2 and labels (N,), got {features.shape} "
                         f"and {labels.shape}.")
    perplexity = max(1.0, min(perplexity, (len(features) - 1) / 3))
    embedding = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    figure = Figure(figsize=(5, 4.5))
    axes = figure.add_subplot()
    for c in np.unique(labels):
        name = class_names[int(c)] if class_names is not None else str(c)
        axes.scatter(*embedding[labels == c].T, s=12, label=name)
    axes.set_title("t-SNE of encoder features")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(title="class", fontsize="small")
    _save(figure, path)
    return embedding


def _default_target_layer(model: torch.nn.Module) -> str:
    """The layer producing the coarsest feature map of a medssl3d encoder (ResNet ``layer4``, DenseNet
    ``features.norm5``), under ``encoder.`` when the model wraps one."""
    names = dict(model.named_modules())
    for prefix in ("encoder.", ""):
        for layer in ("layer4", "features.norm5"):
            if prefix + layer in names:
                return prefix + layer
    raise ValueError("gradcam_overlays: no ResNet 'layer4' or DenseNet 'features.norm5' found in the model; pass "
                     "target_layer (a name from model.named_modules()).")


def _display(image: np.ndarray) -> np.ndarray:
    """A displayable 2-D slice of a channel-first image: RGB when it has 3 channels, else channel 0; 3-D images
    give their middle axial slice (last axis)."""
    image = image[..., image.shape[-1] // 2] if image.ndim == 4 else image
    if image.shape[0] == 3:
        return np.clip(np.moveaxis(image, 0, -1), 0, 1)
    return image[0]


def gradcam_overlays(
    model: torch.nn.Module,
    images,
    path: str | os.PathLike,
    target_layer: str | None = None,
    class_index: int | None = None,
    max_images: int = 8,
) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017; ``monai.visualize.GradCAM``) of a classifier on ``images (N, C,
    *spatial)``, saved as image + heat-map overlays (3-D: the middle axial slice) for the first
    ``max_images``; returns the maps ``(N, *spatial)`` in [0, 1], upsampled to the input's spatial shape.

    ``target_layer``: a name from ``model.named_modules()``; default the encoder's last stage
    (``encoder.layer4`` for a ResNet). ``class_index``: the class explained (default the predicted one).
    The CAM runs on a copy of ``model`` so the caller's model keeps no hooks.
    """
    from monai.visualize import GradCAM

    images = torch.as_tensor(images).float()
    if images.ndim not in (4, 5):
        raise ValueError(f"gradcam_overlays: expected images (N, C, H, W) or (N, C, H, W, D), got {tuple(images.shape)}.")
    target_layer = target_layer or _default_target_layer(model)
    device = next(model.parameters()).device
    cam = GradCAM(nn_module=copy.deepcopy(model).eval(), target_layers=target_layer)
    maps = np.concatenate([
        cam(x=images[i : i + 1].to(device), class_idx=class_index).detach().cpu().numpy()[:, 0]
        for i in range(len(images))
    ])
    shown = min(len(images), max_images)
    figure = Figure(figsize=(2.5 * shown, 2.7))
    for i in range(shown):
        axes = figure.add_subplot(1, shown, i + 1)
        image = _display(images[i].numpy())
        axes.imshow(image, cmap=None if image.ndim == 3 else "gray")
        axes.imshow(_display(maps[i][None]), cmap="jet", alpha=0.4, vmin=0, vmax=1)
        axes.set_axis_off()
    figure.suptitle(f"Grad-CAM ({target_layer})")
    _save(figure, path)
    return maps

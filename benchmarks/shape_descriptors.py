"""Hand-made shape descriptors on AdrenalMNIST3D: how far do volume, surface and extent go without a network?

    python benchmarks/shape_descriptors.py [--data-dir DIR] [--fractions 0.01 0.1 1.0] [--out benchmarks/shape_descriptors.json]

AdrenalMNIST3D holds binary 28³ masks of adrenal glands (normal vs mass), so its class lies in the object's size
and form. This reference fits a logistic regression (``medssl3d.evaluation.linear_probe``: standardised
features, L2, C = 1) on six descriptors of each mask (threshold 0.5): volume (voxels), surface (mask voxels
with a background neighbour in 6-connectivity, ``scipy.ndimage.binary_erosion``), compactness surface /
volume^(2/3), and the three principal extents (square roots of the eigenvalues of the voxel coordinates'
covariance, sorted, so they do not depend on the mask's orientation). Label subsets, seeds and metrics are
those of ``label_efficiency.py`` (``nested_label_fractions``, seeds 0-2, the official test split). It tells what
an SSL encoder's features must at least encode, and why size-preserving views (``shape_views_3d``) suit it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from medssl3d.atomic import write_json_atomic
from medssl3d.evaluation import classification_metrics, linear_probe, nested_label_fractions, summarize_runs
from medssl3d.prep.medmnist import load_medmnist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from label_efficiency import FRACTIONS, METRICS, SEEDS, resolve_data_dir  # noqa: E402

DESCRIPTORS = ("volume", "surface", "compactness", "extent_1", "extent_2", "extent_3")


def shape_descriptors(images: np.ndarray) -> np.ndarray:
    """``(N, 1, H, W, D)`` masks in [0, 1] -> ``(N, 6)`` float64 descriptors (see the module docstring)."""
    rows = []
    for image in images:
        mask = image[0] > 0.5
        volume = float(mask.sum())
        surface = float((mask & ~ndimage.binary_erosion(mask)).sum())
        coords = np.argwhere(mask).astype(np.float64)
        extents = (np.sqrt(np.clip(np.linalg.eigvalsh(np.cov(coords.T)), 0, None)) if len(coords) > 3
                   else np.zeros(3))
        rows.append([volume, surface, surface / max(volume, 1.0) ** (2 / 3), *np.sort(extents)])
    return np.asarray(rows)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder with adrenalmnist3d.npz (default: ../shared/data/medmnist)")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "shape_descriptors.json"))
    args = parser.parse_args(argv)
    splits = load_medmnist(resolve_data_dir(args.data_dir) / "adrenalmnist3d.npz")
    (train_x, train_y), (test_x, test_y) = splits["training"], splits["test"]
    train_f, test_f = shape_descriptors(train_x), shape_descriptors(test_x)
    records = []
    for seed in SEEDS:
        for fraction, index in nested_label_fractions(train_y, args.fractions, seed=seed).items():
            probs = linear_probe(train_f[index], train_y[index], test_f, seed=seed, num_classes=2)
            metrics = classification_metrics(test_y, probs, 2)
            records.append({"fraction": fraction, "seed": seed, "n_labels": len(index),
                            **{m: metrics[m] for m in METRICS}})
    summary = summarize_runs(records, ["fraction"], METRICS)
    for row in summary:
        print(f"{row['fraction']:>5.0%}: AUC {row['auc_mean']:.3f} ± {row['auc_std']:.3f}, "
              f"ACC {row['accuracy_mean']:.3f} ± {row['accuracy_std']:.3f}")
    write_json_atomic({"descriptors": DESCRIPTORS, "records": records, "summary": summary}, Path(args.out))
    return summary


if __name__ == "__main__":
    main()

"""benchmarks/shape_descriptors.py: the descriptors of known shapes, and a run on a fake AdrenalMNIST3D file."""

from __future__ import annotations

import json

import numpy as np

from ._scripts import load_benchmark


def _box(shape=(16, 16, 16), sides=(8, 4, 2)):
    mask = np.zeros((1, *shape), np.float32)
    mask[(0,) + tuple(slice(2, 2 + s) for s in sides)] = 1.0
    return mask


def test_descriptors_of_a_box_and_their_orientation_invariance():
    module = load_benchmark("shape_descriptors")
    box = _box()
    turned = np.rot90(box, k=1, axes=(1, 3)).copy()  # the 8-long side now along another axis
    volume, surface, compactness, *extents = module.shape_descriptors(np.stack([box, turned]))[0]
    assert volume == 64
    assert surface == volume  # an 8x4x2 box has no interior voxel: every voxel touches the outside
    assert np.isclose(compactness, 64 / 64 ** (2 / 3))
    # principal extents: std of a uniform side of n voxels is sqrt((n^2 - 1) / 12), sorted ascending
    assert np.allclose(extents, [np.sqrt((n * n - 1) / 12) for n in (2, 4, 8)], rtol=0.02)
    assert np.allclose(*module.shape_descriptors(np.stack([box, turned])))


def test_run_on_a_fake_file_writes_the_summary(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in {"train": 40, "val": 4, "test": 20}.items():
        labels = np.arange(n) % 2  # class 1: larger boxes
        images = np.stack([_box(sides=tuple(rng.integers(3, 6, 3) + 4 * y))[0] for y in labels])
        arrays[f"{split}_images"] = (255 * images).astype(np.uint8)
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    np.savez(tmp_path / "adrenalmnist3d.npz", **arrays)
    out = tmp_path / "result.json"
    summary = load_benchmark("shape_descriptors").main(["--data-dir", str(tmp_path), "--fractions", "0.1", "0.5", "1.0",
                                                         "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["summary"] == summary and len(written["records"]) == 9
    assert {row["fraction"] for row in summary} == {0.1, 0.5, 1.0}
    full = next(row for row in summary if row["fraction"] == 1.0)
    assert full["auc_mean"] == 1.0  # the size alone separates the fake classes

"""benchmarks/stage_probes.py: per-stage pooled features, and a run on a fake AdrenalMNIST3D file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medssl3d.engine import export_encoder
from medssl3d.networks import build_encoder

from ._scripts import load_benchmark


@pytest.fixture(scope="module")
def module():
    return load_benchmark("stage_probes")


def test_stage_features_pool_every_map(module):
    torch.manual_seed(0)
    encoder = build_encoder("resnet10", 3, 1, conv1_t_stride=2)
    images = np.random.default_rng(0).normal(size=(5, 1, 17, 16, 15)).astype(np.float32)
    stages = module.stage_features(encoder, images, batch_size=2)  # three batches
    assert [s.shape for s in stages] == [(5, c) for c in (64, 64, 128, 256, 512)]
    with torch.no_grad():
        maps = encoder.eval()(torch.as_tensor(images))
    for stage, feature in zip(stages, maps, strict=True):
        assert np.allclose(stage, feature.mean(dim=(2, 3, 4)).numpy(), atol=1e-5)


def test_run_on_a_fake_file_probes_each_stage_of_each_export(module, tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in {"train": 40, "val": 4, "test": 20}.items():
        labels = np.arange(n) % 2  # class 1: larger boxes
        images = np.zeros((n, 16, 16, 16), np.uint8)
        for image, label in zip(images, labels):
            side = rng.integers(3, 5) + 6 * label
            image[2:2 + side, 2:2 + side, 2:2 + side] = 255
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.reshape(-1, 1).astype(np.uint8)
    np.savez(tmp_path / "adrenalmnist3d.npz", **arrays)
    torch.manual_seed(0)
    export = export_encoder(build_encoder("resnet10", 3, 1, conv1_t_stride=2), tmp_path / "random" / "encoder.pt")
    out = tmp_path / "probes.json"
    summary = module.main(["--data-dir", str(tmp_path), "--exports", f"first={export}", str(export),
                           "--fraction", "0.5", "--seeds", "0", "1", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["summary"] == summary and len(written["records"]) == 2 * 5 * 2 * 2  # exports, stages, seeds, probes
    assert {(row["init"], row["stage"], row["eval"]) for row in summary} == {
        (init, stage, kind) for init in ("first", "random") for stage in range(5) for kind in ("knn", "linear")}
    stem = next(r for r in summary if (r["init"], r["stage"], r["eval"]) == ("first", 0, "linear"))
    assert stem["auc_mean"] > 0.9  # a random stem's pooled maps already grow with the box's volume
    with pytest.raises(SystemExit, match="two exports are named"):
        module.main(["--data-dir", str(tmp_path), "--exports", str(export), str(export), "--out", str(out)])
    with pytest.raises(SystemExit, match="does not exist"):
        module.main(["--data-dir", str(tmp_path), "--exports", str(tmp_path / "none.pt"), "--out", str(out)])

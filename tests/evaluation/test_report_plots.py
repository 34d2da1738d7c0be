"""Summaries over seeds, the markdown/JSON report, PNG figures and Grad-CAM maps."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from medssl3d.evaluation import (
    gradcam_overlays,
    markdown_table,
    plot_label_fraction_curves,
    plot_tsne,
    summarize_runs,
    write_report,
)
from medssl3d.networks import ClassificationHead, build_encoder

PNG = b"\x89PNG\r\n\x1a\n"


def records():
    return [
        {"init": init, "fraction": f, "seed": s, "accuracy": base + f / 10 + 0.01 * s, "auc": float("nan") if s else 0.7}
        for init, base in (("SimCLR", 0.8), ("scratch", 0.6)) for f in (0.1, 0.5, 1.0) for s in (0, 1, 2)
    ]


def test_summarize_runs_mean_and_sample_std():
    rows = summarize_runs(records(), ["init", "fraction"], ["accuracy", "auc"])
    assert len(rows) == 6 and rows[0]["init"] == "SimCLR" and rows[0]["fraction"] == 0.1 and rows[0]["n"] == 3
    assert rows[0]["accuracy_mean"] == pytest.approx(0.81 + 0.01)
    assert rows[0]["accuracy_std"] == pytest.approx(0.01)  # std of 0.81, 0.82, 0.83 with ddof 1
    assert rows[0]["auc_mean"] == 0.7 and rows[0]["auc_std"] == 0.0  # NaN runs left out
    with pytest.raises(KeyError, match="no key"):
        summarize_runs(records(), ["method"], ["accuracy"])


def test_report_holds_the_numbers_and_links_figures(tmp_path):
    summary = summarize_runs(records(), ["init", "fraction"], ["accuracy"])
    curve = plot_label_fraction_curves(summary, "accuracy", tmp_path / "figs" / "curve.png")
    metrics = {"setup": {"chain": "ct"}, "knn": {"SimCLR": {"accuracy": 0.8125, "auc": float("nan"),
                                                           "confusion_matrix": [[3, 1], [0, 4]]}},
               "label_fractions": summary}
    report = write_report(tmp_path, metrics, {"runs": records()}, [curve], title="toy")
    text = report.read_text()
    assert text.startswith("# toy") and "| SimCLR | 0.8125 | n/a |" in text and "![curve](figs/curve.png)" in text
    assert "| chain | ct |" in text and "| scratch | 0.5 | 3 | 0.66 ± 0.01 |" in text
    saved = json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: NaN written as null
    assert saved["metrics"]["knn"]["SimCLR"] == {"accuracy": 0.8125, "auc": None, "confusion_matrix": [[3, 1], [0, 4]]}
    assert len(saved["tables"]["runs"]) == 18 and not list(tmp_path.glob(".*tmp*"))
    assert curve.read_bytes().startswith(PNG)
    assert markdown_table([{"a": 1}, {"b": "x|y"}]).splitlines()[2:] == ["| 1 |  |", "|  | x\\|y |"]


def test_tsne_png_and_embedding(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 10)
    features = rng.normal(size=(20, 8)) + labels[:, None] * 10
    embedding = plot_tsne(features, labels, tmp_path / "tsne.png", class_names=["healthy", "nodule"])
    assert embedding.shape == (20, 2) and (tmp_path / "tsne.png").read_bytes().startswith(PNG)
    centre = [embedding[labels == c].mean(axis=0) for c in (0, 1)]  # the classes stay apart
    spread = max(np.linalg.norm(embedding[labels == c] - centre[c], axis=1).max() for c in (0, 1))
    assert np.linalg.norm(centre[0] - centre[1]) > spread
    plot_tsne(features[:3], labels[:3], tmp_path / "tiny.png")  # perplexity capped for tiny sets


class EncoderWithHead(nn.Module):
    def __init__(self, spatial_dims):
        super().__init__()
        self.encoder = build_encoder("resnet10", spatial_dims, in_channels=1)
        self.head = ClassificationHead(self.encoder.embedding_dim, 3)

    def forward(self, x):
        return self.head(self.encoder.embed(x))


@pytest.mark.parametrize("shape", [(2, 1, 40, 24), (2, 1, 24, 20, 16)])
def test_gradcam_maps_have_the_input_spatial_shape(tmp_path, shape):
    torch.manual_seed(0)
    model = EncoderWithHead(len(shape) - 2).eval()
    images = torch.rand(shape)
    maps = gradcam_overlays(model, images, tmp_path / "cam.png")
    assert maps.shape == (shape[0], *shape[2:]) and maps.min() >= 0 and maps.max() <= 1 and maps.max() > 0
    assert (tmp_path / "cam.png").read_bytes().startswith(PNG)
    assert not any(m._forward_hooks for m in model.modules())  # the caller's model keeps no hooks
    with pytest.raises(ValueError, match="target_layer"):
        gradcam_overlays(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), images[:, :, :, :, 0] if len(shape) == 5
                         else images, tmp_path / "x.png")

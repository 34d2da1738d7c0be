"""Detection metrics: COCO (MONAI COCOMetric) and the LUNA16 FROC hit rule."""

from __future__ import annotations

import numpy as np
import pytest

from medssl3d.detection import metrics
from medssl3d.detection.metrics import FROC_FP_RATES, DetectionMetric, detection_metrics, froc_hits


def _ref(*boxes):
    boxes = np.array(boxes, dtype=float).reshape(-1, 4)
    return {"box": boxes, "label": np.zeros(len(boxes), int)}


def _pred(boxes, scores):
    boxes = np.array(boxes, dtype=float).reshape(-1, 4)
    return {"box": boxes, "label": np.zeros(len(boxes), int), "label_scores": np.array(scores, dtype=float)}


def test_perfect_and_empty_detections():
    refs = [_ref([10, 10, 20, 20]), _ref([30, 30, 44, 40], [2, 2, 8, 8]), _ref()]
    perfect = [_pred(r["box"], np.linspace(0.9, 0.8, len(r["box"]))) for r in refs]
    result = detection_metrics(perfect, refs, ["nodule"])
    assert result["mAP"] == pytest.approx(1.0) and result["AP_50"] == pytest.approx(1.0)
    assert result["mAR"] == pytest.approx(1.0) and result["froc"] == pytest.approx(1.0)
    nothing = detection_metrics([_pred([], []) for _ in refs], refs, ["nodule"])
    assert nothing["mAP"] == 0 and nothing["froc"] == 0


def test_froc_hit_rule_and_false_positive_rates():
    gt = np.array([[10.0, 10, 20, 20]])  # radius 5 about (15, 15)
    boxes = np.array([[12.0, 12, 22, 22], [11.0, 11, 21, 21], [40.0, 40, 50, 50]])  # centre 17: hit; 16: hit; far
    hits, false = froc_hits(boxes, np.array([0.3, 0.8, 0.5]), gt)
    assert hits == [0.8] and false == [0.5]  # a second hit on a found nodule is neither TP nor FP
    # one image, the FP outscores nothing but sits above the TP: at < 1 FP per image sensitivity is 0
    refs, preds = [_ref(*gt)], [_pred([[12, 12, 22, 22], [40, 40, 50, 50]], [0.4, 0.9])]
    result = detection_metrics(preds, refs, ["nodule"])
    assert result["sensitivity_at_0.5fp"] == 0 and result["sensitivity_at_1fp"] == 1
    assert result["froc"] == pytest.approx(np.mean([r >= 1 for r in FROC_FP_RATES]))


class _RankZeroOfTwo:
    """torch.distributed as rank 0 of two sees it; rank 1 sends ``others`` (one list per gather, in order)."""

    def __init__(self, *others: list) -> None:
        self.others = list(others)

    def is_initialized(self) -> bool:
        return True

    def get_world_size(self) -> int:
        return 2

    def all_gather_object(self, parts: list, items: list) -> None:
        parts[:] = [items, self.others.pop(0)]


def test_metric_gathers_every_rank_before_computing(monkeypatch):
    # rank 0 holds the found nodule, rank 1 the missed one and a false positive: rank 0 alone scores 1
    preds = [_pred([[10, 10, 20, 20]], [0.9]), _pred([[60, 60, 70, 70]], [0.7])]
    refs = [_ref([10, 10, 20, 20]), _ref([30, 30, 40, 40])]
    metric = DetectionMetric(key=None, class_names=["nodule"])
    metric.reset()
    metric.update((preds[:1], refs[:1]))
    alone = metric.compute()
    monkeypatch.setattr(metrics, "dist", _RankZeroOfTwo(preds[1:], refs[1:]))
    gathered = metric.compute()
    assert alone["mAR"] == alone["froc"] == pytest.approx(1.0)
    assert gathered == pytest.approx(detection_metrics(preds, refs, ["nodule"]))
    assert gathered["mAR"] == pytest.approx(0.5) and gathered["froc"] < 1

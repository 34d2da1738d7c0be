"""Detection metrics: COCO mAP/mAR (MONAI's ``COCOMetric``) and LUNA16's FROC (MONAI's FROC utilities).

* COCO: MONAI's ``matching_batch`` + ``COCOMetric`` over the IoU range ``coco_iou_range`` (start, stop, step;
  2D radiographs: 0.50:0.95 and AP at 0.50 as the COCO/seed reports; 3D nodules: 0.10 as MONAI's LUNA16
  bundle). Keys: MONAI's (``mAP_IoU_0.50_0.95_0.05_MaxDet_100``, ``AP_IoU_0.50_MaxDet_100``, ``mAR_...``) and
  the short aliases ``mAP`` and ``mAR`` (over the range) and ``AP_50`` (per IoU of ``coco_iou_list``).
* FROC (Setio et al., LUNA16, MedIA 2017): a detection hits a reference box when its centre lies within the
  box's radius (half its mean side) of the box centre, LUNA16's criterion; each reference counts once (its
  best-scoring hit), further hits on it are neither true nor false positives. ``sensitivity_at_<f>fp``:
  sensitivity at ``f`` false positives per image, interpolated on MONAI's ``compute_froc_curve_data``;
  ``froc``: their mean over 1/8, 1/4, 1/2, 1, 2, 4 and 8 (``compute_froc_score``). The matching is written
  here because MONAI's FROC helpers take the hit probabilities, not boxes.

Predictions are dicts with ``box`` (xyxy / xyzxyz, image coordinates), ``label`` and ``label_scores``;
references with ``box`` and ``label`` (MONAI's detector keys set in :func:`~.network.build_detector`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from ignite.metrics import Metric
from monai.apps.detection.metrics.coco import COCOMetric
from monai.apps.detection.metrics.matching import matching_batch
from monai.data.box_utils import box_centers, box_iou
from monai.metrics.froc import compute_froc_curve_data, compute_froc_score

__all__ = ["FROC_FP_RATES", "DetectionMetric", "detection_metrics", "froc_hits"]

FROC_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _gathered(items: list) -> list:
    """``items`` of every DDP rank, rank after rank (this process's own outside torch.distributed)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return items
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def froc_hits(pred_boxes: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray) -> tuple[list[float], list[float]]:
    """(true-positive scores, one per detected reference; false-positive scores) of one image (LUNA16 rule)."""
    if len(gt_boxes) == 0:
        return [], [float(s) for s in scores]
    dims = gt_boxes.shape[1] // 2
    radius = (gt_boxes[:, dims:] - gt_boxes[:, :dims]).mean(axis=1) / 2
    if len(pred_boxes) == 0:
        return [], []
    distance = np.linalg.norm(box_centers(pred_boxes)[:, None] - box_centers(gt_boxes)[None], axis=2)
    hits = distance <= radius[None]
    best = np.full(len(gt_boxes), -np.inf)
    false_positives = []
    for index in np.argsort(-scores):
        if hits[index].any():
            best[hits[index]] = np.maximum(best[hits[index]], scores[index])
        else:
            false_positives.append(float(scores[index]))
    return [float(s) for s in best[np.isfinite(best)]], false_positives


def detection_metrics(
    predictions: Sequence[dict],
    references: Sequence[dict],
    class_names: Sequence[str],
    coco_iou_range: Sequence[float] = (0.5, 0.95, 0.05),
    coco_iou_list: Sequence[float] = (0.5,),
    max_detections: int = 100,
) -> dict[str, float]:
    """COCO and FROC metrics (see the module docstring) of per-image predictions against references."""
    if len(predictions) != len(references):
        raise ValueError(f"detection_metrics: {len(predictions)} predictions for {len(references)} images.")
    pred_boxes = [_numpy(p["box"]).astype(np.float64) for p in predictions]
    pred_scores = [_numpy(p["label_scores"]).astype(np.float64) for p in predictions]
    gt_boxes = [_numpy(r["box"]).astype(np.float64) for r in references]
    coco = COCOMetric(classes=list(class_names), iou_list=list(coco_iou_list), iou_range=list(coco_iou_range),
                      max_detection=[max_detections], verbose=False)
    matches = matching_batch(
        iou_fn=box_iou, iou_thresholds=coco.iou_thresholds, pred_boxes=pred_boxes,
        pred_classes=[_numpy(p["label"]) for p in predictions], pred_scores=pred_scores, gt_boxes=gt_boxes,
        gt_classes=[_numpy(r["label"]) for r in references], max_detections=max_detections,
    )
    results = {key: float(value) for key, value in coco(matches)[0].items()}
    suffix = f"IoU_{coco_iou_range[0]:.2f}_{coco_iou_range[1]:.2f}_{coco_iou_range[2]:.2f}_MaxDet_{max_detections}"
    results["mAP"], results["mAR"] = results[f"mAP_{suffix}"], results[f"mAR_{suffix}"]
    for iou in coco_iou_list:
        results[f"AP_{round(100 * iou)}"] = results[f"AP_IoU_{iou:.2f}_MaxDet_{max_detections}"]
    true_scores, false_scores = [], []
    for boxes, scores, gt in zip(pred_boxes, pred_scores, gt_boxes):
        hits, misses = froc_hits(boxes, scores, gt)
        true_scores += hits
        false_scores += misses
    num_targets = sum(len(gt) for gt in gt_boxes)
    if num_targets and (true_scores or false_scores):
        # MONAI's curve (CAMELYON16's code) takes thresholds from the second-lowest probability on, as CAMELYON's
        # candidate lists hold probability-0 entries; one such entry makes the lowest real score a threshold too.
        fps, sensitivity = compute_froc_curve_data(np.array([0.0, *false_scores]), np.array(true_scores),
                                                   num_targets, len(references))
        for rate in FROC_FP_RATES:
            results[f"sensitivity_at_{rate:g}fp"] = float(compute_froc_score(fps, sensitivity, (rate,)))
        results["froc"] = float(compute_froc_score(fps, sensitivity, FROC_FP_RATES))
    else:  # no reference box or no detection at all: nothing is found
        results.update({f"sensitivity_at_{rate:g}fp": 0.0 for rate in FROC_FP_RATES}, froc=0.0)
    return results


class DetectionMetric(Metric):
    """Ignite metric over an evaluation run: one key of :func:`detection_metrics` (``mAP``, ``froc``, ...), or
    with ``key=None`` all of them (ignite then stores each under its own name; not usable as a key metric).

    The engine output must hold ``pred`` and ``label``: lists of per-image prediction and reference dicts
    (:func:`medssl3d.detection.engine.detection_eval_iteration` writes them). Under torch.distributed every rank
    holds its share of the images, and ``compute`` gathers them all first: every rank gets the value of the
    whole list (``multi_gpu_train.yaml``: model selection on rank 0 by the value one process would compute).
    """

    def __init__(self, key: str | None = "mAP", class_names: Sequence[str] = ("nodule",),
                 coco_iou_range: Sequence[float] = (0.5, 0.95, 0.05), coco_iou_list: Sequence[float] = (0.5,),
                 max_detections: int = 100, output_transform: Callable = lambda output: output) -> None:
        self.key, self.class_names = key, list(class_names)
        self.settings = {"coco_iou_range": tuple(coco_iou_range), "coco_iou_list": tuple(coco_iou_list),
                         "max_detections": int(max_detections)}
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        self._predictions: list[dict] = []
        self._references: list[dict] = []

    required_output_keys = ("pred", "label")  # ignite passes (output["pred"], output["label"]) to update

    def update(self, output: tuple[list[dict], list[dict]]) -> None:
        predictions, references = output
        self._predictions += [{k: _numpy(v) for k, v in p.items()} for p in predictions]
        self._references += [{k: _numpy(v) for k, v in r.items()} for r in references]

    def compute(self) -> float | dict[str, float]:
        results = detection_metrics(_gathered(self._predictions), _gathered(self._references), self.class_names,
                                    **self.settings)
        if self.key is None:
            return results
        if self.key not in results:
            raise ValueError(f"DetectionMetric: unknown key {self.key!r}; available: {', '.join(results)}.")
        return results[self.key]

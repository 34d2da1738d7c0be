"""Training and evaluation iterations of a RetinaNet detector inside MONAI's ``SupervisedTrainer``/``Evaluator``.

A detector takes a list of images and a list of target dicts, not a batch tensor and a label tensor, so the
bundles pass these functions as the engines' ``iteration_update`` (with ``decollate: false``) and load
batches with ``monai.data.utils.no_collation``; an item may be one image or, after a random crop with
``num_samples``, a list of crops. Everything else (handlers, metrics, resume) is MONAI's/ignite's.

Engine output: training ``{"loss", "loss/classification", "loss/box_regression"}``; evaluation ``{"pred",
"label", "image"}``: per image the detections, the reference boxes and the input image (with its affine).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ignite.engine import Engine

__all__ = ["detection_eval_iteration", "detection_train_iteration", "flatten_items"]


def flatten_items(batch: Sequence) -> list[dict]:
    """One list of item dicts from a ``no_collation`` batch whose items may be lists of crops."""
    return [crop for item in batch for crop in (item if isinstance(item, (list, tuple)) else [item])]


def _inputs(engine: Engine, batch: Sequence) -> tuple[list[torch.Tensor], list[dict]]:
    items = flatten_items(batch)
    device = engine.state.device
    images = [item["image"].to(device) for item in items]
    targets = [  # inference items may come without boxes
        {"box": torch.as_tensor(item.get("box", ()), dtype=torch.float32, device=device).reshape(-1, 2 * (image.ndim - 1)),
         "label": torch.as_tensor(item.get("box_label", ()), dtype=torch.long, device=device).reshape(-1)}
        for item, image in zip(items, images)
    ]
    return images, targets


def detection_train_iteration(engine: Engine, batch: Sequence) -> dict[str, torch.Tensor]:
    """One optimiser step on the summed classification and box-regression losses (AMP when ``engine.amp``)."""
    images, targets = _inputs(engine, batch)
    engine.network.train()
    engine.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(engine.state.device.type, enabled=bool(engine.amp)):
        losses = engine.network(images, targets)
        loss = sum(losses.values())
    if engine.amp and engine.scaler is not None:
        engine.scaler.scale(loss).backward()
        engine.scaler.step(engine.optimizer)
        engine.scaler.update()
    else:
        loss.backward()
        engine.optimizer.step()
    return {"loss": loss.detach(), **{f"loss/{key}": value.detach() for key, value in losses.items()}}


def detection_eval_iteration(engine: Engine, batch: Sequence) -> dict[str, list]:
    """Detections of every image, the network run by the evaluator's ``inferer`` (MONAI's
    ``predict_with_inferer``: a ``SlidingWindowInferer`` runs whole scans patch by patch)."""
    images, targets = _inputs(engine, batch)
    detector = getattr(engine.network, "module", engine.network)  # a DistributedDataParallel wrapper looked through
    detector.eval()
    with torch.no_grad(), torch.autocast(engine.state.device.type, enabled=bool(engine.amp)):
        detector.inferer = engine.inferer  # the evaluator's: SimpleInferer (whole image) or SlidingWindowInferer
        predictions = detector(images, use_inferer=True)
    predictions = [{key: value.float() if value.is_floating_point() else value for key, value in p.items()}
                   for p in predictions]
    return {"pred": predictions, "label": targets, "image": images}

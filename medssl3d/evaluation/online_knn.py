"""Online kNN validation: how well the encoder being pretrained separates the classes of a small labelled split,
measured during training without training anything on the labels.

Protocol: leave-one-out within the labelled split. Every item is classified by
:func:`~medssl3d.evaluation.knn.knn_classify` (cosine similarity, temperature-weighted votes, Wu et al. 2018)
from its ``k = min(k, n - 1)`` nearest neighbours among the other ``n - 1`` items; accuracy and AUC (ROC AUC
for two classes, macro one-vs-rest otherwise) are those of :func:`medssl3d.evaluation.metrics.
classification_metrics` over the ``n`` predictions. Leave-one-out uses every labelled item as both reference
and query, has no random split to seed and suits the few hundred items a validation split holds (its cost
grows as ``n^2``; the embedding of the ``n`` items dominates).
"""

from __future__ import annotations

from collections.abc import Sequence, Sized

import numpy as np
from ignite.engine import Engine, Events
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from .features import extract_features
from .knn import knn_classify
from .metrics import classification_metrics

__all__ = ["OnlineKNNValidation", "leave_one_out_knn"]


def leave_one_out_knn(features: np.ndarray, labels: np.ndarray, k: int = 20, temperature: float = 0.07) -> np.ndarray:
    """Leave-one-out :func:`~medssl3d.evaluation.knn.knn_classify` probabilities ``(N, C)`` of features
    ``(N, D)`` with int labels ``(N,)`` in ``0..C-1`` (``C = max(labels) + 1``), ``N >= 2``: row ``i`` comes
    from the ``min(k, N - 1)`` nearest of the other items."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) < 2:
        raise ValueError(f"leave_one_out_knn: needs at least 2 labelled items, got {len(labels)}.")
    num_classes = int(labels.max()) + 1
    rows = [
        knn_classify(np.delete(features, i, axis=0), np.delete(labels, i), features[i : i + 1],
                     min(k, len(labels) - 1), temperature, num_classes=num_classes)
        for i in range(len(labels))
    ]
    return np.concatenate(rows)


class OnlineKNNValidation:
    """Ignite handler: every ``every`` iterations and at the end of training, embed the labelled ``data`` with
    ``encoder`` (eval mode, no gradients; its previous mode is restored) and score a leave-one-out kNN (module
    docstring). The metrics go to ``engine.state.knn_metrics`` (``{"accuracy", "auc"}``) and to ``writer`` as
    ``val/knn_accuracy`` and ``val/knn_auc`` (the AUC only where defined: every class present).

    Args:
        encoder: the encoder being pretrained (``.embed(images) -> (B, D)``); ``None``: the ``.encoder`` of the
            trained method (``engine.network``, looked through a DDP wrapper) when attached.
        data: the labelled split: a sequence of dicts (e.g. a MONAI ``CacheDataset`` with deterministic
            transforms ending in one common image shape) holding ``image_key`` ``(C, *spatial)`` and an int class
            ``label_key`` in ``0..C-1``; or a ``DataLoader`` over one, whose ``dataset`` and ``batch_size`` are used.
        writer: TensorBoard writer (``None``: metrics kept in the engine state only).
        every: iterations between evaluations.
        k, temperature: neighbours (capped at ``n - 1``) and vote temperature of the kNN.
        image_key, label_key: item keys of the image and of the class.
        batch_size: items embedded at once.

    Attaching checks that the split holds at least two items with both keys, so a wrong key fails before
    training. Under DDP attach it on rank 0 only (:class:`medssl3d.engine.TrainingMonitor` does: give it to
    :func:`medssl3d.engine.build_trainer` as ``validation``).
    """

    tags = {"accuracy": "val/knn_accuracy", "auc": "val/knn_auc"}

    def __init__(
        self,
        encoder: nn.Module | None = None,
        data: Sequence[dict] | DataLoader = (),
        writer: SummaryWriter | None = None,
        every: int = 1000,
        k: int = 20,
        temperature: float = 0.07,
        image_key: str = "image",
        label_key: str = "class",
        batch_size: int = 32,
    ) -> None:
        if isinstance(data, DataLoader):
            batch_size, data = data.batch_size or batch_size, data.dataset
        if not isinstance(data, Sized) or not hasattr(data, "__getitem__"):
            raise ValueError(
                f"OnlineKNNValidation: data must be an indexable dataset of labelled items (or a DataLoader over "
                f"one), got {type(data).__name__}."
            )
        for name, value in (("every", every), ("k", k), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"OnlineKNNValidation: {name} must be a positive int, got {value!r}.")
        self.encoder, self.data, self.writer, self.every = encoder, data, writer, every
        self.k, self.temperature, self.batch_size = k, temperature, batch_size
        self.image_key, self.label_key = image_key, label_key
        self._last_iteration: int | None = None

    def attach(self, engine: Engine) -> None:
        if self.encoder is None:
            self.encoder = getattr(engine.network, "module", engine.network).encoder
        self.check_data()
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every) | Events.COMPLETED, self)

    def check_data(self) -> None:
        """Raise a ValueError unless the split holds at least two items and its first has both keys."""
        if len(self.data) < 2:
            raise ValueError(
                f"OnlineKNNValidation: the labelled validation split holds {len(self.data)} item(s); leave-one-out "
                "kNN needs at least 2. Check the datalist's validation list."
            )
        item = self.data[0]
        missing = [key for key in (self.image_key, self.label_key) if not isinstance(item, dict) or key not in item]
        if missing:
            found = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise ValueError(
                f"OnlineKNNValidation: validation item 0 lacks {missing} (image_key={self.image_key!r}, "
                f"label_key={self.label_key!r}); it has {found}."
            )

    def evaluate(self) -> dict[str, float]:
        """``{"accuracy", "auc"}`` of the leave-one-out kNN on the current encoder (AUC NaN where undefined)."""
        device = next(self.encoder.parameters()).device
        features, labels = extract_features(self.encoder, self.data, self.batch_size, device, self.image_key,
                                            self.label_key)
        metrics = classification_metrics(labels, leave_one_out_knn(features, labels, self.k, self.temperature))
        return {"accuracy": metrics["accuracy"], "auc": metrics["auc"]}

    def __call__(self, engine: Engine) -> None:
        iteration = engine.state.iteration
        if iteration == self._last_iteration:  # the last iteration is a multiple of `every`: evaluated already
            return
        self._last_iteration = iteration
        metrics = self.evaluate()
        engine.state.knn_metrics = metrics
        if self.writer is not None:
            for name, value in metrics.items():
                if np.isfinite(value):
                    self.writer.add_scalar(self.tags[name], value, iteration)

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader

from medssl3d.engine.trainer import build_trainer
from medssl3d.evaluation.features import extract_features
from medssl3d.evaluation.knn import knn_classify
from medssl3d.evaluation.metrics import classification_metrics
from medssl3d.evaluation.online_knn import OnlineKNNValidation, leave_one_out_knn
from medssl3d.networks import build_encoder


class EmbeddingNorm(nn.Module):
    """resnet10 (3D) trained to shrink its embedding; enough for the trainer to change the encoder."""

    def __init__(self):
        super().__init__()
        self.encoder = build_encoder("resnet10", 3, 1)

    def forward(self, batch):
        loss = self.encoder.embed(batch["image"]).pow(2).mean()
        return {"loss": loss}


def _labelled(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(1, 16, 16, 16, generator=g) + (i % 2), "class": i % 2} for i in range(n)]


def test_leave_one_out_leaves_the_query_out():
    # every point's nearest *other* point is of the other class: leave-one-out 1-NN is always wrong, while
    # a kNN that saw the query itself would always be right
    features = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99]], dtype=np.float32)
    labels = np.array([0, 1, 0, 1])
    assert (leave_one_out_knn(features, labels, k=1).argmax(1) != labels).all()
    assert (knn_classify(features, labels, features, k=1).argmax(1) == labels).all()
    # k is capped at n - 1, and each row sums to 1
    probs = leave_one_out_knn(features, labels, k=20)
    assert probs.shape == (4, 2) and np.allclose(probs.sum(1), 1)


def test_online_knn_logs_the_leave_one_out_accuracy_of_the_current_encoder(tmp_path):
    torch.manual_seed(0)
    method = EmbeddingNorm()
    train = DataLoader([{"image": torch.rand(1, 16, 16, 16)} for _ in range(4)], batch_size=2)
    labelled = _labelled()
    trainer = build_trainer(method, train, torch.optim.SGD(method.parameters(), lr=0.1), tmp_path,
                            max_iterations=2, checkpointing={"resume": False},
                            monitoring={"progress_bar": False, "spread_key": None},
                            validation=OnlineKNNValidation(data=labelled, every=1))  # the trained encoder
    trainer.run()
    assert method.encoder.training and all(m.training for m in method.encoder.modules())

    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    accuracy = events.Scalars("val/knn_accuracy")
    assert [e.step for e in accuracy] == [1, 2]  # every iteration; the end (iteration 2) is not logged twice
    assert all(0.0 <= e.value <= 1.0 for e in accuracy + events.Scalars("val/knn_auc"))

    features, labels = extract_features(method.encoder, labelled, label_key="class")
    expected = classification_metrics(labels, leave_one_out_knn(features, labels, k=11))
    assert accuracy[-1].value == pytest.approx(expected["accuracy"], abs=1e-6)
    assert events.Scalars("val/knn_auc")[-1].value == pytest.approx(expected["auc"], abs=1e-6)
    assert trainer.state.knn_metrics == pytest.approx({"accuracy": expected["accuracy"], "auc": expected["auc"]})


def test_a_wrong_label_key_or_a_tiny_split_fails_before_training(tmp_path):
    method = EmbeddingNorm()
    train = DataLoader([{"image": torch.rand(1, 16, 16, 16)} for _ in range(2)], batch_size=2)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"validation item 0 lacks \['label'\].*it has \['class', 'image'\]"):
        build_trainer(method, train, optimizer, tmp_path, max_iterations=1, checkpointing={"resume": False},
                      monitoring={"progress_bar": False}, validation=OnlineKNNValidation(data=_labelled(),
                                                                                         label_key="label"))
    with pytest.raises(ValueError, match=r"holds 1 item\(s\); leave-one-out kNN needs at least 2"):
        build_trainer(method, train, optimizer, tmp_path, max_iterations=1, checkpointing={"resume": False},
                      monitoring={"progress_bar": False},
                      validation=OnlineKNNValidation(data=DataLoader(_labelled(1), batch_size=4)))


def test_handler_without_writer_takes_a_loader_and_keeps_metrics_in_the_state():
    encoder = build_encoder("resnet10", 3, 1)
    handler = OnlineKNNValidation(encoder, DataLoader(_labelled(6), batch_size=4), every=1)
    assert handler.batch_size == 4 and len(handler.data) == 6
    metrics = handler.evaluate()
    assert set(metrics) == {"accuracy", "auc"} and 0.0 <= metrics["accuracy"] <= 1.0

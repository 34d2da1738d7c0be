"""Fine-tuning on a tiny separable image set, repeat-factor sampling, predictions."""

import numpy as np
import pytest
import torch
from torch import nn

from medssl3d.evaluation import (
    RepeatFactorSampler,
    fine_tune_classifier,
    predict_proba,
    repeat_factors,
)


class TinyClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.encoder(x))


def bright_or_dark(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.normal(0, 0.3, (n, 1, 8, 8)) + labels[:, None, None, None] * 2.0 - 1.0
    return torch.as_tensor(images, dtype=torch.float32), labels


def test_fine_tuning_reduces_the_loss_and_learns():
    images, labels = bright_or_dark(64, 0)
    torch.manual_seed(0)
    model, losses, seen = TinyClassifier(), [], []
    fine_tune_classifier(model, images, labels, epochs=15, batch_size=16, lr=1e-2, encoder_lr=5e-3,
                         augment=lambda x: seen.append(x.shape[0]) or x, on_epoch_end=lambda e, loss: losses.append(loss))
    assert len(losses) == 15 and losses[-1] < 0.5 * losses[0]
    assert sum(seen) == 15 * 64 and not model.training
    test_images, test_labels = bright_or_dark(32, 1)
    probs = predict_proba(model, test_images, batch_size=5)
    assert probs.shape == (32, 2) and np.allclose(probs.sum(axis=1), 1)
    assert (probs.argmax(axis=1) == test_labels).mean() > 0.9


def test_repeat_factors_follow_lvis_formula():
    labels = np.array([0] * 90 + [1] * 10)
    factors = repeat_factors(labels, threshold=0.5)
    assert np.all(factors[:90] == 1.0)  # f = 0.9 > t: not oversampled
    np.testing.assert_allclose(factors[90:], np.sqrt(0.5 / 0.1))
    np.testing.assert_allclose(repeat_factors(labels)[90:], np.sqrt(0.5 / 0.1))  # default t = 1/C = 0.5


def test_repeat_factor_sampler_counts():
    labels = np.array([0] * 90 + [1] * 10)
    sampler = RepeatFactorSampler(labels, threshold=0.5, seed=0)
    r = np.sqrt(5)
    totals = np.zeros(100)
    for _ in range(400):
        counts = np.bincount(list(sampler), minlength=100)
        assert np.all(counts[:90] == 1) and set(counts[90:]) <= {2, 3}  # floor(r) or floor(r) + 1
        totals += counts
    np.testing.assert_allclose(totals[90:].mean() / 400, r, atol=0.03)  # stochastic rounding is unbiased
    assert list(RepeatFactorSampler(labels, 0.5, seed=1)) == list(RepeatFactorSampler(labels, 0.5, seed=1))


def test_class_balanced_fine_tuning_sees_the_rare_class_more_often():
    images, _ = bright_or_dark(40, 2)
    labels = np.array([0] * 36 + [1] * 4)
    seen = []
    model = TinyClassifier()
    fine_tune_classifier(model, images, labels, epochs=4, batch_size=8, class_balanced=True, repeat_threshold=0.5,
                         augment=lambda x: seen.append(len(x)) or x)
    assert sum(seen) > 4 * 40  # each class-1 image 2-3 times per epoch (r = sqrt(0.5 / 0.1))


def test_predict_proba_averages_the_softmax_over_views():
    torch.manual_seed(0)
    model = TinyClassifier().eval()
    images, _ = bright_or_dark(7, 2)
    flip = lambda x: x.flip(-1)
    plain = predict_proba(model, images, batch_size=3)
    flipped = predict_proba(model, images.flip(-1), batch_size=3)
    averaged = predict_proba(model, images, batch_size=3, views=[lambda x: x, flip])
    np.testing.assert_allclose(averaged, (plain + flipped) / 2, atol=1e-6)
    np.testing.assert_allclose(predict_proba(model, images, views=[flip]), flipped, atol=1e-6)
    assert not np.allclose(plain, flipped)  # the model is not flip-invariant, so the mean differs from each
    with pytest.raises(ValueError, match="at least one view"):
        predict_proba(model, images, views=[])

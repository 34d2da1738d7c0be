"""The synthetic labels are learnable but not trivial.

For each modality a small CNN trained on synthetic samples beats chance clearly on held-out samples, while
no single global statistic (mean or standard deviation of intensity) separates the classes.
"""

import numpy as np
import pytest
import torch

from medssl3d.data.synthetic import synth_ct, synth_histology, synth_mri, synth_xray


def best_threshold_accuracy(values: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the best single threshold on ``values`` (either direction)."""
    ordered = labels[np.argsort(values)]
    positives_above = ordered.sum() - np.concatenate([[0], np.cumsum(ordered)])
    negatives_below = np.concatenate([[0], np.cumsum(1 - ordered)])
    accuracy = (positives_above + negatives_below) / len(labels)
    return float(max(accuracy.max(), (1 - accuracy).max()))


def held_out_cnn_accuracy(images: np.ndarray, labels: np.ndarray, epochs: int) -> float:
    """Train a 3-layer CNN on the first 70 % (each sample standardised), return accuracy on the rest.

    One torch thread, so the result does not depend on the thread pool other tests or imports left behind."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_and_score(images, labels, epochs)
    finally:
        torch.set_num_threads(threads)


def _train_and_score(images: np.ndarray, labels: np.ndarray, epochs: int) -> float:
    torch.manual_seed(0)
    spatial_dims = images.ndim - 2
    conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
    pool = torch.nn.MaxPool2d if spatial_dims == 2 else torch.nn.MaxPool3d
    global_pool = torch.nn.AdaptiveMaxPool2d(1) if spatial_dims == 2 else torch.nn.AdaptiveMaxPool3d(1)
    net = torch.nn.Sequential(
        conv(images.shape[1], 8, 3, padding=1), torch.nn.ReLU(), pool(2),
        conv(8, 16, 3, padding=1), torch.nn.ReLU(), pool(2),
        conv(16, 16, 3, padding=1), torch.nn.ReLU(), global_pool, torch.nn.Flatten(), torch.nn.Linear(16, 2),
    )
    x = torch.tensor(images, dtype=torch.float32)
    axes = tuple(range(1, x.ndim))
    x = (x - x.mean(axes, keepdim=True)) / (x.std(axes, keepdim=True) + 1e-6)
    y = torch.tensor(labels)
    n_train = int(0.7 * len(y))
    optimiser = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(epochs):
        order = torch.randperm(n_train)
        for start in range(0, n_train, 32):
            batch = order[start : start + 32]
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            optimiser.step()
    with torch.no_grad():
        return float((net(x[n_train:]).argmax(1) == y[n_train:]).float().mean())


def ct_nodule_patches():
    """16^3-voxel patches centred on the nodules of near-isotropic CT phantoms; label = nodule class."""
    patches, labels = [], []
    for seed in range(100):
        phantom = synth_ct((64, 64, 40), (0.7, 0.7, 0.9), np.random.default_rng(seed), n_nodules=4)
        padded = np.pad(phantom.image.astype(np.float32), 8, constant_values=-1000)
        for nodule in phantom.nodules:
            i, j, k = (int(round(c)) + 8 for c in nodule.center_voxel)
            patches.append(padded[i - 8 : i + 8, j - 8 : j + 8, k - 6 : k + 6])
            labels.append(nodule.nodule_class)
    return np.stack(patches)[:, None], np.array(labels)


def xray_images():
    radiographs = [synth_xray((64, 64), np.random.default_rng(seed), nodule=bool(seed % 2)) for seed in range(300)]
    return np.stack([r.image for r in radiographs])[:, None].astype(np.float32), np.arange(300) % 2


def mri_volumes():
    """32^3 brains, averaged over 2^3 voxels to 16^3 for the CNN (8x fewer voxels to train on): a lesion must show
    even at half the resolution."""
    phantoms = [synth_mri((32, 32, 32), rng=np.random.default_rng(seed), lesion=bool(seed % 2)) for seed in range(200)]
    volumes = np.stack([p.image for p in phantoms])[:, None].astype(np.float32)
    return volumes.reshape(200, 1, 16, 2, 16, 2, 16, 2).mean(axis=(3, 5, 7)), np.arange(200) % 2


def histology_tiles():
    tiles = [synth_histology((48, 48), np.random.default_rng(seed), tissue_class=seed % 2) for seed in range(120)]
    return np.stack([t.image.transpose(2, 0, 1) for t in tiles]).astype(np.float32), np.arange(120) % 2


@pytest.mark.parametrize(
    "make_samples, epochs", [(ct_nodule_patches, 40), (xray_images, 60), (mri_volumes, 60), (histology_tiles, 20)]
)
def test_labels_are_learnable_but_not_given_away_by_global_statistics(make_samples, epochs):
    images, labels = make_samples()
    assert 0.35 < labels.mean() < 0.65, "classes should be roughly balanced"
    flat = images.reshape(len(images), -1)
    assert best_threshold_accuracy(flat.mean(1), labels) < 0.7
    assert best_threshold_accuracy(flat.std(1), labels) < 0.7
    accuracy = held_out_cnn_accuracy(images, labels, epochs)
    print(f"{make_samples.__name__}: held-out CNN accuracy {accuracy:.3f} on {len(labels) - int(0.7 * len(labels))} samples")
    assert accuracy >= 0.7

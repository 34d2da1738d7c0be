import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medssl3d.transforms.rotation import (
    ROTATION_CLASSES,
    RandRotationPrediction,
    RandRotationPredictiond,
    rotate_by_class,
)


@pytest.mark.parametrize("spatial_dims,num_classes", [(3, 10), (3, 24), (2, 4)])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_classes_distinct_and_invertible(spatial_dims, num_classes, as_tensor):
    img = np.random.RandomState(0).rand(2, *(6,) * spatial_dims).astype(np.float32)
    inp = torch.from_numpy(img) if as_tensor else img
    rotated = []
    for label in range(num_classes):
        out = rotate_by_class(inp, label, spatial_dims)
        assert type(out) is type(inp) and out.shape == inp.shape
        back = rotate_by_class(out, label, spatial_dims, inverse=True)
        np.testing.assert_array_equal(np.asarray(back), img)
        rotated.append(np.asarray(out).tobytes())
    assert len(set(rotated)) == num_classes


def test_labels_follow_documented_encoding():
    img = np.random.RandomState(1).rand(1, 5, 5, 5)
    planes = {0: (2, 3), 1: (3, 1), 2: (1, 2)}  # right-handed quarter turns about H, W, D (channel axis 0)
    np.testing.assert_array_equal(rotate_by_class(img, 0), img)
    for axis in range(3):
        for k in (1, 2, 3):
            np.testing.assert_array_equal(rotate_by_class(img, 1 + 3 * axis + k - 1), np.rot90(img, k, planes[axis]))
    img2d = img[:, :, :, 0]
    for k in range(4):
        np.testing.assert_array_equal(rotate_by_class(img2d, k, spatial_dims=2), np.rot90(img2d, k, (1, 2)))
    assert len(ROTATION_CLASSES[3]) == 24 and len(ROTATION_CLASSES[2]) == 4


def test_labels_drawn_uniformly_and_applied():
    img = np.random.RandomState(2).rand(1, 4, 4, 4).astype(np.float32)
    t = RandRotationPrediction(num_classes=24).set_random_state(0)
    counts = np.zeros(24, int)
    for _ in range(480):
        out, label = t(img)
        np.testing.assert_array_equal(out, rotate_by_class(img, label))
        counts[label] += 1
    assert counts.min() > 5


def test_non_cubic_error_and_skip():
    img = np.zeros((1, 8, 8, 4), np.float32)
    with pytest.raises(ValueError, match=r"RandRotationPrediction.*\(8, 8, 4\).*not a cube"):
        RandRotationPrediction()(img)
    with pytest.raises(ValueError, match=r"RandRotationPredictiond, key 'image'.*\(6, 8\).*square"):
        RandRotationPredictiond("image", spatial_dims=2)({"image": np.zeros((1, 6, 8))})
    t = RandRotationPrediction(on_shape_change="skip").set_random_state(0)
    labels = set()
    for _ in range(200):
        out, label = t(img)
        assert out.shape == img.shape
        labels.add(label)
    # identity, 180 degrees about H and W, and the three turns about D keep an (8, 8, 4) shape
    assert labels == {0, 2, 5, 7, 8, 9}


@pytest.mark.parametrize("kind", ["numpy", "meta"])
def test_dict_reproducible_keys_rotate_alike(kind):
    base = torch.rand(1, 6, 6, 6, generator=torch.Generator().manual_seed(0))
    img = MetaTensor(base) if kind == "meta" else base.numpy()
    data = {"image": img, "seg": 1.0 * (img > 0.5)}
    a = RandRotationPredictiond(["image", "seg"], label_key="rot").set_random_state(9)(data)
    b = RandRotationPredictiond(["image", "seg"], label_key="rot").set_random_state(9)(data)
    assert a["rot"] == b["rot"]
    assert type(a["image"]) is type(img)
    np.testing.assert_array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
    np.testing.assert_array_equal(np.asarray(a["seg"]), 1.0 * (np.asarray(a["image"]) > 0.5))
    np.testing.assert_array_equal(np.asarray(rotate_by_class(a["image"], a["rot"], inverse=True)), np.asarray(img))
    assert len({RandRotationPredictiond("image").set_random_state(s)(data)["rotation_label"] for s in range(20)}) > 3


def test_errors():
    with pytest.raises(ValueError, match=r"RandRotationPrediction: expected a channel-first 3D.*\(1, 6, 6\)"):
        RandRotationPrediction()(np.zeros((1, 6, 6)))
    with pytest.raises(ValueError, match="num_classes"):
        RandRotationPrediction(spatial_dims=2, num_classes=10)
    with pytest.raises(ValueError, match="label"):
        rotate_by_class(np.zeros((1, 4, 4)), 4, spatial_dims=2)

import pytest
import torch
import torch.nn.functional as F
from monai.data import list_data_collate

from medssl3d.methods import RotationPrediction, build_method
from medssl3d.networks import build_encoder
from medssl3d.transforms import RandRotationPredictiond


def rotation_batch(smooth_volume, spatial_dims, seed=0):
    transform = RandRotationPredictiond(keys="image", spatial_dims=spatial_dims).set_random_state(seed)
    return list_data_collate([transform({"image": smooth_volume((32,) * spatial_dims, s)}) for s in range(2)])


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_rotation_prediction_learns(check_method, smooth_volume, spatial_dims):
    torch.manual_seed(0)
    method = build_method("rotation", build_encoder("resnet10", spatial_dims=spatial_dims, in_channels=1))
    batch = rotation_batch(smooth_volume, spatial_dims)
    assert method.num_classes == (10 if spatial_dims == 3 else 4)
    first, last = check_method(method, batch, ["rotation"], steps=20)
    assert last < 0.5 * first


def test_rotation_loss_is_cross_entropy_of_the_embedding_logits(encoder3d, smooth_volume):
    method = RotationPrediction(encoder3d, num_classes=24, hidden_dim=32).eval()
    batch = rotation_batch(smooth_volume, 3)
    logits = method.head(encoder3d.embed(batch["image"]))
    assert logits.shape == (2, 24)
    torch.testing.assert_close(method(batch)["loss"], F.cross_entropy(logits, batch["rotation_label"]))


def test_rotation_errors(encoder3d, smooth_volume):
    method = RotationPrediction(encoder3d)
    batch = rotation_batch(smooth_volume, 3)
    with pytest.raises(ValueError, match=r"lacks 'rotation_label' \(written by RandRotationPredictiond"):
        method({"image": batch["image"]})
    # a transform drawing 24 classes for a 10-class method
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\), found \[0, 23\]"):
        method(dict(batch, rotation_label=torch.tensor([23, 0])))
    with pytest.raises(ValueError, match=r"expected .*1 channel"):
        method(dict(batch, image=batch["image"].repeat(1, 3, 1, 1, 1)))
    with pytest.raises(ValueError, match="at least 32 voxels per side"):
        method(dict(batch, image=batch["image"][..., :16]))
    with pytest.raises(ValueError, match=r"num_classes must be one of \(10, 24\)"):
        RotationPrediction(encoder3d, num_classes=4)

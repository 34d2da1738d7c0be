import pytest
import torch
import torch.nn.functional as F
from monai.data import list_data_collate

from medssl3d.methods import AnatomicalPosition, build_method
from medssl3d.networks import build_encoder
from medssl3d.transforms import RandPositionCropd


def position_batch(smooth_volume, spatial_dims=3, n_bins=4):
    transform = RandPositionCropd("image", roi_size=32, n_bins=n_bins, axis=spatial_dims - 1).set_random_state(0)
    shape = (40,) * (spatial_dims - 1) + (96,)  # long last axis: the crops' positions differ along it
    return list_data_collate([transform({"image": smooth_volume(shape, s)}) for s in range(2)])


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_position_regression_and_bins_learn(check_method, smooth_volume, spatial_dims):
    torch.manual_seed(0)
    encoder = build_encoder("resnet10", spatial_dims=spatial_dims, in_channels=1)
    method = build_method("position", encoder, n_bins=4)
    batch = position_batch(smooth_volume, spatial_dims)
    assert batch["position"].shape == (2, spatial_dims) and batch["position_bin"].shape == (2,)
    first, last = check_method(method, batch, ["position", "position_bin"], steps=20)
    assert last < 0.5 * first


def test_position_terms(encoder3d, smooth_volume):
    batch = position_batch(smooth_volume)
    method = AnatomicalPosition(encoder3d, n_bins=4, regression_weight=2.0).eval()
    z = encoder3d.embed(batch["image"])
    regression = F.mse_loss(torch.sigmoid(method.regressor(z)), batch["position"])
    classification = F.cross_entropy(method.classifier(z), batch["position_bin"])
    out = method(batch)
    torch.testing.assert_close(out["loss/position"], regression)
    torch.testing.assert_close(out["loss"], 2.0 * regression + classification)
    # regression alone needs no bins, classification alone no positions
    out = AnatomicalPosition(encoder3d)({"image": batch["image"], "position": batch["position"]})
    assert set(out) == {"loss", "loss/position"}
    bins_only = AnatomicalPosition(encoder3d, regression=False, n_bins=4)
    out = bins_only({"image": batch["image"], "position_bin": batch["position_bin"]})
    assert set(out) == {"loss", "loss/position_bin"}


def test_position_errors(encoder3d, smooth_volume):
    batch = position_batch(smooth_volume)
    method = AnatomicalPosition(encoder3d, n_bins=4)
    with pytest.raises(ValueError, match=r"lacks 'position_bin' \(written by RandPositionCropd with n_bins set"):
        method({"image": batch["image"], "position": batch["position"]})
    with pytest.raises(ValueError, match=r"key 'position': expected shape \(2, 3\)"):
        method(dict(batch, position=batch["position"][:, :2]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        AnatomicalPosition(encoder3d, n_bins=2)(dict(batch, position_bin=torch.tensor([3, 0])))
    with pytest.raises(ValueError, match="at least 32 voxels per side"):
        method(dict(batch, image=batch["image"][:, :, :20]))
    with pytest.raises(ValueError, match="enable regression"):
        AnatomicalPosition(encoder3d, regression=False)

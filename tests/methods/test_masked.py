import pytest
import torch
from monai.data import list_data_collate

from medssl3d.methods import MaskedImageModeling, build_method
from medssl3d.transforms import RandMaskedPatchesd

DECODER = {"decoder_channels": (32, 32, 16, 16, 8)}  # a small decoder keeps the test fast


@pytest.fixture
def masked_batch(smooth_volume):
    def make(size=32):
        transform = RandMaskedPatchesd(keys="image", patch_size=8, mask_ratio=0.5).set_random_state(0)
        return list_data_collate([transform({"image": smooth_volume((size,) * 3, seed)}) for seed in range(2)])

    return make


def test_masked_image_modeling_learns(encoder3d, check_method, masked_batch):
    method = build_method("masked", encoder3d, decoder_args=DECODER)
    batch = masked_batch()
    assert batch["mask"].shape == (2, 1, 32, 32, 32) and 0 < batch["mask"].mean() < 1
    first, last = check_method(method, batch, ["restoration"], steps=10)
    assert last < 0.5 * first


def test_loss_is_l1_over_the_masked_voxels_only(encoder3d, masked_batch):
    method = MaskedImageModeling(encoder3d, decoder_args=DECODER).eval()
    batch = masked_batch()
    mask = batch["mask"].bool()
    restored = method.restore(batch["image"])
    loss = method(batch)["loss"]
    torch.testing.assert_close(loss, (restored - batch["target"]).abs()[mask].mean())
    # the visible voxels do not count: changing their target leaves the loss unchanged
    changed = dict(batch, target=torch.where(mask, batch["target"], torch.rand_like(batch["target"])))
    torch.testing.assert_close(method(changed)["loss"], loss)
    # nothing masked: a zero loss, not a division by zero
    assert method(dict(batch, mask=torch.zeros_like(batch["mask"])))["loss"] == 0


def test_masked_image_modeling_errors(encoder3d, masked_batch):
    method = MaskedImageModeling(encoder3d, decoder_args=DECODER)
    batch = masked_batch()
    with pytest.raises(ValueError, match=r"lacks 'mask' \(written by RandMaskedPatchesd"):
        method({"image": batch["image"], "target": batch["target"]})
    with pytest.raises(ValueError, match=r"mask 'mask' must have shape \(2, 1, 32, 32, 32\)"):
        method(dict(batch, mask=batch["mask"][:, :, :8]))
    with pytest.raises(ValueError, match="at least 32 voxels per side"):
        method(masked_batch(size=16))

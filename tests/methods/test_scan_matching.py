import pytest
import torch
import torch.nn.functional as F
from monai.data import list_data_collate
from monai.transforms import Compose, RandSpatialCropSamplesd

from medssl3d.methods import ScanMatching, build_method
from medssl3d.transforms import ScanTagd, same_id_matrix

SCANS = [("scan_a", "CT"), ("scan_b", "CT"), ("scan_c", "MR")]


@pytest.fixture
def scan_batch(smooth_volume):
    """Two 32^3 crops of each of three scans (two CT, one MR): 6 crops, 15 pairs, 3 of them same-scan."""
    transform = Compose(
        [
            ScanTagd("scan_id", modalities=["CT", "MR"]),
            RandSpatialCropSamplesd("image", roi_size=32, num_samples=2, random_size=False),
        ]
    ).set_random_state(0)
    items = [
        transform({"image": smooth_volume((40, 40, 40), seed), "scan_id": name, "modality": modality})
        for seed, (name, modality) in enumerate(SCANS)
    ]
    return list_data_collate([crop for crops in items for crop in crops])


def test_scan_and_modality_matching_learn(encoder3d, check_method, scan_batch):
    method = build_method("scan_matching", encoder3d, modality=True)
    assert scan_batch["image"].shape == (6, 1, 32, 32, 32)
    assert scan_batch["modality_index"].tolist() == [0, 0, 0, 0, 1, 1]
    first, last = check_method(method, scan_batch, ["same_scan", "same_modality"], steps=20)
    assert last < 0.5 * first


def test_pair_loss_is_class_balanced_and_symmetric(encoder3d, scan_batch):
    method = ScanMatching(encoder3d).eval()
    z = encoder3d.embed(scan_batch["image"])
    logits = method.pair_logits(z)[:, 0]
    i, j = torch.triu_indices(6, 6, offset=1)
    target = same_id_matrix(scan_batch["scan_index"])[i, j]
    assert target.sum() == 3  # one positive pair per scan
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    balanced = 0.5 * bce[target == 1].mean() + 0.5 * bce[target == 0].mean()
    torch.testing.assert_close(method(scan_batch)["loss/same_scan"], balanced)
    # the pair feature does not depend on the order within a pair
    torch.testing.assert_close(method.pair_logits(z[[1, 0]]), method.pair_logits(z[[0, 1]]))


def test_scan_matching_errors(encoder3d, scan_batch):
    method = ScanMatching(encoder3d, modality=True)
    with pytest.raises(ValueError, match=r"lacks 'modality_index' \(written by ScanTagd"):
        method({"image": scan_batch["image"], "scan_index": scan_batch["scan_index"]})
    with pytest.raises(ValueError, match="at least 2 crops"):
        ScanMatching(encoder3d)({"image": scan_batch["image"][:1], "scan_index": scan_batch["scan_index"][:1]})
    with pytest.raises(ValueError, match="at least 3 crops"):
        two = {"image": scan_batch["image"][:2], "scan_index": scan_batch["scan_index"][:2]}
        ScanMatching(encoder3d, hidden_dim=16)(two)
    with pytest.raises(ValueError, match="at least 32 voxels per side"):
        method(dict(scan_batch, image=scan_batch["image"][..., :8]))

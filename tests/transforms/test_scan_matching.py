import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import Compose, RandSpatialCropSamplesd

from medssl3d.transforms.scan_matching import ScanTagd, same_id_matrix, sample_pairs, stable_id


def test_stable_id_is_pinned_not_salted():
    # a pinned value: Python's salted hash() would differ between processes (and runs), this must not
    assert stable_id("case_001/ct.nii.gz") == -4263527683110800333
    assert stable_id("case_001/ct.nii.gz") != stable_id("case_002/ct.nii.gz")


def test_tag_from_path_explicit_id_and_metadata():
    tag = ScanTagd("image", modalities=["CT", "MR"])
    a = tag({"image": "/data/a/image.nii.gz", "modality": "MR"})
    assert a["scan_index"] == stable_id("/data/a/image.nii.gz") and a["modality_index"] == 1
    # after loading, the file name comes from the MetaTensor and the modality from the DICOM tag
    loaded = MetaTensor(torch.zeros(1, 4, 4, 4), meta={"filename_or_obj": "/data/a/image.nii.gz", "0008|0060": "CT "})
    b = tag({"image": loaded})
    assert b["scan_index"] == a["scan_index"] and b["modality_index"] == 0
    c = ScanTagd("patient_id", modality="CT")({"patient_id": "P7", "image": "x.nii"})
    assert c["scan_index"] == stable_id("P7") and c["modality_index"] == stable_id("CT")


def test_tag_errors():
    with pytest.raises(ValueError, match="ScanTagd, key 'image': no modality"):
        ScanTagd("image")({"image": "a.nii"})
    with pytest.raises(ValueError, match="ScanTagd, key 'image': modality 'US' is not in"):
        ScanTagd("image", modalities=["CT"])({"image": "a.nii", "modality": "US"})
    with pytest.raises(ValueError, match="ScanTagd, key 'image': expected a scan name.*ndarray"):
        ScanTagd("image", modality="CT")({"image": np.zeros((1, 4, 4))})
    with pytest.raises(ValueError, match="exactly one key"):
        ScanTagd(["image", "scan_id"])


def test_matrix_for_known_batch():
    ids = torch.tensor([5, 9, 5, -3, 9])
    m = same_id_matrix(ids)
    expected = torch.tensor(
        [[1, 0, 1, 0, 0], [0, 1, 0, 0, 1], [1, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 1, 0, 0, 1]], dtype=torch.float32
    )
    assert torch.equal(m, expected)
    assert torch.equal(m, m.T) and torch.equal(torch.diag(m), torch.ones(5))
    assert torch.equal(same_id_matrix([1, 2, 1, 3, 2]), expected)
    with pytest.raises(ValueError, match="same_id_matrix.*\\(2, 2\\)"):
        same_id_matrix(torch.zeros(2, 2))


@pytest.mark.parametrize("roi, shape", [((8, 8, 4), (1, 16, 16, 8)), ((8, 8), (1, 16, 16))])
def test_k_crops_per_scan_give_positives_in_a_batch(roi, shape):
    pipeline = Compose(
        [
            ScanTagd("image", modality="CT"),
            RandSpatialCropSamplesd("image", roi_size=roi, num_samples=3, random_size=False),
        ]
    ).set_random_state(0)
    items = [{"image": MetaTensor(torch.rand(shape), meta={"filename_or_obj": f"scan_{i}.nii"})} for i in range(2)]
    batch = list_data_collate([pipeline(item) for item in items])
    assert batch["image"].shape == (6,) + shape[:1] + roi and batch["scan_index"].dtype == torch.int64
    same_scan = same_id_matrix(batch["scan_index"])
    assert same_scan.sum() == 2 * 3 * 3  # two blocks of three crops
    assert same_id_matrix(batch["modality_index"]).all()
    first, second, target = sample_pairs(batch["scan_index"], 40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(target, same_scan[first, second]) and target.sum() == 20
    assert (first != second).all()


def test_sample_pairs_seeded_and_errors():
    ids = torch.tensor([0, 0, 1, 1, 2])
    a = sample_pairs(ids, 11, positive_fraction=0.3, generator=torch.Generator().manual_seed(1))
    b = sample_pairs(ids, 11, positive_fraction=0.3, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a[2].tolist() == [1.0] * 3 + [0.0] * 8
    assert (ids[a[0]] == ids[a[1]]).tolist() == a[2].bool().tolist()
    with pytest.raises(ValueError, match="no positive"):
        sample_pairs(torch.arange(4), 4)
    with pytest.raises(ValueError, match="no negative"):
        sample_pairs(torch.zeros(4, dtype=torch.long), 4)
    assert sample_pairs(torch.zeros(4, dtype=torch.long), 4, positive_fraction=1.0)[2].tolist() == [1.0] * 4

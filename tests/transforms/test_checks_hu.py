"""CheckImaged's Hounsfield test and CheckLabeld on synthetic replicas of real exports.

Genuine CT (head cropped to the skull, abdomen with metal, a chest phantom; padding -1024/-2048/-3024) must pass;
rescaled (0..563), raw stored (0..4095, or Siemens-like -2000 padding), windowed (0..255), normalised and MRI-like
volumes must stop with one line naming the file, what was seen and the fix.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import MapLabelValued

from medssl3d.data.synthetic import synth_ct, synth_mri
from medssl3d.errors import InputError
from medssl3d.transforms import CheckImage, CheckImaged, CheckLabel, CheckLabeld, hu_problem, label_problem


def _fov(shape: tuple[int, int, int]) -> np.ndarray:
    """Voxels inside the circular reconstruction field of view (the rest holds the scanner's padding)."""
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    return np.broadcast_to(((x**2 + y**2) <= 1.0)[..., None], shape)


def head_ct(pad: int = -1024, cropped: bool = False, seed: int = 0) -> np.ndarray:
    """Head-like int16 HU: a skull (1000 HU) around brain (35 HU) in air (-1000 HU), noisy; ``cropped``: the
    volume is the skull's bounding box (air only in the corners), else padding outside the field of view."""
    rng = np.random.default_rng(seed)
    shape = (40, 40, 24)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt((grid**2).sum(0)) / (1.0 if cropped else 0.7)
    hu = np.where(r < 0.9, 35.0, np.where(r < 1.0, 1000.0, -1000.0)) + rng.normal(0, 12, shape)
    if not cropped:
        hu[~_fov(shape)] = pad
    return hu.round().astype(np.int16)


def abdomen_ct(pad: int = -3024, seed: int = 1) -> np.ndarray:
    """Abdomen-like int16 HU: an elliptic body (fat -100, organs 50, a spine 700, bowel gas), air around it,
    padding outside the field of view and a metal implant at 30000 HU."""
    rng = np.random.default_rng(seed)
    shape = (48, 48, 16)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x / 0.85) ** 2 + (y / 0.6) ** 2
    hu = np.where(body < 0.8, 50.0, np.where(body < 1.0, -100.0, -1000.0))
    hu = np.where(((x) ** 2 + (y - 0.35) ** 2) < 0.01, 700.0, hu)
    hu = np.where(((x + 0.3) ** 2 + (y + 0.1) ** 2) < 0.004, -950.0, hu)
    volume = np.repeat(hu[..., None], shape[2], axis=2) + rng.normal(0, 10, shape)
    volume[~_fov(shape)] = pad
    volume[24:26, 30:32, 6:8] = 30000
    return volume.round().astype(np.int16)


def chest_ct(pad: int) -> np.ndarray:
    return synth_ct((64, 64, 24), (6.0, 6.0, 12.0), np.random.default_rng(2), pad_value=pad).image


GENUINE = {
    "head_pad_1024": lambda: head_ct(-1024),
    "head_pad_2048": lambda: head_ct(-2048),
    "head_pad_3024": lambda: head_ct(-3024),
    "head_cropped_to_skull": lambda: head_ct(cropped=True),
    "abdomen_pad_3024_metal": lambda: abdomen_ct(-3024),
    "abdomen_pad_2048_metal": lambda: abdomen_ct(-2048),
    "chest_pad_1024": lambda: chest_ct(-1024),
    "chest_pad_2048": lambda: chest_ct(-2048),
}


def _rescaled(hu: np.ndarray) -> np.ndarray:  # a head CT exported rescaled to 0..563, no air at -1000
    return np.clip((hu.astype(np.float32) + 1000) * 563 / 2000, 0, 563).round().astype(np.int16)


NOT_HU = {
    "rescaled_0_563": (lambda: _rescaled(head_ct(-1024)), "no negative values"),
    "raw_stored_0_4095": (lambda: np.clip(head_ct(-1024).astype(np.int32) + 1024, 0, 4095).astype(np.uint16),
                          "no negative values"),
    "raw_stored_pad_minus_2000": (lambda: np.where(head_ct(-3024) == -3024, -2000, head_ct(-3024) + 1024)
                                  .astype(np.int16), "between -1100 and -20 HU"),
    "windowed_0_255": (lambda: np.clip((head_ct(-1024) + 1000) * 255 / 1400, 0, 255).astype(np.uint8),
                       "no negative values"),
    "normalised_minus1_1": (lambda: (head_ct(-1024) / 1000.0).astype(np.float32), "between -1100 and -20 HU"),
    "mri_like": (lambda: synth_mri((64, 64, 48), (4.0, 4.0, 6.0), np.random.default_rng(3)).image,
                 "no negative values"),
    "mri_uint16_large": (lambda: (synth_mri((64, 64, 48), (4.0, 4.0, 6.0), np.random.default_rng(4)).image
                                  .astype(np.float32) * 110), "beyond the CT scale"),
}


def _named(array: np.ndarray, name: str = "/data/ct/imagesTr/case_007.nii.gz") -> MetaTensor:
    return MetaTensor(torch.as_tensor(array[None].astype(np.float32)), meta={"filename_or_obj": name})


@pytest.mark.parametrize("case", sorted(GENUINE))
def test_genuine_hounsfield_ct_passes(case):
    volume = GENUINE[case]()
    assert volume.min() < -900 and hu_problem(volume) is None
    tensor = _named(volume)
    assert CheckImaged("image", modality="CT")({"image": tensor})["image"] is tensor


@pytest.mark.parametrize("case", sorted(NOT_HU))
def test_not_hounsfield_stops_with_one_line_naming_file_values_and_fix(case):
    make, reason = NOT_HU[case]
    volume = make()
    with pytest.raises(InputError) as caught:
        CheckImaged("image", modality="CT")({"image": _named(volume)})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("CheckImaged, key 'image': '/data/ct/imagesTr/case_007.nii.gz': not Hounsfield units")
    assert f"values {float(volume.min()):g}..{float(volume.max()):g} (percentiles 1/50/99: " in message
    assert reason in message
    assert "configs/modality/mri.yaml" in message and "data_prep/dicom_to_nifti.py" in message
    CheckImaged("image", modality="MRI")({"image": _named(volume)})  # the MRI route does not test HU


def test_rescaled_head_ct_values_are_reported_as_seen():
    volume = _rescaled(head_ct(-1024))
    assert (volume.min(), volume.max()) == (0, 563)
    assert "values 0..563 " in hu_problem(volume)


def test_numpy_torch_and_subsampled_volumes_agree():
    """A volume above the subsampling size (4 M voxels) is judged as its small replica is."""
    small_good, small_bad = head_ct(-2048), _rescaled(head_ct(-2048))
    big_good = np.tile(small_good, (4, 4, 7))  # 160x160x168 = 4.3 M voxels
    big_bad = np.tile(small_bad, (4, 4, 7))
    assert big_good.size > 1 << 22
    assert hu_problem(big_good) is None and hu_problem(torch.as_tensor(big_good)) is None
    assert "no negative values" in hu_problem(big_bad)
    assert "no negative values" in hu_problem(torch.as_tensor(small_bad))


def test_other_checks_come_first_and_without_modality_no_hu_test():
    with pytest.raises(InputError, match=r"constant volume \(every voxel is 0\)"):
        CheckImage(modality="CT")(np.zeros((1, 8, 8, 8), np.float32))
    rescaled = _rescaled(head_ct())[None]
    assert CheckImage()(rescaled) is rescaled


# ---- CheckLabel / CheckLabeld --------------------------------------------------------------------------------

def _brats_label(name: str = "/data/brats/labelsTr/BraTS_001.nii.gz") -> MetaTensor:
    label = np.zeros((1, 16, 16, 8), np.uint8)
    label[0, 4:12, 4:12, 2:6] = 2
    label[0, 6:10, 6:10, 3:5] = 1
    label[0, 7:9, 7:9, 4] = 4
    return MetaTensor(torch.as_tensor(label), meta={"filename_or_obj": name})


def test_label_values_beyond_num_classes_name_file_values_and_mapping():
    with pytest.raises(InputError) as caught:
        CheckLabeld(num_classes=3)({"label": _brats_label()})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("CheckLabeld, key 'label': '/data/brats/labelsTr/BraTS_001.nii.gz': "
                              "label values [0, 1, 2, 4] found, [4] outside 0..2 (num_classes 3)")
    assert "MapLabelValued with orig_labels [0, 1, 2, 4] and target_labels [0, 1, 2, 3] and num_classes 4" in message
    assert "set num_classes 5" in message


def test_the_suggested_mapping_makes_the_label_map_pass():
    mapped = MapLabelValued("label", orig_labels=[0, 1, 2, 4], target_labels=[0, 1, 2, 3])({"label": _brats_label()})
    assert sorted(torch.unique(mapped["label"]).tolist()) == [0, 1, 2, 3]
    assert CheckLabeld("label", num_classes=4)(mapped)["label"] is mapped["label"]


def test_valid_labels_pass_unchanged_numpy_and_torch():
    label = np.array([[[0, 1], [2, 2]]], np.uint8)
    assert CheckLabel(3)(label) is label
    as_float = torch.tensor([[[0.0, 1.0], [2.0, 0.0]]])
    assert CheckLabel(3)(as_float) is as_float
    assert CheckLabeld("seg", num_classes=2, allow_missing_keys=True)({"image": 1}) == {"image": 1}


@pytest.mark.parametrize("values, expected", [
    ([0.0, 0.5, 1.0], "non-integer label values, e.g. 0.5"),
    ([0.0, np.nan, 1.0], "1 NaN/Inf voxel(s) in the label map"),
    ([0.0, -1.0, 1.0], "label values [-1, 0, 1] found, [-1] outside 0..1"),
])
def test_non_integer_non_finite_or_negative_labels_are_refused(values, expected):
    assert expected in label_problem(np.array(values, np.float32), 2)
    with pytest.raises(InputError, match=r"^CheckLabel: input: "):
        CheckLabel(2)(np.array(values, np.float32))


def test_num_classes_is_required_and_positive():
    with pytest.raises(TypeError):
        CheckLabeld("label")
    with pytest.raises(ValueError, match="num_classes must be at least 1"):
        CheckLabel(0)

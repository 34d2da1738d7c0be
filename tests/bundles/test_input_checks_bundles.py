"""The CT bundles check their inputs where the data enters: CheckImaged right after EnsureChannelFirstd in every
CT chain (the HU test on whole volumes, not on nodule patches), CheckLabeld in seg_ct's chain, and a genesis_ct
run on a rescaled (non-HU) CT cohort stops while the dataset is cached, before training, naming the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigParser

from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.errors import InputError

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
TIMEOUT_S = 180
# every config holding a CT chain: (config files merged in order, the HU test expected on the chain's image)
CT_CHAINS = {
    **{f"{b}/train": ([f"{b}/configs/train.yaml"], True)
       for b in ("genesis_ct", "masked_ct", "contrastive_ct", "rubik_ct", "rotation_ct", "multitask_ct")},
    "seg_ct/train+evaluate": (["seg_ct/configs/train.yaml", "seg_ct/configs/evaluate.yaml"], True),
    "seg_ct/inference": (["seg_ct/configs/inference.yaml"], True),
    "nodule_cls_ct/train+evaluate": (
        ["nodule_cls_ct/configs/train.yaml", "nodule_cls_ct/configs/evaluate.yaml"], False),
    "nodule_cls_ct/inference": (["nodule_cls_ct/configs/inference.yaml"], False),
}


def _parser(files: list[str]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / f) for f in files])
    parser["dataset_dir"] = "/nonexistent"
    return parser


def _checks_after_ensure_channel_first(node, found: list) -> None:
    """Append, for every EnsureChannelFirstd in a transform list of the raw config, the step after it."""
    if isinstance(node, dict):
        for value in node.values():
            _checks_after_ensure_channel_first(value, found)
    elif isinstance(node, list):
        for index, step in enumerate(node):
            if isinstance(step, dict) and step.get("_target_") == "EnsureChannelFirstd":
                found.append(node[index + 1] if index + 1 < len(node) else None)
            _checks_after_ensure_channel_first(step, found)


@pytest.mark.parametrize("name", sorted(CT_CHAINS))
def test_every_ct_chain_checks_right_after_ensure_channel_first(name):
    files, hu = CT_CHAINS[name]
    parser = _parser(files)
    found: list = []
    _checks_after_ensure_channel_first(parser.get(), found)
    assert found, f"{name}: no EnsureChannelFirstd found"
    for step in found:
        assert isinstance(step, dict) and step["_target_"] == "medssl3d.transforms.CheckImaged", (name, step)
        modality = step.get("modality")
        resolved = parser.get_parsed_content("modality") if modality == "@modality" else modality
        assert (resolved == "CT") is hu, (name, step, resolved)


def test_reference_ct_chain_checks_hu_after_ensure_channel_first():
    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "preprocessing" / "ct.yaml"))
    steps = parser["preprocessing"]
    index = [s["_target_"] if isinstance(s, dict) else s for s in steps].index("EnsureChannelFirstd")
    assert steps[index + 1] == {"_target_": "medssl3d.transforms.CheckImaged", "keys": "@image_key", "modality": "CT"}


def _save(path: Path, array: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(array, np.diag([1.0, 1.0, 2.0, 1.0])), path)


def test_seg_ct_chain_refuses_labels_beyond_num_classes_naming_the_file(tmp_path):
    hu = np.full((24, 24, 8), -1000, np.int16)
    hu[4:20, 4:20] = 40
    label = np.zeros((24, 24, 8), np.uint8)
    label[6:18, 6:18, 2:6], label[8:16, 8:16, 3:5], label[10:14, 10:14, 4] = 2, 1, 4  # BraTS-like 0/1/2/4
    _save(tmp_path / "ct.nii.gz", hu)
    _save(tmp_path / "seg.nii.gz", label)
    parser = _parser(["seg_ct/configs/train.yaml", "seg_ct/configs/evaluate.yaml"])
    parser["chain"] = {"_target_": "Compose", "transforms": "@deterministic_transforms"}
    chain = parser.get_parsed_content("chain", instantiate=True)
    with pytest.raises(Exception) as caught:
        chain({"image": str(tmp_path / "ct.nii.gz"), "label": str(tmp_path / "seg.nii.gz")})
    error = caught.value
    while error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, InputError)
    assert str(error).startswith(f"CheckLabeld, key 'label': '{tmp_path / 'seg.nii.gz'}': label values [0, 1, 2, 4] "
                                 "found, [4] outside 0..2 (num_classes 3)")
    label[label == 4] = 0
    _save(tmp_path / "seg.nii.gz", label)
    assert chain({"image": str(tmp_path / "ct.nii.gz"), "label": str(tmp_path / "seg.nii.gz")})["label"].max() == 2


def test_genesis_ct_refuses_a_rescaled_cohort_before_training(tmp_path):
    """A head-CT-like export rescaled to 0..563 (no air at -1000 HU) used to train to flat grey crops with exit 0."""
    data = tmp_path / "data"
    synthesize_cohort("ct", 2, data, size=(64, 64, 24), progress=False)
    datalist = json.loads((data / "datalist.json").read_text())
    items = [item["image"] for split in ("training", "validation", "test") for item in datalist.get(split) or []]
    first = items[0]
    image = nib.load(data / first)
    hu = np.asanyarray(image.dataobj).astype(np.float32)
    shifted = np.clip(hu + 1000, 0, None)  # air and padding at 0
    rescaled = shifted * 563 / shifted.max()
    nib.save(nib.Nifti1Image(rescaled.round().astype(np.int16), image.affine), data / first)
    out = tmp_path / "models"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
               str(BUNDLES / "genesis_ct" / "configs" / "train.yaml"), "--bundle_root", str(tmp_path),
               "--dataset_dir", str(data), "--output_dir", str(out), "--datalist_key", "training",
               "--num_workers", "0", "--epochs", "1", "--batch_size", "1", "--encoder", "resnet10",
               "--crop_size", "[32,32,16]", "--min_input_size", "16"]
    datalist["training"] = [{"image": name} for name in items]  # every volume in the cached training list
    (data / "datalist.json").write_text(json.dumps(datalist))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, text=True, capture_output=True, timeout=TIMEOUT_S)
    assert result.returncode == 1, result.stderr[-3000:]  # not an abort at shutdown (134)
    output = result.stdout + result.stderr
    assert f"CheckImaged, key 'image': '{first}': not Hounsfield units: values 0..563" in output or (
        f"'{data / first}': not Hounsfield units: values 0..563" in output), output[-3000:]
    summary = [line for line in result.stderr.splitlines() if line.strip()][-1]  # the run's last line
    assert summary.startswith("medssl3d: error: CheckImaged, key 'image': ") and first in summary, summary
    assert "not Hounsfield units" in summary and "configs/modality/mri.yaml" in summary, summary
    assert not list(out.rglob("*.pt")), "nothing may be trained or saved"

"""The MRI switch (configs/modality/mri.yaml) on every 3D bundle, and the preparation an encoder export records.

One synthetic MRI cohort (4 volumes of 40x40x32 at 1x1x1.2 mm; labels 0..3; a lesion class per volume) feeds
three training runs started together, one torch thread each: genesis_ct (2 iterations, its encoder export is
checked), seg_ct (2 iterations, from a CT-prepared export: warned about once) and nodule_cls_ct (2 iterations,
from an MRI-prepared export: no warning). seg_ct's evaluate and inference configs and nodule_cls_ct's inference
config then run with the same switch in this process.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, run

from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.engine import export_encoder, read_encoder_export
from medssl3d.networks import build_encoder
from medssl3d.transfer import build_segmenter, preparation_differences

pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file")  # MONAI's notice on trusting configs

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ROOT / "bundles"
MRI = str(ROOT / "configs" / "modality" / "mri.yaml")
TIMEOUT_S = 300
PRETRAINING = ["genesis_ct", "masked_ct", "contrastive_ct", "rubik_ct", "rotation_ct", "multitask_ct"]
MRI_INPUTS = {"modality": "MRI", "intensity_window": {"percentiles": [0.5, 99.5]}, "spacing": [1.0, 1.0, 1.0],
              "orientation": "RAS"}
CT_INPUTS = {"modality": "CT", "intensity_window": [-1000, 400], "spacing": [1.0, 1.0, 2.0], "orientation": "RAS"}
COMMON = {"num_workers": 0, "cache_rate": 0, "encoder": "resnet10"}
SEG = {**COMMON, "num_classes": 4, "crop_size": [32, 32, 32], "decoder_channels": [32, 16, 16, 8, 8]}
NODULE = COMMON
# name: (bundle, overrides, pretrained export or None); each trains 2 iterations on the 2 training volumes
TRAINS = {
    "genesis": ("genesis_ct", {**COMMON, "epochs": 1, "batch_size": 1, "crops_per_volume": 2,
                               "crop_size": [32, 32, 16], "min_input_size": 16}, None),
    "seg": ("seg_ct", {**SEG, "epochs": 1, "batch_size": 1, "crops_per_volume": 2}, "ct_export"),
    "nodule": ("nodule_cls_ct", {**NODULE, "epochs": 2, "batch_size": 2}, "mri_export"),
}


def _configs(bundle: str, *names: str) -> list[str]:
    return [*(str(BUNDLES / bundle / "configs" / f"{name}.yaml") for name in names), MRI]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mri_route")
    synthesize_cohort("mri", 4, root / "mri", size=(40, 40, 32), progress=False)  # 2 training, 1 val, 1 test
    torch.manual_seed(0)
    encoder = build_encoder("resnet10")
    exports = {name: export_encoder(encoder, root / f"{name}.pt", patch_size=[32, 32, 32], **inputs)
               for name, inputs in (("ct_export", CT_INPUTS), ("mri_export", MRI_INPUTS))}
    return {"mri": root / "mri", "root": root, **exports}


@pytest.fixture(scope="module")
def trains(data):
    """The three training runs, started together; value: (process, output dir)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = {}
    for name, (bundle, overrides, export) in TRAINS.items():
        out = data["root"] / name
        command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(_configs(bundle, "train")),
                   "--dataset_dir", str(data["mri"]), "--output_dir", str(out)]
        for key, value in {**overrides, **({"pretrained_encoder": str(data[export])} if export else {})}.items():
            command += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
        started[name] = (subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT), out)
    yield started
    for process, _ in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


def _finished(trains, name: str) -> tuple[str, Path]:
    process, out = trains[name]
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, f"{name} failed:\n{output[-4000:]}"
    return output, out


def _chain(configs: list[str], key: str) -> list[str]:
    parser = ConfigParser(ConfigParser.load_config_files(configs))
    parser["dataset_dir"] = "/nonexistent"  # the chains are built without reading data
    return parser, parser.get_parsed_content(key).transforms


@pytest.mark.parametrize("bundle, names, key", [
    *((bundle, ("train",), "train#preprocessing") for bundle in PRETRAINING),
    ("seg_ct", ("train",), "train#preprocessing"), ("seg_ct", ("train",), "validate#preprocessing"),
    ("seg_ct", ("train", "evaluate"), "preprocessing"), ("seg_ct", ("inference",), "preprocessing"),
    ("nodule_cls_ct", ("train",), "train#preprocessing"), ("nodule_cls_ct", ("train", "evaluate"), "preprocessing"),
    ("nodule_cls_ct", ("inference",), "preprocessing"),
])
def test_the_switch_replaces_the_ct_window_in_every_3d_chain(bundle, names, key):
    parser, ct = _chain(_configs(bundle, *names)[:-1], key)
    ct_types = [type(t).__name__ for t in ct]
    assert "ScaleIntensityRanged" in ct_types and "ScaleIntensityRangePercentilesd" not in ct_types
    parser, mri = _chain(_configs(bundle, *names), key)
    types = [type(t).__name__ for t in mri]
    assert "ScaleIntensityRanged" not in types, "the CT window must not act on MRI"
    normalise = types.index("ScaleIntensityRangePercentilesd")
    assert types[normalise + 1] == "CropForegroundd", "the foreground is found after normalisation"
    assert types.index("Spacingd") < normalise
    checks = [t for t in mri if type(t).__name__ == "CheckImaged" and t.checker.modality is not None]
    assert all(check.checker.modality == "MRI" for check in checks)
    spacing = mri[types.index("Spacingd")]
    assert list(spacing.spacing_transform.pixdim) == [1.0, 1.0, 1.0]
    if "label" in spacing.keys:  # label maps resampled nearest, then checked against num_classes
        assert spacing.mode[spacing.keys.index("label")] == "nearest"
        assert "CheckLabeld" in types
    if "intensity_window" in parser:  # what the export records or the pretrained encoder is compared with
        assert parser.get_parsed_content("intensity_window") == MRI_INPUTS["intensity_window"]


def test_preparation_mismatch_is_warned_once_naming_both(data):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_segmenter(2, pretrained_encoder=data["ct_export"], prepared_inputs=MRI_INPUTS,
                        decoder_channels=[32, 16, 16, 8, 8])
        build_segmenter(2, pretrained_encoder=data["mri_export"], prepared_inputs=MRI_INPUTS,
                        decoder_channels=[32, 16, 16, 8, 8])
        build_segmenter(2, pretrained_encoder=data["mri_export"], decoder_channels=[32, 16, 16, 8, 8])
    messages = [str(w.message) for w in caught if "was pretrained on" in str(w.message)]
    assert messages == [
        f"{data['ct_export']} was pretrained on CT window [-1000, 400] at 1x1x2 mm RAS; this run prepares MRI "
        "percentiles [0.5, 99.5] at 1x1x1 mm RAS (differs in modality, intensity_window, spacing); the encoder "
        "transfers best on inputs prepared as in pretraining."]
    old = {"intensity_window": [-1000, 1000], "spacing": [1, 1, 2], "orientation": "RAS"}  # no modality recorded
    assert preparation_differences(old, CT_INPUTS) == ["intensity_window"]
    assert preparation_differences({**CT_INPUTS, "spacing": [1.0, 1.0, 2.0000001]}, CT_INPUTS) == []


def test_pretraining_on_mri_records_the_preparation(trains, data):
    _, out = _finished(trains, "genesis")
    _, metadata = read_encoder_export(out / "encoder.pt")
    assert {key: metadata[key] for key in MRI_INPUTS} == MRI_INPUTS
    assert metadata["patch_size"] == [32, 32, 16] and metadata["method"] == "ModelsGenesis"
    parser = ConfigParser(ConfigParser.load_config_files(_configs("seg_ct", "train")))
    assert preparation_differences(metadata, parser.get_parsed_content("prepared_inputs")) == [], \
        "seg_ct with the switch prepares what an MRI-pretrained encoder saw"


def test_seg_trains_evaluates_and_segments_mri(trains, data):
    output, out = _finished(trains, "seg")
    assert output.count("was pretrained on CT window [-1000, 400] at 1x1x2 mm RAS; this run prepares MRI "
                        "percentiles [0.5, 99.5] at 1x1x1 mm RAS") == 1, output[-3000:]
    assert "loaded 72 tensors, 0 missing, 0 unexpected" in output and (out / "model.pt").is_file()
    run(config_file=_configs("seg_ct", "train", "evaluate"), dataset_dir=str(data["mri"]), output_dir=str(out),
        **SEG)
    metrics = dict(csv.reader((out / "eval" / "metrics.csv").read_text().splitlines()))
    assert 0.0 <= float(metrics["test_mean_dice"]) <= 1.0
    run(config_file=_configs("seg_ct", "inference"), dataset_dir=str(data["mri"]), output_dir=str(out), **SEG)
    (item,) = json.loads((data["mri"] / "datalist.json").read_text())["test"]
    image = nib.load(data["mri"] / item["image"])
    mask = nib.load(out / "predictions" / Path(item["image"]).name.replace(".nii.gz", "_seg.nii.gz"))
    assert mask.shape == image.shape  # back on the input's grid through the crop and the resampling
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-4)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 3}


def test_nodule_classifier_trains_and_predicts_on_mri(trains, data):
    output, out = _finished(trains, "nodule")
    assert "was pretrained on" not in output  # the export was prepared as this run prepares
    assert "loaded 72 tensors, 0 missing, 0 unexpected" in output and (out / "model_final.pt").is_file()
    run(config_file=_configs("nodule_cls_ct", "inference"), dataset_dir=str(data["mri"]), output_dir=str(out),
        **NODULE)
    rows = list(csv.reader((out / "predictions" / "predictions.csv").read_text().splitlines()))
    assert len(rows) == 1 and abs(sum(float(v) for v in rows[0][1:]) - 1.0) < 1e-5

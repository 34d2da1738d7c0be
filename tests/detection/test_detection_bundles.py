"""The detection bundles detection_xray (2D) and detection_ct (3D) end to end on tiny synthetic cohorts: training
from an encoder export (encoder learning rate 0, frozen mode) and from scratch (label fraction), exact resume after
SIGKILL, evaluation (COCO + FROC JSON), inference (pixel boxes / LUNA16 world CSV) and the model-zoo properties.

The training runs (``python -m monai.bundle run``, ResNet-10, 2-6 iterations) start together, one torch thread
each, when the first test asks for them; evaluation and inference run in this process with ``ConfigWorkflow``.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from medssl3d.cli import main
from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.engine import export_encoder
from medssl3d.networks import build_encoder

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
TIMEOUT_S = 300
TINY = {"num_workers": 0, "cache_rate": 0, "encoder": "resnet10"}
SIZE = {"detection_xray": {"image_size": 64},
        "detection_ct": {"spacing": [1.0, 1.0, 2.0], "patch_size": [32, 32, 32], "val_patch_size": [64, 64, 32],
                         "crops_per_scan": 1, "val_interval": 1}}
DATASET = {"detection_xray": "xray", "detection_ct": "ct"}
TWO_STEPS = {"epochs": 2, "epoch_length": 1, "batch_size": 2}
SIX_STEPS = {"epochs": 3, "batch_size": 2, "label_fraction": 0.5, "checkpoint_every": 2}  # 4 images: 2 per epoch
RUNS = {  # name: (bundle, overrides)
    "xray_pretrained": ("detection_xray", {"pretrained_encoder": "{root}/encoder_2d.pt", "encoder_lr": 0, **TWO_STEPS}),
    "xray_full": ("detection_xray", SIX_STEPS),
    "xray_killed": ("detection_xray", SIX_STEPS),
    "ct_frozen": ("detection_ct", {"pretrained_encoder": "{root}/encoder_3d.pt", "mode": "frozen", **TWO_STEPS}),
    "ct_scratch": ("detection_ct", TWO_STEPS),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    synthesize_cohort("xray", 12, root / "xray", size=(64, 64), progress=False)  # 9 training, 1 validation, 2 test
    datalist = json.loads((root / "xray" / "datalist.json").read_text())
    datalist["training_50pct"] = datalist["training"][:4]
    (root / "xray" / "datalist.json").write_text(json.dumps(datalist))
    synthesize_cohort("ct", 6, root / "ct", size=(64, 64, 24), spacing=(1.0, 1.0, 2.0), seed=1, progress=False)
    export_encoder(build_encoder("resnet10", 2, 1), root / "encoder_2d.pt", patch_size=[64, 64], modality="XR")
    export_encoder(build_encoder("resnet10", 3, 1), root / "encoder_3d.pt", patch_size=[32, 32, 32], modality="CT",
                   intensity_window=[-1000, 400], spacing=[1.0, 1.0, 2.0], orientation="RAS")  # window differs
    return root


def _command(name: str, root: Path, out: Path) -> list[str]:
    bundle, overrides = RUNS[name]
    args = {"dataset_dir": str(root / DATASET[bundle]), "output_dir": str(out), **TINY, **SIZE[bundle], **overrides}
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", _configs(bundle)[0]]
    for key, value in args.items():
        command += [f"--{key}", value.format(root=root) if isinstance(value, str) else json.dumps(value)]
    return command


def _configs(bundle: str, *names: str) -> list[str]:
    return [str(BUNDLES / bundle / "configs" / name) for name in ("train.yaml", *names)]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict[str, tuple[subprocess.Popen, Path]]:
    """Every training run, started at once; the `xray_killed` run is killed at its first checkpoint and started
    again with the same command."""
    out_root = tmp_path_factory.mktemp("runs")
    started = {}
    for name in RUNS:
        out = out_root / name
        started[name] = (subprocess.Popen(_command(name, data, out), env=ENV, text=True, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT), out)
    process, out = started["xray_killed"]
    deadline = time.monotonic() + TIMEOUT_S
    while not (out / "checkpoints" / "checkpoint_last.pt").exists() and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    output, _ = process.communicate()
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{output[-3000:]}"
    started["xray_killed"] = (subprocess.Popen(_command("xray_killed", data, out), env=ENV, text=True,
                                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT), out)
    yield started
    for process, _ in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


def _finished(runs, name) -> tuple[Path, str]:
    process, out = runs[name]
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, f"{name} failed:\n{output[-4000:]}"
    return out, output


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


ENCODER = "network.feature_extractor.encoder."


def test_pretrained_encoder_loaded_and_encoder_lr_applied(runs, data):
    out, output = _finished(runs, "xray_pretrained")
    assert "loaded 72 tensors, 0 missing, 0 unexpected" in output
    assert "was pretrained on" not in output, "an XR export prepared as this bundle prepares is not warned about"
    assert output.count("train_loss") >= 2 and "val_mAP" in output
    exported = _weights(data / "encoder_2d.pt")["state_dict"]
    final = _weights(out / "model_final.pt")
    parameters = [n for n, _ in build_encoder("resnet10", 2, 1).named_parameters()]
    assert all(torch.equal(final[ENCODER + n], exported[n]) for n in parameters), "encoder_lr 0 yet the encoder moved"
    assert (out / "model.pt").is_file()


def test_frozen_3d_encoder_keeps_weights_and_batchnorm(runs, data):
    out, output = _finished(runs, "ct_frozen")
    assert "loaded 72 tensors" in output and "val_froc" in output
    assert output.count("was pretrained on CT window [-1000, 400] at 1x1x2 mm RAS; this run prepares CT window "
                        "[-1024, 300] at 1x1x2 mm RAS (differs in intensity_window)") == 1, output[-3000:]
    exported = _weights(data / "encoder_3d.pt")["state_dict"]
    final = _weights(out / "model_final.pt")
    for name, value in exported.items():  # parameters and BatchNorm running statistics
        assert torch.equal(final[ENCODER + name], value), f"frozen encoder changed {name}"


def test_killed_run_resumes_to_the_same_weights(runs):
    full_out, full_output = _finished(runs, "xray_full")
    killed_out, killed_output = _finished(runs, "xray_killed")
    assert "medssl3d.transfer:" not in full_output, "scratch runs load no encoder export"
    assert "Epoch: 3/3, Iter: 2/2" in full_output and "Iter: 3/2" not in full_output  # 4 images of training_50pct
    assert "resumed from" in killed_output.lower() and "Epoch: 1/3, Iter: 1/2" not in killed_output, killed_output[-6000:]
    full, resumed = _weights(full_out / "model_final.pt"), _weights(killed_out / "model_final.pt")
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full), "the resumed run ended on other weights"


def _workflow(bundle, extra, kind, root, out, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(config_file=_configs(bundle, *extra),
                              meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"), workflow_type=kind,
                              dataset_dir=str(root / DATASET[bundle]), output_dir=str(out), **TINY, **SIZE[bundle],
                              **overrides)
    workflow.initialize()
    assert workflow.check_properties() == []
    return workflow


@pytest.mark.parametrize("name,bundle", [("xray_pretrained", "detection_xray"), ("ct_scratch", "detection_ct")])
def test_evaluate_and_inference_write_metrics_and_boxes(runs, data, name, bundle):
    out, _ = _finished(runs, name)
    _workflow(bundle, ["evaluate.yaml"], "infer", data, out, eval_key="test").run()
    metrics = json.loads((out / "metrics_test.json").read_text())
    assert metrics["datalist_key"] == "test" and metrics["num_images"] == 2 if bundle == "detection_xray" else 1
    assert {"mAP", "mAR", "froc", "sensitivity_at_1fp", "AP_50" if bundle == "detection_xray" else "AP_10"} <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in ("mAP", "mAR", "froc"))

    _workflow(bundle, ["inference.yaml"], "infer", data, out, infer_key="test", min_probability=0.0).run()
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    detections = json.loads((out / "predictions.json").read_text())
    datalist = json.loads((data / DATASET[bundle] / "datalist.json").read_text())
    ids = {Path(item["image"]).name.split(".")[0] for item in datalist["test"]}
    assert set(detections) == ids and len(rows) == sum(len(v) for v in detections.values()) > 0
    if bundle == "detection_xray":
        assert list(rows[0]) == ["image_id", "class_name", "x_min", "y_min", "x_max", "y_max", "probability"]
        boxes = np.array([[float(r[k]) for k in ("x_min", "y_min", "x_max", "y_max")] for r in rows])
        assert np.all(boxes[:, 2:] > boxes[:, :2]) and boxes.min() >= -1 and boxes.max() <= 65  # stored-image pixels
    else:
        assert list(rows[0]) == ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "probability"]
        for row in rows:  # world LPS mm inside the scan they were found in
            image = nib.load(data / "ct" / "imagesTr" / f"{row['seriesuid']}.nii.gz")
            ras = np.array([-float(row["coordX"]), -float(row["coordY"]), float(row["coordZ"])])
            ijk = np.linalg.solve(image.affine[:3, :3], ras - image.affine[:3, 3])
            assert np.all(ijk > -2) and np.all(ijk < np.array(image.shape) + 1), f"{row} lies outside its scan"

    # the command scores the run's own files (world mm / stored pixels) as the bundle scored it (voxels / resized
    # pixels): IoU does not change when every box is scaled alike per axis
    table = data / DATASET[bundle] / ("boxes.csv" if bundle == "detection_xray" else "nodules.csv")
    assert main(["evaluate", "--detections", str(out), "--boxes", str(table), "--out", str(out / "report"),
                 "--datalist", str(data / DATASET[bundle] / "datalist.json"), "--test-key", "test"]) == 0
    scored = json.loads((out / "report" / "metrics.json").read_text())["metrics"]["detection"][out.name]
    assert scored["mAP"] == pytest.approx(metrics["mAP"], abs=0.02)
    assert scored["mAR"] == pytest.approx(metrics["mAR"], abs=0.02)


@pytest.mark.parametrize("bundle", sorted(SIZE))
def test_model_zoo_train_properties(data, tmp_path, bundle):
    train = _workflow(bundle, [], "train", data, tmp_path)
    assert len(train.train_dataset) == (9 if bundle == "detection_xray" else 4)

"""Downstream CT bundles (nodule_cls_ct, seg_ct) end to end on a tiny synthetic cohort.

An encoder export is written from a random ResNet-10 (no pretraining run). Each bundle trains 2 iterations with
``--pretrained_encoder`` and from scratch; the four training runs start when the module starts, one torch thread
each: cls_scratch as a ``python -m monai.bundle run`` command (the command-line path), the other three one after
another in ONE further process (``monai.bundle.run``, which saves an interpreter start and the imports per run),
each run's printed output kept apart for its checks. The evaluate and inference configs then run in this process
(``monai.bundle.run``, the function behind ``python -m monai.bundle run``) on the pretrained runs' models.
"""

from __future__ import annotations

import csv
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, run, verify_net_in_out
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.engine import export_encoder, read_encoder_export
from medssl3d.networks import build_encoder
from medssl3d.prep.datalist import make_datalist

from .test_pretraining_bundles import bundle_kwargs, finished_run_in_one_process, start_runs_in_one_process

pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file")  # MONAI's notice on trusting configs

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ROOT / "bundles"
TIMEOUT_S = 300
COMMON = ["--num_workers", "0", "--cache_rate", "0", "--encoder", "resnet10"]
SEG = ["--crop_size", "[32,32,32]", "--decoder_channels", "[32,16,16,8,8]"]
# seg: the 50 % subset holds 2 of the 4 training volumes -> 2 iterations of 2 crops in one epoch
SEG_TRAIN = [*SEG, "--datalist", "{ct}/datalist_fractions.json", "--label_fraction", "0.5", "--epochs", "1",
             "--batch_size", "1", "--crops_per_volume", "2"]
# nodules: 8 patches (75 % subset) or 10 (all), batches of 4 without the last partial one -> 2 iterations
CLS_TRAIN = ["--epochs", "1", "--batch_size", "4"]
TRAINS = {  # name: (bundle, cohort, overrides, pretrained)
    "seg_pretrained": ("seg_ct", "ct", SEG_TRAIN, True),
    "seg_scratch": ("seg_ct", "ct", SEG_TRAIN, False),
    "cls_pretrained": ("nodule_cls_ct", "nodules", [*CLS_TRAIN, "--label_fraction", "0.75"], True),
    "cls_scratch": ("nodule_cls_ct", "nodules", CLS_TRAIN, False),
}
COMMAND = "cls_scratch"  # run as a command; the other TRAINS in one process


def _configs(bundle: str, *names: str) -> list[str]:
    return [str(BUNDLES / bundle / "configs" / f"{name}.yaml") for name in names]


def _overrides(args: list[str]) -> dict:
    """``["--key", "value", ...]`` -> ``{"key": parsed value}`` as the command line parses them."""
    return {key[2:]: json.loads(value) if value[:1] in "[0123456789" else value for key, value in
            zip(args[::2], args[1::2])}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """CT cohort (+ a datalist with a 50 % label fraction), nodule patches (75 % fraction), encoder export."""
    root = tmp_path_factory.mktemp("downstream")
    synthesize_cohort("ct", 6, root / "ct", size=(64, 64, 32), progress=False)
    datalist = json.loads((root / "ct" / "datalist.json").read_text())
    items = datalist["training"] + datalist["validation"] + datalist["test"]
    with_fractions = make_datalist(items, (0.7, 0.1, 0.2), [0.5], seed=0)
    (root / "ct" / "datalist_fractions.json").write_text(json.dumps(with_fractions))
    extract = runpy.run_path(str(ROOT / "data_prep" / "extract_nodule_patches.py"))["main"]
    code = extract([str(root / "ct" / "nodules.csv"), str(root / "ct" / "imagesTr"), "--output",
                    str(root / "nodules"), "--patch-size", "32", "32", "32", "--spacing", "1", "1", "1",
                    "--label-fractions", "0.75"])
    assert code == 0
    torch.manual_seed(1234)  # not the bundles' seed: a scratch run must not start from these weights
    export = export_encoder(build_encoder("resnet10"), root / "encoder.pt", patch_size=[32, 32, 32],
                            spacing=[1.0, 1.0, 1.0], orientation="RAS", intensity_window=[-1000, 400])
    return {"ct": root / "ct", "nodules": root / "nodules", "export": export, "root": root}


@pytest.fixture(scope="module", autouse=True)
def trains(data) -> dict[str, tuple[subprocess.Popen, Path]]:
    """The four training runs, started when the module starts; value: (process, output dir)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started, jobs = {}, {}
    for name, (bundle, cohort, overrides, pretrained) in TRAINS.items():
        out = data["root"] / name
        args = ["--dataset_dir", str(data[cohort]), "--output_dir", str(out), *COMMON,
                *(arg.format(ct=data["ct"]) for arg in overrides)]
        if pretrained:
            args += ["--pretrained_encoder", str(data["export"])]
        if name == COMMAND:
            command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", *_configs(bundle, "train"), *args]
            started[name] = (subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT), out)
        else:
            jobs[name] = {"config_file": _configs(bundle, "train")[0], **bundle_kwargs(args)}
    results = data["root"] / "results.json"
    started["in_one_process"] = (start_runs_in_one_process(jobs, results, env), results)
    yield started
    for process, _ in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _csv(path: Path):
    return csv.reader(_lines(path))


def _finished(trains, name: str) -> tuple[str, Path]:
    """Wait for training run ``name``, assert it succeeded; what it printed and its output dir."""
    if name != COMMAND:
        process, results = trains["in_one_process"]
        return finished_run_in_one_process(process, results, name, 3 * TIMEOUT_S), results.parent / name
    process, out = trains[name]
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, f"{name} failed:\n{output[-4000:]}"
    return output, out


def test_candidate_outside_its_volume_is_refused(data, tmp_path, capsys):
    csv_path = tmp_path / "candidates.csv"
    header, inside = (data["ct"] / "nodules.csv").read_text().splitlines()[:2]  # a candidate inside ct_0000
    outside = dict(zip(header.split(","), inside.split(",")), seriesuid="ct_0000", coordX="500", coordY="0", coordZ="0")
    csv_path.write_text("\n".join([header, inside, ",".join(outside.values())]) + "\n")
    extract = runpy.run_path(str(ROOT / "data_prep" / "extract_nodule_patches.py"))["main"]
    code = extract([str(csv_path), str(data["ct"] / "imagesTr"), "--output", str(tmp_path / "out")])
    message = capsys.readouterr().err
    assert code != 0 and "row 3" in message and "outside volume" in message and "ct_0000" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bundle, names, workflow_type", [
    ("seg_ct", ("train",), "train"), ("seg_ct", ("train", "evaluate"), "eval"), ("seg_ct", ("inference",), "infer"),
    ("nodule_cls_ct", ("train",), "train"), ("nodule_cls_ct", ("train", "evaluate"), "eval"),
    ("nodule_cls_ct", ("inference",), "infer"),
])
def test_model_zoo_properties(data, tmp_path, bundle, names, workflow_type):
    workflow = ConfigWorkflow(
        config_file=_configs(bundle, *names), meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"),
        workflow_type=workflow_type, dataset_dir=str(data["ct" if bundle == "seg_ct" else "nodules"]),
        output_dir=str(tmp_path), encoder="resnet10", num_workers=0, cache_rate=0,
    )
    workflow.initialize()
    assert workflow.check_properties() == []


@pytest.mark.parametrize("bundle", ["seg_ct", "nodule_cls_ct"])
@pytest.mark.parametrize("config", ["train", "inference"])
def test_verify_net_in_out(bundle, config):
    configs = BUNDLES / bundle / "configs"
    verify_net_in_out("network_def", meta_file=str(configs / "metadata.json"),
                      config_file=str(configs / f"{config}.yaml"), device="cpu")


@pytest.mark.parametrize("name", sorted(TRAINS))
def test_training_runs(trains, data, name):
    output, out = _finished(trains, name)
    assert (out / "model.pt").is_file() and (out / "model_final.pt").is_file()
    steps = set()
    for events in out.glob("tensorboard/events.out.tfevents.*"):
        scalars = EventAccumulator(str(events)).Reload()
        if "train_loss" in scalars.Tags()["scalars"]:
            steps |= {s.step for s in scalars.Scalars("train_loss")}
    assert steps == {1, 2}  # seg: the label fraction's 2 volumes, not all 4
    exported, _ = read_encoder_export(data["export"])
    trained = torch.load(out / "model_final.pt", map_location="cpu", weights_only=True)
    distance = (trained["encoder.conv1.weight"] - exported["conv1.weight"]).abs().max().item()
    if TRAINS[name][3]:
        assert "loaded 72 tensors, 0 missing, 0 unexpected" in output
        assert distance < 1e-3  # 2 AdamW steps at encoder_lr 1e-4 from the export
    else:
        assert "medssl3d.transfer" not in output
        assert distance > 1e-2


def test_seg_evaluate_writes_dice(trains, data):
    _, out = _finished(trains, "seg_pretrained")
    run(config_file=_configs("seg_ct", "train", "evaluate"), dataset_dir=str(data["ct"]), output_dir=str(out),
        **_overrides([*COMMON, *SEG]))
    metrics = dict(_csv(out / "eval" / "metrics.csv"))
    assert 0.0 <= float(metrics["test_mean_dice"]) <= 1.0
    rows = list(csv.DictReader(_lines(out / "eval" / "test_mean_dice_raw.csv")))
    test = json.loads((data["ct"] / "datalist.json").read_text())["test"]
    assert [Path(r["filename"]).name for r in rows] == [Path(i["image"]).name for i in test]
    assert set(rows[0]) == {"filename", "class0", "class1", "mean"}  # lung and nodule Dice


def test_seg_inference_keeps_input_geometry(trains, data):
    _, out = _finished(trains, "seg_pretrained")
    run(config_file=_configs("seg_ct", "inference"), dataset_dir=str(data["ct"]), output_dir=str(out),
        **_overrides([*COMMON, *SEG]))
    test = json.loads((data["ct"] / "datalist.json").read_text())["test"]
    assert test
    for item in test:
        image = nib.load(data["ct"] / item["image"])
        mask = nib.load(out / "predictions" / Path(item["image"]).name.replace(".nii.gz", "_seg.nii.gz"))
        assert mask.shape == image.shape
        np.testing.assert_allclose(mask.affine, image.affine, atol=1e-4)
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}


def test_cls_evaluate_writes_auc_accuracy_f1(trains, data):
    _, out = _finished(trains, "cls_pretrained")
    run(config_file=_configs("nodule_cls_ct", "train", "evaluate"), dataset_dir=str(data["nodules"]),
        output_dir=str(out), **_overrides(COMMON))
    metrics = {k: float(v) for k, v in _csv(out / "eval" / "metrics.csv")}
    assert set(metrics) == {"test_auc", "test_accuracy", "test_f1"}
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and 0.0 <= metrics["test_f1"] <= 1.0
    test = json.loads((data["nodules"] / "datalist.json").read_text())["test"]
    assert np.isnan(metrics["test_auc"]) or 0.0 <= metrics["test_auc"] <= 1.0
    assert len({item["class"] for item in test}) < 2 or not np.isnan(metrics["test_auc"])


def test_cls_inference_writes_probabilities(trains, data):
    _, out = _finished(trains, "cls_pretrained")
    run(config_file=_configs("nodule_cls_ct", "inference"), dataset_dir=str(data["nodules"]), output_dir=str(out),
        **_overrides(COMMON))
    rows = list(_csv(out / "predictions" / "predictions.csv"))
    test = json.loads((data["nodules"] / "datalist.json").read_text())["test"]
    assert [Path(r[0]).name for r in rows] == [Path(i["image"]).name for i in test]
    probs = np.array([[float(v) for v in r[1:]] for r in rows])
    assert probs.shape == (len(test), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

"""The 2D classification bundles xray_cls and histology_cls end to end on tiny synthetic cohorts and fake MedMNIST
folders: training from an encoder export and from scratch, evaluation (metrics JSON), inference (predictions
CSV), model-zoo properties and ``verify_net_in_out``.

The four training runs (2-4 iterations each, ResNet-10) start when the first test asks for them, one torch thread
each: xray_pretrained as a ``python -m monai.bundle run`` command (the command-line path), the other three one after
another in ONE further process (``monai.bundle.run``, which saves an interpreter start and the imports per run),
each run's printed output kept apart for its checks; evaluation and inference then run in this process on their
outputs with MONAI's ``ConfigWorkflow`` (what ``monai.bundle run`` does, without a second start-up).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, verify_net_in_out
from sklearn.metrics import roc_auc_score

from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.engine import export_encoder
from medssl3d.networks import build_encoder
from medssl3d.prep.medmnist import convert_medmnist

from .test_pretraining_bundles import bundle_kwargs, finished_run_in_one_process, start_runs_in_one_process

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
TIMEOUT_S = 240
TINY = ["--num_workers", "0", "--cache_rate", "0", "--encoder", "resnet10"]
SIZE = {"xray_cls": {"image_size": 64}, "histology_cls": {"tile_size": [48, 48]}}  # synthetic cohorts
MEDMNIST_SIZE = {"xray_cls": {"image_size": 28}, "histology_cls": {"tile_size": [28, 28]}}
CHANNELS = {"xray_cls": 1, "histology_cls": 3}
FAKE_TRAIN = 40  # fake MedMNIST training images; label fraction 0.5 keeps 20 = 2 batches of 10


def _args(overrides: dict, root: Path) -> list[str]:
    """Command-line overrides: strings (paths, with {root} filled in) as they are, other values as JSON."""
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", value.format(root=root) if isinstance(value, str) else json.dumps(value)]
    return args


def _configs(bundle: str, *names: str) -> list[str]:
    return [str(BUNDLES / bundle / "configs" / name) for name in ("train.yaml", *names)]


def _fake_medmnist(path: Path, rgb: bool) -> Path:
    rng = np.random.default_rng(1)
    arrays = {}
    for prefix, n in (("train", FAKE_TRAIN), ("val", 6), ("test", 6)):
        arrays[f"{prefix}_images"] = rng.integers(0, 256, (n, 28, 28, 3) if rgb else (n, 28, 28), dtype=np.uint8)
        arrays[f"{prefix}_labels"] = (np.arange(n) % 2).astype(np.uint8)[:, None]
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    synthesize_cohort("xray", 12, root / "xray", size=(64, 64), progress=False)  # 9 training, 1 validation, 2 test
    synthesize_cohort("histology", 12, root / "histology", size=(48, 48), progress=False)
    convert_medmnist(_fake_medmnist(root / "grey.npz", False), root / "medmnist_grey", label_fractions=(0.5,))
    convert_medmnist(_fake_medmnist(root / "rgb.npz", True), root / "medmnist_rgb", label_fractions=(0.5,))
    export_encoder(build_encoder("resnet10", 2, 1), root / "encoder_1ch.pt", patch_size=[64, 64])
    export_encoder(build_encoder("resnet10", 2, 3), root / "encoder_3ch.pt", patch_size=[48, 48])
    return {"root": root}


TWO_STEPS = {"epochs": 2, "epoch_length": 1, "batch_size": 2}  # 2 iterations of 2 images
# name: (bundle, dataset, overrides)
RUNS = {
    # pretrained, encoder LR 0: the encoder's parameters must stay the export's while the head trains
    "xray_pretrained": ("xray_cls", "xray", {"pretrained_encoder": "{root}/encoder_1ch.pt", "encoder_lr": 0,
                                             **SIZE["xray_cls"], **TWO_STEPS}),
    # pretrained linear probe: encoder frozen, BatchNorm statistics included
    "histology_frozen": ("histology_cls", "histology", {"pretrained_encoder": "{root}/encoder_3ch.pt",
                                                        "mode": "frozen", **SIZE["histology_cls"], **TWO_STEPS}),
    # from scratch on fake MedMNIST at 28 px, on the nested 50 % list: 20 images = 2 iterations of 10
    "xray_medmnist": ("xray_cls", "medmnist_grey", {**MEDMNIST_SIZE["xray_cls"], "label_fraction": 0.5,
                                                     "epochs": 1, "batch_size": 10}),
    "histology_medmnist": ("histology_cls", "medmnist_rgb", {**MEDMNIST_SIZE["histology_cls"], "mode": "partial",
                                                             "label_fraction": 0.5, "epochs": 1, "batch_size": 10}),
}


COMMAND = "xray_pretrained"  # run as a command; the other RUNS in one process


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict[str, tuple[subprocess.Popen, Path]]:
    """Every training run, started at once; value: (process, output dir) of the command and, under
    ``"in_one_process"``, (process, results file) of the other runs, their outputs in ``<results dir>/<name>``."""
    root = data["root"]
    out_root = tmp_path_factory.mktemp("runs")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    bundle, dataset, overrides = RUNS[COMMAND]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", _configs(bundle)[0],
               "--dataset_dir", str(root / dataset), "--output_dir", str(out_root / COMMAND), *TINY,
               *_args(overrides, root)]
    started = {COMMAND: (subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT), out_root / COMMAND)}
    jobs = {
        name: {"config_file": _configs(bundle)[0], "dataset_dir": str(root / dataset),
               "output_dir": str(out_root / name), **bundle_kwargs(TINY),
               **{key: value.format(root=root) if isinstance(value, str) else value
                  for key, value in overrides.items()}}
        for name, (bundle, dataset, overrides) in RUNS.items() if name != COMMAND
    }
    started["in_one_process"] = (start_runs_in_one_process(jobs, out_root / "results.json", env),
                                 out_root / "results.json")
    yield started
    for process, _ in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


def _finished(runs, name) -> tuple[Path, str]:
    """Wait for run ``name``, assert it succeeded; its output dir and what it printed."""
    if name != COMMAND:
        process, results = runs["in_one_process"]
        return results.parent / name, finished_run_in_one_process(process, results, name, 3 * TIMEOUT_S)
    process, out = runs[name]
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, f"{name} failed:\n{output[-4000:]}"
    return out, output


def _encoder_parameters(bundle: str, checkpoint: Path) -> dict[str, torch.Tensor]:
    """The encoder's trainable tensors (not the BatchNorm statistics) in a classifier checkpoint, by name."""
    weights = torch.load(checkpoint, map_location="cpu", weights_only=True)
    names = [name for name, _ in build_encoder("resnet10", 2, CHANNELS[bundle]).named_parameters()]
    return {name: weights[f"encoder.{name}"] for name in names}


def test_pretrained_encoder_loaded_and_encoder_lr_applied(runs, data):
    out, output = _finished(runs, "xray_pretrained")
    assert "loaded 72 tensors, 0 missing, 0 unexpected" in output
    assert output.count("train_loss") >= 2
    exported = torch.load(data["root"] / "encoder_1ch.pt", weights_only=True)["state_dict"]
    for checkpoint in ("model.pt", "model_final.pt"):
        for name, value in _encoder_parameters("xray_cls", out / checkpoint).items():
            assert torch.equal(value, exported[name]), f"encoder_lr 0 yet {name} moved ({checkpoint})"
    # one validation image: its AUC is NaN, never "better", so model.pt stays at epoch 1 and the head has moved since
    first = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    final = torch.load(out / "model_final.pt", map_location="cpu", weights_only=True)
    heads = [k for k in final if k.startswith("head.")]
    assert heads and all(not torch.equal(first[k], final[k]) for k in heads if final[k].is_floating_point())


def test_frozen_mode_keeps_encoder_and_batchnorm(runs, data):
    out, output = _finished(runs, "histology_frozen")
    assert "loaded 72 tensors" in output
    exported = torch.load(data["root"] / "encoder_3ch.pt", weights_only=True)["state_dict"]
    final = torch.load(out / "model_final.pt", map_location="cpu", weights_only=True)
    for name, value in exported.items():  # parameters and BatchNorm running statistics
        assert torch.equal(final[f"encoder.{name}"], value), f"frozen encoder changed {name}"


@pytest.mark.parametrize("name", ["xray_medmnist", "histology_medmnist"])
def test_scratch_on_medmnist_label_fraction(runs, name):
    out, output = _finished(runs, name)
    assert "medssl3d.transfer:" not in output, "scratch runs load no encoder export"
    assert "Iter: 2/2" in output and "Iter: 3/" not in output, "label_fraction 0.5 must train on 20 of 40 images"
    assert (out / "model.pt").is_file() and (out / "model_final.pt").is_file()


def _workflow(bundle, extra, kind, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(config_file=_configs(bundle, *extra),
                              meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"), workflow_type=kind,
                              num_workers=0, cache_rate=0, encoder="resnet10", **overrides)
    workflow.initialize()
    return workflow


@pytest.mark.parametrize("name,bundle,dataset", [("xray_pretrained", "xray_cls", "xray"),
                                                 ("histology_frozen", "histology_cls", "histology")])
def test_evaluate_and_inference_agree(runs, data, name, bundle, dataset):
    out, _ = _finished(runs, name)
    common = {"dataset_dir": str(data["root"] / dataset), "output_dir": str(out), **SIZE[bundle]}
    evaluation = _workflow(bundle, ["evaluate.yaml"], "infer", eval_key="training", **common)
    assert evaluation.check_properties() == []
    evaluation.run()
    metrics = json.loads((out / "metrics_training.json").read_text())
    assert metrics["datalist_key"] == "training" and metrics["num_images"] == 9
    assert set(metrics) >= {"auc", "accuracy", "f1_weighted"}

    inference = _workflow(bundle, ["inference.yaml"], "infer", infer_key="training", **common)
    assert inference.check_properties() == []
    inference.run()
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    items = json.loads((data["root"] / dataset / "datalist.json").read_text())["training"]
    assert [Path(row[0]).name for row in rows] == [Path(item["image"]).name for item in items]
    probs = np.array([[float(v) for v in row[1:]] for row in rows])
    labels = np.array([item["class"] for item in items])
    assert probs.shape == (9, 2) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    # the evaluation's metrics are those of the inference's probabilities: same weights, same preprocessing
    assert metrics["accuracy"] == pytest.approx(float(np.mean(probs.argmax(axis=1) == labels)))
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, probs[:, 1]), abs=1e-6)


@pytest.mark.parametrize("bundle", sorted(SIZE))
def test_model_zoo_properties_and_net_in_out(data, tmp_path, bundle):
    dataset = "xray" if bundle == "xray_cls" else "histology"
    train = _workflow(bundle, [], "train", dataset_dir=str(data["root"] / dataset), output_dir=str(tmp_path))
    assert train.check_properties() == []
    assert train.max_epochs == 50 and len(train.train_dataset) == 9
    meta = str(BUNDLES / bundle / "configs" / "metadata.json")
    for extra in ([], ["evaluate.yaml"], ["inference.yaml"]):
        verify_net_in_out(net_id="network_def", meta_file=meta, config_file=_configs(bundle, *extra))


def _chain(error: BaseException) -> str:
    """The messages of an exception and its causes (MONAI wraps a config expression's error)."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__
    return "\n".join(messages)


def test_configuration_errors_are_clear(data, tmp_path):
    common = {"dataset_dir": str(data["root"] / "medmnist_grey"), "output_dir": str(tmp_path)}
    workflow = _workflow("xray_cls", [], "train", label_fraction=0.3, **common)
    with pytest.raises(Exception) as error:
        _ = workflow.train_dataset
    message = _chain(error.value)
    assert "has no list 'training_30pct'; its lists: training, validation, test, training_50pct" in message
    assert "image_shape" not in message  # only lists of items are offered
    with pytest.raises(Exception) as error:  # densenet121 on 28 px MedMNIST: refused before training
        ConfigWorkflow(config_file=_configs("xray_cls"), workflow_type="train", encoder="densenet121",
                       image_size=28, **common).initialize()
    assert "every spatial side must be at least 29" in _chain(error.value)
    with pytest.raises(Exception) as error:  # a grey export in the RGB bundle
        ConfigWorkflow(config_file=_configs("histology_cls"), workflow_type="train", encoder="resnet10",
                       pretrained_encoder=str(data["root"] / "encoder_1ch.pt"), **common).initialize()
    assert "encoder_1ch.pt': in_channels is 1 but 3 was asked for" in _chain(error.value)

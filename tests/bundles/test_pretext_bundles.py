"""Run the pretext-task bundles (Rubik's cube+, rotation, masked image modelling, multi-task, contrastive
histology) and the MRI modality override end to end with MONAI's bundle runner on tiny synthetic cohorts.

As in ``test_pretraining_bundles.py``: each run trains 2 iterations (2 epochs of one batch) on tiny inputs with a
ResNet-10 and must leave full-state checkpoints, encoder exports that load, and TensorBoard events; all runs start
together, one torch thread each, when the module's first test asks for them. rubik_ct, multitask_ct and a run with
a misspelt task are ``python -m monai.bundle run`` commands; rotation_ct, masked_ct, contrastive_histology, the MRI
override and the methods without a bundle of their own (through multitask_ct, each alone: ``tasks: [x]``) run one
after another in ONE further process (``start_runs_in_one_process``, ``monai.bundle.run``), which saves an
interpreter start and the imports per run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.engine import load_checkpoint, load_encoder_export

from .test_pretraining_bundles import (
    bundle_kwargs,
    check_outputs,
    finished_run_in_one_process,
    start_runs_in_one_process,
)

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ROOT / "bundles"
MRI_OVERRIDE = ROOT / "configs" / "modality" / "mri.yaml"
TIMEOUT_S = 600
TINY = ["--epochs", "2", "--batch_size", "1", "--num_workers", "0", "--cache_rate", "0", "--checkpoint_every", "1",
        "--log_every", "1", "--encoder", "resnet10", "--crops_per_volume", "2"]
CUBE = ["--crop_size", "[24,24,24]", "--min_input_size", "16"]

# name: (bundle, extra config files, cohort, overrides, spatial dims, channels, patch size in the export)
CASES = {
    # 40x40x24 crops with jitter 1 give 19x19x11 sub-cubes
    "rubik_ct": ("rubik_ct", [], "ct", ["--crop_size", "[40,40,24]", "--rubik#jitter", "1", "--min_input_size", "8"],
                 3, 1, [19, 19, 11]),
    "rotation_ct": ("rotation_ct", [], "ct", [*CUBE, "--rotation_classes", "24"], 3, 1, [24, 24, 24]),
    "masked_ct": ("masked_ct", [], "ct", ["--crop_size", "[32,32,16]", "--min_input_size", "16"], 3, 1, [32, 32, 16]),
    "multitask_ct": ("multitask_ct", [], "ct", [*CUBE, "--weighting", "uncertainty"], 3, 1, [24, 24, 24]),
    "contrastive_histology": ("contrastive_histology", [], "histology",
                              ["--batch_size", "2", "--tile_size", "[64,64]", "--method", "simclr"], 2, 3, [64, 64]),
    "genesis_mri": ("genesis_ct", [MRI_OVERRIDE], "mri", ["--crop_size", "[32,32,16]", "--min_input_size", "16"],
                    3, 1, [32, 32, 16]),
}
PRETEXT_BUNDLES = ["rubik_ct", "rotation_ct", "masked_ct", "multitask_ct", "contrastive_histology"]
# CASES run one after another in the process of the single tasks (an interpreter start and the imports, ~5 s of
# CPU, saved per run); the others, and the misspelt task, run as `python -m monai.bundle run` commands
IN_ONE_PROCESS = ["rotation_ct", "masked_ct", "contrastive_histology", "genesis_mri"]
# the methods without a bundle of their own, each alone through multitask_ct on 24^3 crops: task: (overrides, loss
# parts). The puzzles run on 27^3 crops: jitter 1 gives 8^3 patches (27 // 3 - 1), the smallest a 3D ResNet takes,
# hence puzzle_min_input_size 8.
PUZZLE = ["--crop_size", "[27,27,27]", "--puzzle_min_input_size", "8"]
SINGLE_TASKS = {
    "jigsaw": (["--jigsaw#jitter", "1", *PUZZLE], {"loss/jigsaw/jigsaw"}),
    "relative_location": (["--relative_location#jitter", "1", *PUZZLE], {"loss/relative_location/relative_location"}),
    "patch_swap": (["--patch_swapping#num_swaps", "4"], {"loss/patch_swap/restoration"}),
    "position": (["--position_prediction#n_bins", "4"], {"loss/position/position", "loss/position/position_bin"}),
    "scan_matching": ([], {"loss/scan_matching/same_scan"}),
}
# one task of each kind multitask_ct serves (the two-view methods share the views), all in one batch; the masked
# task's patches must tile the crop: 8^3; the puzzles' 8^3 patches (24 // 3 - 0) take jitter 0
ALL_TASKS = ["genesis", "masked", "patch_swap", "rotation", "jigsaw", "relative_location", "position",
             "scan_matching", "simclr"]
ALL_TASKS_OVERRIDES = {"jigsaw#jitter": 0, "relative_location#jitter": 0, "puzzle_min_input_size": 8,
                       "patch_swapping#num_swaps": 4, "masking#patch_size": [8, 8, 8]}


def _command(bundle: str, extra: list[Path], dataset_dir: Path, output_dir: Path, overrides: list[str]) -> list[str]:
    configs = [str(BUNDLES / bundle / "configs" / "train.yaml"), *map(str, extra)]
    config_file = configs[0] if len(configs) == 1 else repr(configs)
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_file, "--dataset_dir",
            str(dataset_dir), "--output_dir", str(output_dir), *TINY, *overrides]


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cohorts")
    synthesize_cohort("ct", 3, root / "ct", size=(64, 64, 32), progress=False)
    synthesize_cohort("mri", 3, root / "mri", size=(32, 32, 32), progress=False)
    synthesize_cohort("histology", 4, root / "histology", size=(64, 64), progress=False)
    return {"ct": root / "ct", "mri": root / "mri", "histology": root / "histology"}


@pytest.fixture(scope="module")
def runs(cohorts, tmp_path_factory) -> dict[str, tuple[subprocess.Popen, Path]]:
    """Every bundle run (plus a multi-task run with a misspelt task), started at once; value: (process, output dir)."""
    root = tmp_path_factory.mktemp("runs")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    jobs = {name: (bundle, extra, cohort, overrides) for name, (bundle, extra, cohort, overrides, *_) in CASES.items()
            if name not in IN_ONE_PROCESS}
    jobs["unknown_task"] = ("multitask_ct", [], "ct", [*CUBE, "--tasks", "[genesis,rotatoin]"])
    started = {}
    for name, (bundle, extra, cohort, overrides) in jobs.items():
        out = root / name / "models"
        process = subprocess.Popen(_command(bundle, extra, cohorts[cohort], out, overrides), env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
        started[name] = (process, out)
    (root / "in_one_process").mkdir()
    results = root / "in_one_process" / "results.json"
    one_process = {}
    for name in IN_ONE_PROCESS:
        bundle, extra, cohort, overrides, *_ = CASES[name]
        configs = [str(BUNDLES / bundle / "configs" / "train.yaml"), *map(str, extra)]
        one_process[name] = {"config_file": configs if extra else configs[0], "dataset_dir": str(cohorts[cohort]),
                             "output_dir": str(results.parent / name / "models"), **bundle_kwargs([*TINY, *overrides])}
    for name, (overrides, _) in SINGLE_TASKS.items():
        one_process[name] = {"config_file": str(BUNDLES / "multitask_ct" / "configs" / "train.yaml"),
                             "dataset_dir": str(cohorts["ct"]), "output_dir": str(results.parent / name / "models"),
                             **bundle_kwargs([*TINY, *CUBE, *overrides, "--tasks", repr([name])])}
    started["in_one_process"] = (start_runs_in_one_process(one_process, results, env), results)
    yield started
    for process, _ in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=TIMEOUT_S)
    return process.returncode, output


def _finished_run(runs, name: str) -> tuple[Path, dict]:
    """Assert run ``name`` trained 2 iterations and left checkpoints, exports and TensorBoard scalars."""
    _, _, _, _, spatial_dims, channels, patch_size = CASES[name]
    if name in IN_ONE_PROCESS:
        process, results = runs["in_one_process"]
        finished_run_in_one_process(process, results, name, 2 * TIMEOUT_S)
        out = results.parent / name / "models"
    else:
        process, out = runs[name]
        code, output = _finish(process)
        assert code == 0, f"{name} failed:\n{output[-4000:]}"

    scalars = check_outputs(out, spatial_dims, channels, patch_size)
    assert [s.step for s in scalars.Scalars("loss")] == [1, 2]
    _, metadata = load_encoder_export(out / "encoder.pt", spatial_dims, channels, "resnet10")
    return out, {"metadata": metadata, "tags": set(scalars.Tags()["scalars"])}


@pytest.mark.parametrize("name", ["rubik_ct", "rotation_ct", "masked_ct", "contrastive_histology"])
def test_bundle_trains_and_exports(runs, name):
    _, found = _finished_run(runs, name)
    parts = {"rubik_ct": {"loss/permutation", "loss/rotation", "loss/mask"}, "rotation_ct": {"loss/rotation"},
             "masked_ct": {"loss/restoration"}, "contrastive_histology": set()}[name]
    assert parts <= found["tags"]
    if name == "contrastive_histology":
        assert found["metadata"]["intensity_window"] == [0, 255] and found["metadata"]["spacing"] is None
    else:
        assert found["metadata"]["intensity_window"] == [-1000, 1000]


def test_multitask_bundle_trains_every_task_on_one_encoder(runs):
    out, found = _finished_run(runs, "multitask_ct")
    assert {"loss/genesis", "loss/rotation", "loss/simclr"} <= found["tags"]
    assert found["metadata"]["method"] == "MultiTask(genesis+rotation+simclr, uncertainty)"
    assert found["metadata"]["spacing"] == [1.5, 1.5, 1.5]
    state = load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")
    assert state["method"] == "MultiTask"
    log_vars = state["model"]["log_vars"]
    assert log_vars.shape == (3,) and not torch.equal(log_vars, torch.zeros(3)), "uncertainty weights not learned"


@pytest.mark.parametrize("task", sorted(SINGLE_TASKS))
def test_multitask_bundle_runs_each_task_alone(runs, task):
    """`--tasks "['<task>']"`: 2 iterations, a finite loss with the task's parts, an encoder export that loads."""
    process, results = runs["in_one_process"]
    finished_run_in_one_process(process, results, task, 2 * TIMEOUT_S)
    out = results.parent / task / "models"
    crop_size = bundle_kwargs([*CUBE, *SINGLE_TASKS[task][0]])["crop_size"]
    tags = set(check_outputs(out, 3, 1, crop_size).Tags()["scalars"])
    assert SINGLE_TASKS[task][1] <= tags, tags
    assert not any(tag.startswith("loss/") and not tag.startswith(f"loss/{task}") for tag in tags), tags
    _, metadata = load_encoder_export(out / "encoder.pt", 3, 1, "resnet10")
    assert metadata["method"] == f"MultiTask({task}, fixed)"


def test_multitask_bundle_serves_every_task_in_one_batch(cohorts, tmp_path):
    """All tasks at once: their transforms write distinct keys, so one batch of the bundle's loader feeds them
    all (checked in process on one batch; training is what the single-task runs check)."""
    workflow = _workflow(cohorts, tmp_path, "multitask_ct", "ct", tasks=ALL_TASKS, crop_size=[24, 24, 24],
                         min_input_size=16, crops_per_volume=2, batch_size=1, **ALL_TASKS_OVERRIDES)
    method = workflow.parser.get_parsed_content("ssl_method")
    batch = next(iter(workflow.parser.get_parsed_content("train#dataloader")))
    with torch.no_grad():
        losses = method(batch)
    assert {f"loss/{task}" for task in ALL_TASKS} <= set(losses)
    assert all(torch.isfinite(value) for value in losses.values()), losses
    assert batch["jigsaw_image"].shape == (2, 27, 1, 8, 8, 8) and batch["relative_location_image"].shape[1] == 2
    assert batch["position_image"].shape == batch["image"].shape == (2, 1, 24, 24, 24)
    assert batch["position"].shape == (2, 3) and batch["scan_index"].shape == (2,)
    assert not torch.equal(batch["position_image"], batch["image"]), "position has its own crop of the volume"


def test_mri_override_runs_a_ct_bundle_on_mri(runs):
    _, found = _finished_run(runs, "genesis_mri")
    metadata = found["metadata"]
    assert metadata["intensity_window"] == {"percentiles": [0.5, 99.5]}
    assert metadata["spacing"] == [1.0, 1.0, 1.0] and metadata["method"] == "ModelsGenesis"


def test_unknown_task_fails_before_training(runs):
    process, out = runs["unknown_task"]
    code, output = _finish(process)
    assert code != 0
    assert "unknown task(s) ['rotatoin']; registered methods:" in output
    for known in ("genesis", "rotation", "rubik", "masked", "simclr", "vicreg"):
        assert known in output
    assert not out.exists(), "nothing may be written when the configuration is wrong"


def _workflow(cohorts, tmp_path, bundle: str, cohort: str, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=str(BUNDLES / bundle / "configs" / "train.yaml"), workflow_type="train",
        dataset_dir=str(cohorts[cohort]), output_dir=str(tmp_path / "models"), encoder="resnet10", num_workers=0,
        cache_rate=0, **overrides,
    )
    workflow.initialize()
    return workflow


@pytest.mark.parametrize("bundle", PRETEXT_BUNDLES)
def test_model_zoo_properties(cohorts, tmp_path, bundle):
    workflow = _workflow(cohorts, tmp_path, bundle, "histology" if bundle.endswith("histology") else "ct")
    assert workflow.check_properties() == []
    assert workflow.max_epochs == 100
    assert len(workflow.train_dataset) >= 1


def test_multitask_drop_one_is_one_override(cohorts, tmp_path):
    workflow = _workflow(cohorts, tmp_path, "multitask_ct", "ct", tasks=["genesis", "rotation"])
    method = workflow.parser.get_parsed_content("ssl_method")
    assert list(method.methods) == ["genesis", "rotation"]
    chain = [type(t).__name__ for t in workflow.parser.get_parsed_content("train#preprocessing").transforms]
    assert "MultiViewd" not in chain
    assert chain.count("CopyItemsd") == 2 and "RandGenesisCorruptiond" in chain and "RandRotationPredictiond" in chain


@pytest.mark.parametrize("bundle", PRETEXT_BUNDLES)
def test_metadata_describes_the_default_input(bundle):
    """metadata.json has every field of the existing bundles' and states the input the defaults produce."""
    metadata = json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())
    reference = json.loads((BUNDLES / "genesis_ct" / "configs" / "metadata.json").read_text())
    assert set(reference) <= set(metadata) and metadata["version"] in metadata["changelog"]
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "train.yaml"))
    (image,) = metadata["network_data_format"]["inputs"].values()
    assert image["spatial_shape"] == list(parser.get_parsed_content("train#trainer#export_metadata#patch_size"))
    network = parser.get_parsed_content("network_def", lazy=False)
    assert image["num_channels"] == network.in_channels


@pytest.mark.parametrize("bundle, overrides", [
    ("rotation_ct", {}),
    ("multitask_ct", {"tasks": ["genesis", "rotation"]}),
])
def test_non_cubic_crop_for_rotation_fails_at_start(cohorts, tmp_path, bundle, overrides):
    """Quarter turns about each axis need equal sides: a 32x32x16 crop fails in initialize, naming crop_size and
    why, before the trainer (checkpoints, TensorBoard) exists."""
    with pytest.raises(RuntimeError) as failure:
        _workflow(cohorts, tmp_path, bundle, "ct", crop_size=[32, 32, 16], min_input_size=16, **overrides)
    message = str(failure.value.__cause__)
    assert "RotationPrediction: the encoder sees crops (crop_size) of spatial size (32, 32, 16), whose sides differ" in message
    assert "90 degrees about each axis" in message and "[32, 32, 32]" in message and "on_shape_change" in message
    assert not (tmp_path / "models").exists(), "nothing may be written when the configuration is wrong"
    # with on_shape_change: skip the crop is accepted (only the shape-keeping turns are drawn)
    key = "on_shape_change" if bundle == "rotation_ct" else "rotation_on_shape_change"
    _workflow(cohorts, tmp_path, bundle, "ct", crop_size=[32, 32, 16], min_input_size=16, **{key: "skip"}, **overrides)


def test_too_small_puzzle_patches_fail_at_start(cohorts, tmp_path):
    """jigsaw on 24^3 crops with jitter 3 cuts 5^3 patches: the start-up check names them and the bound."""
    with pytest.raises(RuntimeError) as failure:
        _workflow(cohorts, tmp_path, "multitask_ct", "ct", tasks=["jigsaw"], crop_size=[24, 24, 24])
    message = str(failure.value.__cause__)
    assert "JigsawPuzzle: the encoder sees jigsaw patches" in message and "(5, 5, 5)" in message
    assert "puzzle_min_input_size" in message and "at least 16 voxels" in message
    assert not (tmp_path / "models").exists()

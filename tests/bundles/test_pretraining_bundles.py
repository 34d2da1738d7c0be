"""Run every pretraining bundle end to end with MONAI's bundle runner on a tiny synthetic cohort.

Each run trains 2 iterations (2 epochs of one batch) on tiny inputs with a ResNet-10 and must leave full-state
checkpoints, encoder exports that load, and TensorBoard events. The runs are started together, one torch
thread each, when the module's first test asks for them, so the module takes about as long as its slowest run.
contrastive_ct and a run with an unknown method are ``python -m monai.bundle run`` commands; genesis_ct,
contrastive_xray and the contrastive methods not run above (dcl, simsiam, vicreg, byol) run one after another in
ONE further process (:func:`start_runs_in_one_process`), which saves an interpreter start and the imports (~5 s
of CPU) per run.
"""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.engine import load_checkpoint, load_encoder_export

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
TIMEOUT_S = 240
TINY = ["--epochs", "2", "--batch_size", "2", "--num_workers", "0", "--cache_rate", "0", "--checkpoint_every", "1",
        "--log_every", "1", "--encoder", "resnet10"]
CT_TINY = ["--crop_size", "[32,32,16]", "--min_input_size", "16", "--batch_size", "1", "--crops_per_volume", "2"]

# name: (bundle, cohort, overrides, spatial dims, patch size in the export)
CASES = {
    "genesis_ct": ("genesis_ct", "ct", CT_TINY, 3, [32, 32, 16]),
    "contrastive_ct": ("contrastive_ct", "ct", [*CT_TINY, "--method", "simclr"], 3, [32, 32, 16]),
    "contrastive_xray": ("contrastive_xray", "xray",
                         ["--image_size", "64", "--method", "moco", "--method_args", "{'queue_size': 64}"], 2, [64, 64]),
}
# CASES run in the process of the contrastive methods below, not as commands
IN_ONE_PROCESS = ["genesis_ct", "contrastive_xray"]
# the other methods of contrastive_ct's `method` key, as contrastive_ct above, in one process: method: method_args.
# Heads shrunk as MoCo's queue above: VICReg's default expander (3 x 8192) alone has 134 M parameters, whose
# checkpoints and AdamW state took ~40 s of the run.
CONTRASTIVE_METHODS = {
    "dcl": {},
    "simsiam": {"projection_dim": 256, "prediction_hidden_dim": 64},
    "vicreg": {"expander_dim": 256},
    "byol": {"projection_hidden_dim": 256, "prediction_hidden_dim": 256},
}

# `python -c` program: run each bundle of argv[1] (JSON {name: monai.bundle.run keywords}) in turn, as
# `python -m monai.bundle run` does, and write {name: {"ok", "seconds", "output"[, "error"]}} to argv[2] after each.
# "output" is what the run printed (stdout and stderr, its log included: the bundle's logging.conf binds its handler
# to sys.stdout when the run starts, which is then this run's buffer; handlers an earlier run left on named loggers,
# e.g. MONAI's StatsHandler's, are pointed at it too).
ONE_PROCESS_RUNNER = """
import contextlib, io, json, logging, sys, time, traceback
from monai.bundle import run
jobs, results, output = json.loads(sys.argv[1]), {}, sys.stdout
for name, kwargs in jobs.items():
    start, previous, output = time.perf_counter(), output, io.StringIO()
    for logger in [logging.root, *logging.root.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream in (previous, sys.stdout, sys.stderr):
                handler.setStream(output)
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            run(**kwargs)
        results[name] = {"ok": True}
    except Exception:
        results[name] = {"ok": False, "error": output.getvalue()[-2000:] + traceback.format_exc()[-4000:]}
    results[name]["seconds"] = round(time.perf_counter() - start, 2)
    results[name]["output"] = output.getvalue()
    open(sys.argv[2], "w").write(json.dumps(results))
"""


def bundle_kwargs(overrides: list[str]) -> dict:
    """Command-line overrides ``["--key", "value", ...]`` as ``monai.bundle.run`` keywords; values are parsed as
    Python literals where they are ones (as the command line's parser does), else kept as strings."""

    def value(text: str):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text

    return {key.removeprefix("--"): value(text) for key, text in zip(overrides[::2], overrides[1::2], strict=True)}


def start_runs_in_one_process(jobs: dict[str, dict], results: Path, env: dict) -> subprocess.Popen:
    """Start one process running the bundle runs ``jobs`` ({name: monai.bundle.run keywords}) in turn."""
    return subprocess.Popen([sys.executable, "-c", ONE_PROCESS_RUNNER, json.dumps(jobs), str(results)], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finished_run_in_one_process(process: subprocess.Popen, results: Path, name: str, timeout: float) -> str:
    """Wait for the process of :func:`start_runs_in_one_process`; assert that its run ``name`` succeeded and
    return what that run printed."""
    if process.poll() is None:
        output, _ = process.communicate(timeout=timeout)
        process.output = output
    found = json.loads(results.read_text()) if results.exists() else {}
    assert name in found, f"run {name} did not finish:\n{getattr(process, 'output', '')[-4000:]}"
    assert found[name]["ok"], f"{name} failed:\n{found[name]['error']}"
    return found[name]["output"]


def check_outputs(out: Path, spatial_dims: int, channels: int, patch_size: list[int]) -> EventAccumulator:
    """Assert a 2-iteration run left checkpoints, a finite loss in TensorBoard and encoder exports that load."""
    checkpoints = out / "checkpoints"
    assert {p.name for p in checkpoints.glob("*.pt")} == {
        "checkpoint_00000001.pt", "checkpoint_00000002.pt", "checkpoint_last.pt"}
    assert load_checkpoint(checkpoints / "checkpoint_last.pt")["iteration"] == 2
    (events,) = (out / "tensorboard").glob("events.out.tfevents.*")
    scalars = EventAccumulator(str(events)).Reload()
    loss_tag = next(tag for tag in scalars.Tags()["scalars"] if tag.endswith("loss"))
    assert [s.step for s in scalars.Scalars(loss_tag)] == [1, 2]
    assert all(math.isfinite(s.value) for s in scalars.Scalars(loss_tag)), scalars.Scalars(loss_tag)

    encoder, metadata = load_encoder_export(out / "encoder.pt", spatial_dims, channels, "resnet10")
    assert metadata["patch_size"] == patch_size
    first, _ = load_encoder_export(out / "encoder_00000001.pt", spatial_dims, channels, "resnet10")
    final = encoder.state_dict()
    changed = [k for k, v in first.state_dict().items() if v.is_floating_point() and not torch.equal(v, final[k])]
    assert changed, "the second iteration left the encoder unchanged"
    with torch.no_grad():
        assert encoder.embed(torch.rand(2, channels, *patch_size)).shape == (2, 512)
    return scalars


def _command(bundle: str, dataset_dir: Path, output_dir: Path, overrides: list[str]) -> list[str]:
    config = BUNDLES / bundle / "configs" / "train.yaml"
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), "--dataset_dir",
            str(dataset_dir), "--output_dir", str(output_dir), *TINY, *overrides]


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cohorts")
    synthesize_cohort("ct", 3, root / "ct", size=(64, 64, 32), progress=False)
    synthesize_cohort("xray", 4, root / "xray", size=(64, 64), progress=False)
    return {"ct": root / "ct", "xray": root / "xray"}


@pytest.fixture(scope="module")
def runs(cohorts, tmp_path_factory) -> dict[str, tuple[subprocess.Popen, Path]]:
    """Every bundle run (plus one with an unknown method), started at once; value: (process, output dir).

    ``started["in_one_process"]``: (process, results file) of the IN_ONE_PROCESS and CONTRASTIVE_METHODS runs in
    one process, their outputs in ``<results dir>/<name>/models``.
    """
    root = tmp_path_factory.mktemp("runs")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    jobs = {name: (bundle, cohort, overrides) for name, (bundle, cohort, overrides, _, _) in CASES.items()
            if name not in IN_ONE_PROCESS}
    jobs["unknown_method"] = ("contrastive_ct", "ct", [*CT_TINY, "--method", "genesis"])
    started = {}
    for name, (bundle, cohort, overrides) in jobs.items():
        out = root / name / "models"
        process = subprocess.Popen(_command(bundle, cohorts[cohort], out, overrides), env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started[name] = (process, out)
    (root / "in_one_process").mkdir()
    results = root / "in_one_process" / "results.json"
    one_process = {
        name: {"config_file": str(BUNDLES / CASES[name][0] / "configs" / "train.yaml"),
               "dataset_dir": str(cohorts[CASES[name][1]]), "output_dir": str(results.parent / name / "models"),
               **bundle_kwargs([*TINY, *CASES[name][2]])}
        for name in IN_ONE_PROCESS
    }
    one_process.update({
        method: {"config_file": str(BUNDLES / "contrastive_ct" / "configs" / "train.yaml"),
                 "dataset_dir": str(cohorts["ct"]), "output_dir": str(results.parent / method / "models"),
                 **bundle_kwargs([*TINY, *CT_TINY, "--method", method]), "method_args": method_args}
        for method, method_args in CONTRASTIVE_METHODS.items()
    })
    started["in_one_process"] = (start_runs_in_one_process(one_process, results, env), results)
    yield started
    for process, _ in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=TIMEOUT_S)
    return process.returncode, output


@pytest.mark.parametrize("name", sorted(CASES))
def test_bundle_trains_and_exports(runs, name):
    _, _, _, spatial_dims, patch_size = CASES[name]
    if name in IN_ONE_PROCESS:
        process, results = runs["in_one_process"]
        finished_run_in_one_process(process, results, name, 2 * TIMEOUT_S)
        out = results.parent / name / "models"
    else:
        process, out = runs[name]
        code, output = _finish(process)
        assert code == 0, f"{name} failed:\n{output[-4000:]}"
    check_outputs(out, spatial_dims, 1, patch_size)


@pytest.mark.parametrize("method", CONTRASTIVE_METHODS)
def test_every_contrastive_method_trains_through_the_bundle(runs, method):
    """contrastive_ct with `method: <method>`: 2 iterations, a finite loss, an encoder export that loads."""
    process, results = runs["in_one_process"]
    finished_run_in_one_process(process, results, method, 2 * TIMEOUT_S)
    out = results.parent / method / "models"
    check_outputs(out, 3, 1, [32, 32, 16])
    metadata = load_encoder_export(out / "encoder.pt", 3, 1, "resnet10")[1]
    assert metadata["method"].lower().startswith(method), metadata["method"]


def test_unknown_method_fails_before_training(runs):
    process, out = runs["unknown_method"]
    code, output = _finish(process)
    assert code != 0
    assert "Unsupported option 'genesis'" in output
    for known in ("simclr", "moco", "dcl", "simsiam", "vicreg", "byol"):
        assert known in output
    assert not out.exists(), "nothing may be written when the configuration is wrong"


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_zoo_properties(cohorts, tmp_path, name):
    bundle, cohort, _, _, _ = CASES[name]
    workflow = ConfigWorkflow(
        config_file=str(BUNDLES / bundle / "configs" / "train.yaml"), workflow_type="train",
        dataset_dir=str(cohorts[cohort]), output_dir=str(tmp_path / "models"), encoder="resnet10", num_workers=0,
        cache_rate=0,
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.max_epochs == 100
    assert len(workflow.train_dataset) >= 1

"""The bundles' ``corruption_on`` key: Genesis and masking per crop in the data loader (``loader``) or on the whole
batch on the training device before the forward pass (``batch``, the GPU path; here on the CPU).

Each bundle that corrupts crops (genesis_ct, masked_ct, multitask_ct with its genesis and masked tasks) trains 2
iterations with each setting, the runs one after another in one process; in-process checks show what the loader
yields and what the trainer does to the batch with each setting. genesis_ct and masked_ct with ``loader`` (their
default) are not run here: ``test_pretraining_bundles`` and ``test_pretext_bundles`` train the same runs (same
crops, batch, encoder and iterations) and check their outputs as this module does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.errors import InputError

from .test_pretraining_bundles import (
    bundle_kwargs,
    check_outputs,
    finished_run_in_one_process,
    start_runs_in_one_process,
)

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
TINY = ["--epochs", "2", "--batch_size", "1", "--num_workers", "0", "--cache_rate", "0", "--checkpoint_every", "1",
        "--log_every", "1", "--encoder", "resnet10", "--crops_per_volume", "2", "--min_input_size", "16"]
# bundle: (overrides, batch keys the method reads that the corruption writes)
CASES = {
    "genesis_ct": (["--crop_size", "[32,32,16]"], {"image", "target"}),
    "masked_ct": (["--crop_size", "[32,32,16]"], {"image", "target", "mask"}),
    "multitask_ct": (["--crop_size", "[32,32,32]", "--tasks", "['genesis', 'masked']"],
                     {"genesis_image", "genesis_target", "masked_image", "masked_target", "masked_mask"}),
}
SITES = ["loader", "batch"]
# the runs here: (bundle, site); the default site of genesis_ct and masked_ct is trained in the modules named above
RUNS = [(bundle, site) for bundle in CASES for site in SITES if site == "batch" or bundle == "multitask_ct"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    synthesize_cohort("ct", 2, root / "ct", size=(64, 64, 32), progress=False)
    return root / "ct"


@pytest.fixture(scope="module")
def runs(cohort, tmp_path_factory):
    """The 2-iteration RUNS in one process; value: (process, results file)."""
    root = tmp_path_factory.mktemp("runs")
    jobs = {
        f"{bundle}-{site}": {"config_file": str(BUNDLES / bundle / "configs" / "train.yaml"),
                             "dataset_dir": str(cohort), "output_dir": str(root / f"{bundle}-{site}" / "models"),
                             **bundle_kwargs([*TINY, *CASES[bundle][0], "--corruption_on", site])}
        for bundle, site in RUNS
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = start_runs_in_one_process(jobs, root / "results.json", env)
    yield process, root / "results.json"
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.mark.parametrize("bundle, site", RUNS)
def test_bundle_trains_with_each_corruption_site(runs, bundle, site):
    process, results = runs
    finished_run_in_one_process(process, results, f"{bundle}-{site}", timeout=900)
    overrides = CASES[bundle][0]
    crop = [int(c) for c in overrides[overrides.index("--crop_size") + 1].strip("[]").split(",")]
    check_outputs(results.parent / f"{bundle}-{site}" / "models", 3, 1, crop)


def _workflow(cohort, tmp_path, bundle, site) -> ConfigWorkflow:
    overrides, _ = CASES[bundle]
    workflow = ConfigWorkflow(
        config_file=str(BUNDLES / bundle / "configs" / "train.yaml"), workflow_type="train", dataset_dir=str(cohort),
        output_dir=str(tmp_path / "models"), **bundle_kwargs([*TINY, *overrides]), corruption_on=site,
    )
    workflow.initialize()
    return workflow


@pytest.mark.parametrize("bundle", sorted(CASES))
def test_batch_site_moves_the_corruption_from_the_loader_to_the_step(cohort, tmp_path, bundle):
    """loader: the loader yields the method's keys and the step adds nothing; batch: the loader yields the clean
    crop only, and the step's batch transforms write the same keys, shapes and dtypes from it."""
    corrupted = CASES[bundle][1]
    found = {}
    for site in SITES:
        workflow = _workflow(cohort, tmp_path / site, bundle, site)
        assert workflow.check_properties() == []
        batch = next(iter(workflow.parser.get_parsed_content("train#dataloader")))
        step = workflow.parser.get_parsed_content("train#trainer").step
        if site == "loader":
            assert corrupted <= set(batch) and step.batch_transforms == []
            found[site] = batch
            continue
        assert not (corrupted - {"image"}) & set(batch), sorted(batch)
        clean = batch["image"].clone()
        assert len(step.batch_transforms) == (2 if bundle == "multitask_ct" else 1)
        for transform in step.batch_transforms:
            batch = transform(batch)
        assert corrupted <= set(batch)
        target = "target" if "target" in corrupted else "masked_target"
        if bundle != "genesis_ct":  # Genesis flips input and target alike, masking leaves the target alone
            torch.testing.assert_close(batch[target].as_tensor(), clean.as_tensor())
        found[site] = batch
    for key in corrupted:
        assert found["batch"][key].shape == found["loader"][key].shape, key
        assert found["batch"][key].dtype == found["loader"][key].dtype, key


def test_unknown_corruption_site_fails_at_start(cohort, tmp_path):
    """MONAI wraps the error in its own; medssl3d.bundle_errors prints the InputError as the run's last line."""
    with pytest.raises(RuntimeError) as raised:
        _workflow(cohort, tmp_path, "genesis_ct", "gpu").parser.get_parsed_content("train#trainer")
    cause = raised.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, InputError)
    assert str(cause).startswith("corruption_on is 'gpu'; expected 'loader' (each crop corrupted in the data-loader")

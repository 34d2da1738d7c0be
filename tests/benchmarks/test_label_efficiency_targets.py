"""The label-efficiency targets of a run: the sanity bound (scratch fine-tuning at 100 % of the labels within 0.03
AUC of the published supervised row) on every dataset with a published row, and the SSL-vs-scratch gains."""

from __future__ import annotations

import pytest

from ._scripts import load_benchmark


@pytest.fixture(scope="module")
def module():
    return load_benchmark("label_efficiency")


def _row(dataset, init, kind, fraction, auc, accuracy=0.8):
    return {"dataset": dataset, "init": init, "eval": kind, "fraction": fraction, "auc_mean": auc,
            "accuracy_mean": accuracy}


@pytest.mark.parametrize("scratch_auc, met", [(0.875, True), (0.869, False)])
def test_the_sanity_bound_compares_scratch_at_100_percent_with_the_published_row(module, scratch_auc, met):
    summary = [_row("breastmnist", "scratch", "finetune", 1.0, scratch_auc),
               _row("breastmnist", "scratch", "linear", 1.0, 0.95),  # a probe does not count
               _row("breastmnist", "simclr", "finetune", 1.0, 0.95),
               _row("breastmnist", "scratch", "finetune", 0.1, 0.70),
               _row("breastmnist", "simclr", "finetune", 0.1, 0.76)]
    found = module.targets(summary, "breastmnist")
    bound = found["scratch_at_100pct_vs_published"]
    assert bound["reference"] == "ResNet-18 (28)" and bound["reference_auc"] == 0.901
    assert bound["gap"] == pytest.approx(scratch_auc - 0.901) and bound["met"] is met
    assert found["ssl_minus_scratch_auc_10%_finetune"]["gain"] == pytest.approx(0.06)


def test_a_subset_run_is_bound_by_its_full_dataset_and_an_unlisted_dataset_has_no_bound(module):
    summary = [_row("pneumoniamnist_546", "scratch", "finetune", 1.0, 0.931)]
    assert module.targets(summary, "pneumoniamnist_546")["scratch_at_100pct_vs_published"]["met"] is True
    mine = [_row("mycohort", "scratch", "finetune", 1.0, 0.5), _row("mycohort", "simclr", "finetune", 0.1, 0.9)]
    assert module.targets(mine, "mycohort") == {}  # nothing published to compare with

"""Runs of ``benchmarks/label_efficiency.py --estimate-runtime`` (the smoke profile and a shrunk recipe profile,
tiny fake MedMNIST files)."""

from __future__ import annotations

import math

import pytest

from ._scripts import load_benchmark
from .test_label_efficiency_smoke import _fake_npz, _tiny_recipe_profile


@pytest.fixture(scope="module")
def estimate(tmp_path_factory):
    data = tmp_path_factory.mktemp("medmnist")
    _fake_npz(data / "pneumoniamnist.npz", {"train": 40, "val": 10, "test": 20}, (28, 28), seed=0)
    _fake_npz(data / "adrenalmnist3d.npz", {"train": 20, "val": 4, "test": 10}, (16, 16, 16), seed=1)
    module = load_benchmark("label_efficiency")
    result = module.main(["--data-dir", str(data), "--smoke-size", "--estimate-runtime", "--estimate-steps", "1",
                          "--fractions", "0.1", "1.0", "--seeds", "0", "1"])
    return module, result


def test_every_phase_of_the_profile_is_timed_and_counted(estimate):
    module, result = estimate
    profile = module.load_profile("smoke")
    for dataset, dims, n_train, n_test, n_val in (("pneumoniamnist", 2, 40, 20, 10), ("adrenalmnist3d", 3, 20, 10, 4)):
        rows = {r["phase"]: r for r in result["rows"] if r["dataset"] == dataset}
        methods = profile["methods"][dims]
        inits = 1 + len(methods)
        for method in methods:
            assert rows[f"pretrain {method}"]["count"] == profile["pretrain_iterations"][dims]
        assert rows["features (kNN, probe)"]["count"] == inits * (n_train + n_test)
        assert rows["fine-tune test prediction"]["count"] == inits * 2 * 2 * n_test  # x seeds x fractions
        finetune = [r for p, r in rows.items() if p.startswith("fine-tune ") and "labels" in p]
        assert len(finetune) == 2 and len([p for p in rows if p.startswith("kNN")]) == 2
        # smoke profile: validation AUC measured to keep the best epoch; 100 % is one epoch here, evaluated once
        assert module.epochs_for(profile, 1.0, dims, n_train) == 1
        assert rows["fine-tune 100% validation"]["count"] == inits * 2 * n_val
        # 100 %: the smoke profile's sample budget turned into whole epochs, for every init and seed
        full = next(r for r in finetune if r["phase"].startswith("fine-tune 100%"))
        assert full["count"] == inits * 2 * module.epochs_for(profile, 1.0, dims, n_train)
    for row in result["rows"]:
        assert math.isfinite(row["cpu_s"]) and row["cpu_s"] >= 0 and row["wall_s"] > 0, row
        assert row["cpu_h"] == pytest.approx(row["cpu_s"] * row["count"] / 3600)
    assert result["total_cpu_h"] == pytest.approx(sum(r["cpu_h"] for r in result["rows"]))
    assert "projected h (CPU)" in result["table"]


def test_finetune_batches_follow_fine_tune_classifier():
    module = load_benchmark("label_efficiency")
    profile = {**module.load_profile("long"), "finetune_batch": 64, "class_balanced": False}
    assert module.finetune_batches(profile, [0] * 130) == [64, 64, 2]
    assert module.finetune_batches(profile, [0] * 129) == [64, 65]  # a last batch of one is merged
    assert module.finetune_batches(profile, [0] * 47) == [47]


@pytest.mark.parametrize("fit_loss, longest", [(0.3, 2 + 4 * 3), (None, 2 + 4)])
def test_a_recipe_profile_is_projected_with_every_cycle_the_fit_rule_may_add(tmp_path, fit_loss, longest):
    """A recipe profile's fine-tuning is counted at its most steps: the warm-up (2) and, with the fit rule, every
    cycle of 4 that max_cycles (3) and max_steps (30) allow, with about ``evaluations`` validations a cycle; without
    the rule one cycle."""
    module = load_benchmark("label_efficiency")
    data = tmp_path / "medmnist"
    data.mkdir()
    _fake_npz(data / "pneumoniamnist.npz", {"train": 40, "val": 10, "test": 20}, (28, 28), seed=0)
    path = _tiny_recipe_profile(tmp_path / "tiny_recipe.yaml", "recipe_v9", epochs=1, min_steps=6, max_steps=30,
                                head_warmup=0.34, evaluations=2, batch_size=8, min_batch=8,
                                fit_loss=fit_loss)  # 4 labels: the floor of 6 steps, 2 of them warm-up
    result = module.main(["--data-dir", str(data), "--profile", str(path), "--datasets", "pneumoniamnist",
                          "--estimate-runtime", "--estimate-steps", "1", "--fractions", "0.1", "--seeds", "0", "1"])
    rows = {r["phase"]: r for r in result["rows"]}
    runs, grid = 2 * 2, 2  # (scratch, rotation) x seeds; two grid entries
    assert rows["fine-tune 10% (4 labels)"]["count"] == runs * longest * grid
    cycles = (longest - 2) // 4
    assert rows["fine-tune 10% validation"]["count"] == runs * (1 + 2 * cycles) * 10 * grid

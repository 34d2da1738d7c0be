"""Smoke run of benchmarks/label_efficiency.py on tiny fake MedMNIST files (no ../shared data needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medssl3d.encoder_export import read_encoder_export

from ._scripts import BENCHMARKS, load_benchmark


def _fake_npz(path: Path, counts: dict[str, int], shape: tuple[int, ...], seed: int) -> None:
    """Two separable classes: class 1 has a bright square/cube in the centre, class 0 is dim noise."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in counts.items():
        labels = np.arange(n) % 2
        images = rng.integers(0, 60, size=(n, *shape)).astype(np.uint8)
        centre = (slice(None),) + tuple(slice(s // 4, 3 * s // 4) for s in shape)
        bright = images[centre].astype(np.int64) + 150 * labels.reshape(-1, *([1] * len(shape)))
        images[centre] = np.clip(bright, 0, 255).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)


def _tiny_recipe_profile(path: Path, base: str, datasets: list[str] | None = None, **recipe) -> Path:
    """The shipped profile ``base`` shrunk for a test (rotation only, one pretraining iteration, small batches),
    its recipe fields replaced by ``recipe`` (and its default ``datasets`` if given), written to ``path``."""
    import yaml

    profile = yaml.safe_load((BENCHMARKS / "profiles" / f"{base}.yaml").read_text())
    profile.update(methods={2: ["rotation"], 3: ["rotation"]}, pretrain_iterations={2: 1, 3: 1},
                   pretrain_batch={2: 8, 3: 4}, **({"datasets": datasets} if datasets else {}))
    profile["recipe"].update(recipe)
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    data = tmp_path_factory.mktemp("medmnist")
    _fake_npz(data / "pneumoniamnist.npz", {"train": 40, "val": 10, "test": 20}, (28, 28), seed=0)
    _fake_npz(data / "adrenalmnist3d.npz", {"train": 20, "val": 4, "test": 10}, (16, 16, 16), seed=1)  # 3D: small
    out = data / "result.json"
    module = load_benchmark("label_efficiency")
    result = module.main(["--data-dir", str(data), "--smoke-size", "--fractions", "0.1", "1.0",
                          "--seeds", "0", "1", "--out", str(out)])
    return module, result, json.loads(out.read_text())


def test_every_method_fraction_seed_has_finite_test_metrics(smoke):
    module, result, written = smoke
    profile = module.load_profile("smoke")
    for dataset, dims in (("pneumoniamnist", 2), ("adrenalmnist3d", 3)):
        records = [r for r in written["records"] if r["dataset"] == dataset]
        inits = ["scratch", *profile["methods"][dims]]
        expected = {(i, e, f, s) for i in inits for e in ("knn", "linear", "finetune", "finetune_tta")
                    for f in (0.1, 1.0) for s in (0, 1)}
        assert {(r["init"], r["eval"], r["fraction"], r["seed"]) for r in records} == expected
        assert len(records) == len(expected)
        for r in records:
            assert all(math.isfinite(r[m]) and 0 <= r[m] <= 1 for m in module.METRICS), r
        # nested, stratified label subsets: 10 % of 20 per class (2D) -> 2 per class; 100 % -> all
        n_train = 40 if dims == 2 else 20
        assert {r["n_labels"] for r in records if r["fraction"] == 1.0} == {n_train}
        assert {r["n_labels"] for r in records if r["fraction"] == 0.1} == {round(0.1 * n_train)}
        assert "| fine-tune | scratch |" in written["tables"][dataset]
    assert written["records"] == json.loads(json.dumps(result["records"]))


def test_separable_classes_are_learned_by_the_probes(smoke):
    _, _, written = smoke
    # class 1 is much brighter at the centre: even random-init features separate it at 100 % labels
    full = [r for r in written["records"] if r["fraction"] == 1.0 and r["eval"] == "linear" and r["init"] == "scratch"]
    assert np.mean([r["auc"] for r in full]) > 0.9


def test_every_run_reports_its_sanity_bound(smoke):
    module, _, written = smoke
    for dataset, published in (("pneumoniamnist", 0.944), ("adrenalmnist3d", 0.827)):
        bound = written["targets"][dataset]["scratch_at_100pct_vs_published"]
        scratch = next(r for r in written["summary"] if r["dataset"] == dataset and r["init"] == "scratch"
                       and r["eval"] == "finetune" and r["fraction"] == 1.0)
        assert bound["reference_auc"] == published and bound["auc"] == scratch["auc_mean"]
        assert bound["met"] is (scratch["auc_mean"] >= published - module.SANITY_MARGIN)


def test_missing_data_dir_is_a_clear_error(tmp_path):
    module = load_benchmark("label_efficiency")
    with pytest.raises(SystemExit, match="not found; --data-dir must hold"):
        module.main(["--data-dir", str(tmp_path), "--smoke-size", "--datasets", "pneumoniamnist",
                     "--out", str(tmp_path / "r.json")])


def test_finetune_records_keep_an_evaluated_epoch(smoke):
    module, _, written = smoke
    profile = module.load_profile("smoke")
    for r in (r for r in written["records"] if r["eval"] == "finetune"):
        dims = 2 if r["dataset"] == "pneumoniamnist" else 3
        assert r["epochs"] == module.epochs_for(profile, r["fraction"], dims, r["n_labels"])
        assert 1 <= r["epoch_kept"] <= r["epochs"]


def test_sample_budget_becomes_the_fewest_epochs_covering_it():
    module = load_benchmark("label_efficiency")
    medium = module.load_profile("long")
    for dims, fraction, n in ((3, 0.01, 12), (3, 0.1, 119), (3, 1.0, 1188), (2, 0.01, 47), (2, 0.1, 470)):
        epochs = module.epochs_for(medium, fraction, dims, n)
        budget = medium["finetune_samples"][dims][fraction]
        assert epochs * n >= budget and (epochs == 1 or (epochs - 1) * n < budget)
    fixed = {**{k: v for k, v in medium.items() if k != "finetune_samples"}, "epochs": {0.01: 100, 0.1: 40}}
    assert module.epochs_for(fixed, 0.1, 3, 119) == 40 and module.epochs_for(fixed, 1.0, 3, 1188) == 40
    recipe = module.load_profile("recipe")  # recipe profiles: the step budget's draws in whole epochs
    assert module.epochs_for(recipe, 0.1, 3, 119) == math.ceil(200 * 16 / 119)


def test_validation_selection_never_keeps_a_worse_model_than_the_last_epoch(tmp_path):
    module = load_benchmark("label_efficiency")
    _fake_npz(tmp_path / "d.npz", {"train": 24, "val": 12, "test": 4}, (16, 16), seed=3)
    splits = module.load_medmnist(tmp_path / "d.npz")
    export = module.random_init_export(splits["training"][0], module.load_profile("smoke"), tmp_path / "scratch")
    val_auc = {}
    for evaluations in (0, 6):
        profile = {**module.load_profile("smoke"), "val_evaluations": evaluations,
                   "finetune_samples": {2: {1.0: 24 * 6}}}
        model, epochs, kept = module.fine_tune("scratch", export, splits["training"], splits["validation"], profile,
                                               1.0, 0, 2, "cpu")
        probs = module.predict_proba(model, splits["validation"][0])
        val_auc[evaluations] = module.classification_metrics(splits["validation"][1], probs, 2)["auc"]
        assert epochs == 6 and (kept == 6 if evaluations == 0 else 1 <= kept <= 6)
    assert val_auc[6] >= val_auc[0] - 1e-12


def test_finetune_augment_and_test_time_views_are_one_group():
    module = load_benchmark("label_efficiency")
    for profile, dims, count in (("quick", 2, 2), ("long", 3, 8), ("quick", 3, 48), ("smoke", 2, 2)):
        group = module.finetune_augment(module.load_profile(profile), dims)
        assert isinstance(group, module.SymmetryGroup) and len(group.views()) == count
    with pytest.raises(ValueError, match="group must be one of"):
        module.finetune_augment({**module.load_profile("quick"), "augment_3d": "mixup"}, 3)


def test_reuse_exports_only_when_the_pretraining_stamp_matches(tmp_path):
    module = load_benchmark("label_efficiency")
    _fake_npz(tmp_path / "pneumoniamnist.npz", {"train": 40, "val": 10, "test": 20}, (28, 28), seed=4)
    work = tmp_path / "work"
    args = ["--data-dir", str(tmp_path), "--datasets", "pneumoniamnist", "--smoke-size", "--fractions", "1.0",
            "--seeds", "0", "--work-dir", str(work), "--reuse-exports"]
    first = module.main(args + ["--out", str(tmp_path / "a.json")])
    export = work / "pneumoniamnist" / "rotation" / "encoder.pt"
    written = export.stat().st_mtime_ns
    second = module.main(args + ["--out", str(tmp_path / "b.json")])
    assert first["runs"]["pneumoniamnist"]["reused_exports"] == []
    assert second["runs"]["pneumoniamnist"]["reused_exports"] == list(module.load_profile("smoke")["methods"][2])
    assert export.stat().st_mtime_ns == written  # not pretrained again
    knn = lambda result: [r["auc"] for r in result["records"] if r["eval"] == "knn"]
    assert knn(first) == knn(second)
    stamp = json.loads((export.parent / "pretraining.json").read_text())
    stamp["settings"]["iterations"] += 1  # another profile's run: pretrained again
    (export.parent / "pretraining.json").write_text(json.dumps(stamp))
    third = module.main(args + ["--out", str(tmp_path / "c.json")])
    assert "rotation" not in third["runs"]["pneumoniamnist"]["reused_exports"]
    assert export.stat().st_mtime_ns != written
    with pytest.raises(SystemExit):
        module.main(["--data-dir", str(tmp_path), "--smoke-size", "--reuse-exports"])
    only = module.main(args + ["--methods", "rotation", "--out", str(tmp_path / "d.json")])
    assert {r["init"] for r in only["records"]} == {"scratch", "rotation"}
    assert list(only["runs"]["pneumoniamnist"]["settings"]["methods"][2]) == ["rotation"]
    with pytest.raises(SystemExit):
        module.main(args + ["--methods", "rubik"])


def test_init_seed_gives_another_reproducible_init_in_its_own_folder(tmp_path):
    """``--init-seed``: every init before fine-tuning (scratch weights; pretraining's initial weights, pretext draws
    and batch order) comes from that seed. The same seed gives the same encoders again; another seed other ones,
    in folders of their own (``--reuse-exports`` never takes one seed's export for another's), stamped and
    recorded; seed 0, the default, is stamped as before the option existed."""
    module = load_benchmark("label_efficiency")
    _fake_npz(tmp_path / "pneumoniamnist.npz", {"train": 40, "val": 10, "test": 20}, (28, 28), seed=5)
    work = tmp_path / "work"
    run = lambda seed, out, *reuse: module.main(
        ["--data-dir", str(tmp_path), "--datasets", "pneumoniamnist", "--smoke-size", "--methods", "rotation",
         "--fractions", "1.0", "--seeds", "0", "--work-dir", str(work), "--init-seed", str(seed),
         "--out", str(tmp_path / out), *reuse])
    default = run(0, "seed0.json", "--reuse-exports")
    weights = {}
    for out, reuse in (("first.json", ["--reuse-exports"]), ("again.json", [])):  # the second pretrains anew
        result = run(1, out, *reuse)
        assert result["runs"]["pneumoniamnist"]["reused_exports"] == []
        assert result["runs"]["pneumoniamnist"]["init_seed"] == 1
        assert {r["init_seed"] for r in result["records"]} == {1}
        for init in ("scratch", "rotation"):
            state, _ = read_encoder_export(work / "pneumoniamnist" / f"{init}_seed1" / "encoder.pt")
            weights.setdefault(init, []).append(state)
    for init in ("scratch", "rotation"):
        first, again = weights[init]
        assert all(torch.equal(first[k], again[k]) for k in first)
        seed0, _ = read_encoder_export(work / "pneumoniamnist" / init / "encoder.pt")
        assert any(not torch.equal(first[k], seed0[k]) for k in first if first[k].is_floating_point())
    assert "init_seed" not in default["records"][0] and default["runs"]["pneumoniamnist"]["init_seed"] == 0
    stamp = lambda folder: json.loads((work / "pneumoniamnist" / folder / "pretraining.json").read_text())["settings"]
    assert "seed" not in stamp("rotation") and stamp("rotation_seed1") == {**stamp("rotation"), "seed": 1}
    with pytest.raises(SystemExit):  # argparse's error: one line naming the option, before any work
        run(-1, "negative.json")
    assert not (tmp_path / "negative.json").exists()


def test_a_recipe_profile_fine_tunes_by_the_library_recipe_for_every_init(tmp_path):
    """A profile with ``recipe`` (as ``recipe.yaml``) fine-tunes through ``fine_tune_with_recipe``: the same
    steps and grid for scratch and the pretrained init, no test-time rows; ``--subset`` keeps a stratified
    part of the training and validation splits; the profile's ``datasets`` is what runs without ``--datasets``
    (only pneumoniamnist.npz exists here)."""
    module = load_benchmark("label_efficiency")
    data = tmp_path / "medmnist"
    data.mkdir()
    _fake_npz(data / "pneumoniamnist.npz", {"train": 40, "val": 12, "test": 20}, (28, 28), seed=0)
    path = _tiny_recipe_profile(tmp_path / "tiny_recipe.yaml", "recipe", datasets=["pneumoniamnist"], min_steps=3,
                                max_steps=3, evaluations=1, batch_size=8, min_batch=8)
    out = tmp_path / "result.json"
    module.main(["--data-dir", str(data), "--profile", str(path), "--fractions", "0.5", "1.0", "--seeds", "0",
                 "--subset", "30", "8", "--out", str(out)])
    written = json.loads(out.read_text())
    records = written["records"]
    assert {r["dataset"] for r in records} == {"pneumoniamnist_30"}
    assert {(r["init"], r["eval"]) for r in records} == {(i, e) for i in ("scratch", "rotation")
                                                         for e in ("knn", "linear", "finetune")}
    assert {r["n_labels"] for r in records if r["fraction"] == 1.0} == {30}
    tuned = [r["recipe"] for r in records if r["eval"] == "finetune"]
    assert all(t["steps"] == 3 and list(t["grid_val_auc"]) == ["1 full", "0.1 full"] for t in tuned)
    assert "ResNet-18 (28)" in written["tables"]["pneumoniamnist_30"]  # the published row of the full dataset

"""The label-efficiency profiles (benchmarks/profiles/*.yaml): each loads and validates, the recorded runs'
settings are exactly what the files hold, and a broken profile is one clear error naming the file and key."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml

from medssl3d.errors import InputError

from ._scripts import BENCHMARKS, load_benchmark


@pytest.fixture(scope="module")
def module():
    return load_benchmark("label_efficiency")


def test_every_profile_loads_and_validates(module):
    names = module.profile_names()
    assert {"full", "long", "long_shape", "quick", "recipe", "smoke"} <= set(names)
    for name in names:
        profile = module.load_profile(name)
        assert profile["name"] == name
        assert set(profile["methods"]) == {2, 3} and all(isinstance(m, tuple) for m in profile["methods"].values())
        assert sum(key in profile for key in ("epochs", "finetune_samples", "recipe")) == 1
        for dims in (2, 3):  # every fraction of the sweep has a fine-tuning length
            assert module.epochs_for(profile, 0.01, dims, 10) >= 1


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("label_efficiency*.json")), ids=lambda p: p.name)
def test_recorded_runs_used_exactly_the_profile_files(module, path):
    """Every committed result records its settings: the YAML profile of the same name must hold them, so a
    recorded run reruns with the same settings (``--methods`` overrides only the methods)."""
    for dataset, run in json.loads(path.read_text())["runs"].items():
        loaded = json.loads(json.dumps(module.load_profile(run["profile"])))  # keys as JSON writes them
        recorded = dict(run["settings"])
        if "--methods" in shlex.split(run["command"]):
            recorded.pop("methods"), loaded.pop("methods")
        # runs recorded before these two keys existed used the CT views and flips
        assert {k: loaded.pop(k) for k in ("views_3d", "augment_3d") if k not in recorded} in (
            {}, {"views_3d": "ct", "augment_3d": "flip"})
        if "recipe" in recorded:  # and before these two recipe fields existed, constant rates and the best candidate
            assert {k: loaded["recipe"].pop(k) for k in ("lr_decay", "selection") if k not in recorded["recipe"]} in (
                {}, {"lr_decay": "none", "selection": "best"})
            # and before the fit rule was the default, one cycle, which the profiles now pin
            assert {k: loaded["recipe"].pop(k) for k in ("fit_loss",) if k not in recorded["recipe"]} in (
                {}, {"fit_loss": None})
        assert recorded == loaded, (path.name, dataset)


def _write(tmp_path: Path, **changes) -> Path:
    """A profile of one's own with fixed fine-tuning epochs (the smoke profile's settings otherwise), changed."""
    profile = yaml.safe_load((BENCHMARKS / "profiles" / "smoke.yaml").read_text())
    del profile["finetune_samples"]
    profile["epochs"] = {0.01: 20, 0.1: 3, 1.0: 1}
    for key, value in changes.items():
        if value is None:
            profile.pop(key)
        else:
            profile[key] = value
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"augment_3d": "mixup"}, "'augment_3d' must be 'flip' or 'symmetry'; got 'mixup'"),
    ({"views_3d": "crop"}, "'views_3d' must be 'ct' or 'shape'"),
    ({"methods": {2: ["simclr"], 3: ["rubik"]}}, "'methods' at 3 is ['rubik']"),
    ({"methods": {2: ["simclr"], 4: ["simclr"]}}, "'methods' has the key 4"),
    ({"pretrain_batch": {2: 0, 3: 16}}, "'pretrain_batch' at 2 is 0; it must be an integer >= 1"),
    ({"epochs": {0.0: 3}}, "'epochs' has the key 0.0"),
    ({"finetune_lr": "fast"}, "'finetune_lr' must be a number > 0"),
    ({"class_balanced": "yes"}, "'class_balanced' must be true or false"),
    ({"workers": None}, "missing keys ['workers']"),
    ({"finetune_samples": {2: {0.1: 10}, 3: {0.1: 10}}}, "exactly one of 'epochs'"),
    ({"epochs": None}, "found neither"),
    ({"learning_rate": 0.1}, "unknown keys ['learning_rate']"),
])
def test_a_broken_profile_is_one_error_naming_the_file_and_key(module, tmp_path, changes, message):
    path = _write(tmp_path, **changes)
    with pytest.raises(InputError, match="profile mine.yaml: ") as error:
        module.load_profile(path)
    assert message in str(error.value)


def test_a_profile_file_of_ones_own_runs_and_bad_names_fail_before_any_work(module, tmp_path, capsys):
    path = _write(tmp_path, pretrain_iterations={2: 7, 3: 5})
    profile = module.load_profile(str(path))
    assert profile["name"] == "mine" and profile["pretrain_iterations"] == {2: 7, 3: 5}
    (tmp_path / "broken.yaml").write_text("encoder: [resnet10\n")
    with pytest.raises(InputError, match="profile broken.yaml is not valid YAML"):
        module.load_profile(tmp_path / "broken.yaml")
    with pytest.raises(SystemExit):
        module.main(["--profile", "nonesuch", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "no profile" in err and "'quick'" in err  # the error lists the shipped profiles


@pytest.mark.parametrize("datasets, message", [
    ("pneumoniamnist", "'datasets' must be a non-empty list of dataset names"),
    ([], "'datasets' must be a non-empty list of dataset names"),
])
def test_a_recipe_profile_names_its_default_datasets(module, tmp_path, datasets, message):
    """quick runs PneumoniaMNIST unless --datasets says otherwise; a bad 'datasets' is one error."""
    assert module.load_profile("quick")["datasets"] == ["pneumoniamnist"]
    assert "datasets" not in module.load_profile("recipe_v2")  # both MedMNIST sets
    profile = yaml.safe_load((BENCHMARKS / "profiles" / "quick.yaml").read_text())
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({**profile, "datasets": datasets}))
    with pytest.raises(InputError, match="profile mine.yaml: ") as error:
        module.load_profile(tmp_path / "mine.yaml")
    assert message in str(error.value)


def test_rotation_rescale_false_keeps_the_object_size_and_is_stamped(module, tmp_path):
    """``rotation_rescale: false``: the rotation pretext rotates the volume as it is (a mask keeps its voxel count);
    the default crops 80-100 % and resizes, which changes it. Only the non-default value enters the pretraining stamp,
    so exports of profiles without the key stay reusable; a non-boolean value is one error naming the key."""
    mask = np.zeros((1, 16, 16, 16), dtype=np.float32)
    mask[0, 3:11, 4:13, 5:9] = 1.0  # an off-centre box of 288 voxels
    counts = {}
    for rescale in (False, True):
        transform = module.pretext_transform("rotation", 3, 16, "shape", rotation_rescale=rescale)
        transform.set_random_state(seed=3)
        counts[rescale] = [float(transform({"image": mask})["image"].sum()) for _ in range(8)]
    assert counts[False] == [288.0] * 8
    assert any(abs(count - 288.0) > 1 for count in counts[True])
    images = np.zeros((4, 1, 16, 16, 16), dtype=np.float32)
    profile = module.load_profile("recipe_v6")
    assert "rotation_rescale" not in module.pretraining_settings("rotation", images, profile, "cpu")
    rigid = module.pretraining_settings("rotation", images, {**profile, "rotation_rescale": False}, "cpu")
    assert rigid["rotation_rescale"] is False
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({**yaml.safe_load(
        (BENCHMARKS / "profiles" / "recipe_v6.yaml").read_text()), "rotation_rescale": "no"}))
    with pytest.raises(InputError, match="mine.yaml.*'rotation_rescale' must be true or false"):
        module.load_profile(tmp_path / "mine.yaml")


def test_the_library_defaults_are_the_measured_recipe(module):
    """``medssl3d evaluate --finetune`` (FineTuneRecipe's defaults) fine-tunes exactly as the current profile
    recipe_v9 does, and the default profile 'full' shares that recipe; recipe_v4 and recipe_v6 are it without the
    fit rule (one cycle), pinned so that their records rerun."""
    from medssl3d.evaluation import FineTuneRecipe

    for name in ("recipe_v9", "full"):
        assert FineTuneRecipe.from_dict(module.load_profile(name)["recipe"]) == FineTuneRecipe(), name
    for name in ("recipe_v4", "recipe_v6"):
        recipe = FineTuneRecipe.from_dict(module.load_profile(name)["recipe"])
        assert recipe == dataclasses.replace(FineTuneRecipe(), fit_loss=None), name

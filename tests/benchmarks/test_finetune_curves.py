"""benchmarks/finetune_curves.py on a tiny fake PneumoniaMNIST: every validation evaluation is scored on the test
split, and the kept checkpoint's test AUC is the curve's point at the kept step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from ._scripts import load_benchmark
from .test_label_efficiency_smoke import _fake_npz


def test_curves_score_every_evaluation_and_agree_with_the_kept_model(tmp_path):
    module = load_benchmark("finetune_curves")
    le = module.le
    data = tmp_path / "medmnist"
    data.mkdir()
    _fake_npz(data / "pneumoniamnist.npz", {"train": 40, "val": 12, "test": 20}, (28, 28), seed=3)
    profile = yaml.safe_load((le.PROFILE_DIR / "recipe_v3.yaml").read_text())
    profile["recipe"].update(min_steps=5, max_steps=5, evaluations=2, batch_size=8, min_batch=8, head_warmup=0.2)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(profile))
    train_x = np.load(data / "pneumoniamnist.npz")["train_images"][:, None].astype(np.float32)
    export = le.random_init_export(train_x, le.load_profile(path), tmp_path / "scratch")
    out = tmp_path / "curves.json"
    result = module.main(["--profile", str(path), "--exports", f"scratch={export}", "--data-dir", str(data),
                          "--fraction", "0.5", "--seeds", "0", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    (run,) = result["runs"]["scratch"]
    # 5 steps, 1 of warm-up: the warm-up end (1), then every 2 of the 4 full steps (3, 5), per grid entry
    assert [(p["grid"], p["step"]) for p in run["points"]] == [
        (g, s) for g in ("1 full", "0.1 full") for s in (1, 3, 5)]
    assert all(p["labelled_loss"] >= 0 and 0 <= p["labelled_acc"] <= 1 for p in run["points"])
    kept = run["kept"]
    entry = f"{kept['encoder_lr_factor']:g} {kept['mode']}"
    (point,) = [p for p in run["points"] if p["grid"] == entry and p["step"] == kept["step_kept"]]
    assert point["val_auc"] == pytest.approx(kept["val_auc"], abs=1e-4)
    assert point["test_auc"] == pytest.approx(run["test_auc"], abs=1e-4)


def test_bad_arguments_are_one_error_before_any_work(tmp_path, capsys):
    module = load_benchmark("finetune_curves")
    with pytest.raises(SystemExit):
        module.main(["--exports", "encoder.pt", "--data-dir", str(tmp_path)])
    assert "INIT=PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module.main(["--profile", "nonesuch", "--exports", "a=b.pt", "--data-dir", str(tmp_path)])
    assert "no profile" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a profile without a recipe has no validation evaluations to follow
        module.main(["--profile", "long", "--exports", "a=b.pt", "--data-dir", str(tmp_path)])
    assert "has no recipe" in capsys.readouterr().err


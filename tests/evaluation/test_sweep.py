"""``medssl3d sweep``: a tiny two-run sweep of the Models Genesis CT bundle, trained with ``monai.bundle run``,
evaluated with kNN and compared; its resume, its checks before any run, and the drop-one ablation grid."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from medssl3d.cli import main
from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.engine import load_encoder_export
from medssl3d.evaluation.sweep import _comparison, drop_one_grid, load_sweep

ROOT = Path(__file__).resolve().parents[2]
GENESIS = ROOT / "bundles" / "genesis_ct" / "configs" / "train.yaml"
MULTITASK = ROOT / "bundles" / "multitask_ct" / "configs" / "train.yaml"
# the tiny overrides of tests/bundles/test_pretraining_bundles.py (TINY + CT_TINY); 2 iterations: 2 epochs of
# the one-volume validation list at batch 1; no checkpoint before the end
TINY = {"epochs": 2, "batch_size": 1, "num_workers": 0, "cache_rate": 0, "checkpoint_every": 100, "log_every": 1,
        "encoder": "resnet10", "crop_size": [32, 32, 16], "min_input_size": 16, "crops_per_volume": 2,
        "datalist_key": "validation"}


def write_sweep(path: Path, **content) -> Path:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """6 CT cases; seed 11 gives both classes in the training list (0, 1, 0, 1) and class 0 in the test list."""
    return synthesize_cohort("ct", 6, tmp_path_factory.mktemp("sweep") / "ct", (64, 64, 32), seed=11, progress=False)


def tiny_sweep(path: Path, datalist: Path, **changes) -> Path:
    content = {
        "config_file": str(GENESIS),
        "overrides": {"dataset_dir": str(datalist.parent), **TINY},
        "grid": {"lr": [0.001, 0.1]},
        "reference": {"lr": 0.001},
        "env": {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1},
        "evaluation": {"datalist": str(datalist), "chain": "ct", "fit": "crop", "probes": ["knn_weighted"], "k": 3},
    }
    content.update(changes)
    return write_sweep(path, **content)


@pytest.fixture(scope="module")
def swept(cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    sweep, out = tiny_sweep(root / "sweep.yaml", cohort), root / "out"
    assert main(["sweep", str(sweep), "--out", str(out)]) == 0
    # the first run's table, read now: test_resumed_sweep_skips_finished_runs rewrites it, in whichever order they run
    return sweep, out, json.loads((out / "comparison.json").read_text())["rows"]


def test_sweep_trains_each_value_and_compares_them(swept):
    _, out, rows = swept
    assert [(r["run"], r["lr"], r["method"], r["status"], r["n"]) for r in rows] == [
        ("lr=0.001", 0.001, "knn_weighted", "trained", 1), ("lr=0.1", 0.1, "knn_weighted", "trained", 1)]
    assert all(0 <= r["accuracy_mean"] <= 1 for r in rows)
    assert rows[0]["delta_accuracy"] == 0
    assert rows[1]["delta_accuracy"] == pytest.approx(rows[1]["accuracy_mean"] - rows[0]["accuracy_mean"])
    for run, lr in (("lr=0.001", 0.001), ("lr=0.1", 0.1)):
        assert yaml.safe_load((out / run / "args.yaml").read_text())["lr"] == lr
    encoders = [load_encoder_export(out / run / "models" / "encoder.pt", 3, 1, "resnet10")[0].state_dict()
                for run in ("lr=0.001", "lr=0.1")]
    assert not torch.equal(encoders[0]["conv1.weight"], encoders[1]["conv1.weight"])
    table = (out / "comparison.md").read_text()
    assert "| run | lr | method | n | accuracy |" in table and "| lr=0.1 | 0.1 | knn_weighted | 1 |" in table


def test_resumed_sweep_skips_finished_runs(swept, capsys):
    sweep, out, _ = swept
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/models/encoder.pt")}
    before = json.loads((out / "comparison.json").read_text())["rows"]
    assert main(["sweep", str(sweep), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count(": reused") == 2
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/models/encoder.pt")} == stamps and len(stamps) == 2
    after = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["status"] for r in after] == ["reused", "reused"]
    assert [r["accuracy_mean"] for r in after] == [r["accuracy_mean"] for r in before]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_bad_sweep_files_fail_before_any_run(cohort, tmp_path, capsys):
    out = tmp_path / "out"
    cases = [
        ({"grid": {"batch_sise": [1, 2]}}, "grid key 'batch_sise' is not in the config", "did you mean batch_size"),
        ({"overrides": {"epochs": 1, "crop": [1]}}, "overrides key 'crop' is not in the config", ""),
        ({"grid": {}, "reference": {}}, "the grid is empty", ""),
        ({"grid": {"lr": []}, "reference": {}}, "grid key 'lr' needs a non-empty list", ""),
        ({"config_file": str(tmp_path / "missing.yaml")}, "missing.yaml do not exist", ""),
        ({"reference": {"lr": 0.5}}, "reference lr: 0.5 is not one of the swept values", ""),
        ({"evaluation": {"datalist": str(cohort), "chain": "ct", "probes": ["svm"]}}, "evaluation: argument --probes",
         "invalid choice: 'svm'"),
        ({"evaluation": {"datalist": str(tmp_path / "none.json"), "chain": "ct"}}, "none.json' does not exist", ""),
    ]
    for changes, message, hint in cases:
        assert main(["sweep", str(tiny_sweep(tmp_path / "sweep.yaml", cohort, **changes)), "--out", str(out)]) == 2
        err = one_line_error(capsys)
        assert message in err and hint in err, err
    assert not out.exists(), "nothing may run or be written when the sweep file is wrong"


def test_drop_one_grid():
    assert drop_one_grid(("genesis", "rotation", "simclr")) == [
        ["genesis", "rotation", "simclr"], ["rotation", "simclr"], ["genesis", "simclr"], ["genesis", "rotation"]]
    for bad in (["genesis"], ["genesis", "genesis"], "genesis"):
        with pytest.raises(ValueError, match="drop_one_grid"):
            drop_one_grid(bad)


def test_drop_one_sweep_reports_each_task_change_against_all_tasks(cohort, tmp_path, capsys):
    """From the multitask bundle's own task list (no values given), crossed with a grid key; the delta of each
    drop is against the all-tasks run of the same grid value and probe."""
    path = tiny_sweep(tmp_path / "drop.yaml", cohort, config_file=str(MULTITASK), grid={"epochs": [1, 2]},
                      reference={}, drop_one={"key": "tasks"})
    sweep = load_sweep(path)
    assert [r.name for r in sweep["runs"][:4]] == ["drop-none_epochs=1", "drop-genesis_epochs=1",
                                                  "drop-rotation_epochs=1", "drop-simclr_epochs=1"]
    assert sweep["runs"][1].params == {"epochs": 1, "tasks": ["rotation", "simclr"]}
    assert sweep["reference"] == {"tasks": ["genesis", "rotation", "simclr"]}
    accuracy = {"drop-none_epochs=1": 0.5, "drop-genesis_epochs=1": 0.25, "drop-none_epochs=2": 0.75,
                "drop-rotation_epochs=2": 1.0}
    results = {r.name: (r, "trained", [{"init": "x", "method": "knn_weighted", "seed": 0, "accuracy": a, "auc": a,
                                         "f1_weighted": a, "precision_weighted": a, "recall_weighted": a}])
               for r in sweep["runs"] if (a := accuracy.get(r.name)) is not None}
    rows = {r["run"]: r for r in _comparison(sweep, results)}
    assert rows["drop-genesis_epochs=1"]["dropped"] == "genesis"
    assert rows["drop-genesis_epochs=1"]["tasks"] == "rotation, simclr"
    assert rows["drop-genesis_epochs=1"]["delta_accuracy"] == pytest.approx(-0.25)
    assert rows["drop-rotation_epochs=2"]["delta_accuracy"] == pytest.approx(0.25)
    assert rows["drop-none_epochs=2"]["delta_accuracy"] == 0
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    assert capsys.readouterr().out.count(": to train") == 8 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, runs", [("batch_size", ["batch_size=16", "batch_size=32", "batch_size=64"]),
                                         ("multitask_drop_one", ["drop-none", "drop-genesis", "drop-rotation",
                                                                 "drop-simclr"])])
def test_example_sweep_files_fit_their_bundles(name, runs, monkeypatch):
    monkeypatch.chdir(ROOT)  # the examples' paths are relative to the repository root
    sweep = load_sweep(ROOT / "configs" / "sweeps" / f"{name}.yaml")
    assert [r.name for r in sweep["runs"]] == runs and sweep["reference"]

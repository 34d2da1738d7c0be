"""``medssl3d evaluate`` end to end on a tiny synthetic X-ray cohort, and its one-line errors."""

import json

import pytest
import torch

from medssl3d.cli import main
from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.engine import export_encoder
from medssl3d.networks import build_encoder


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("xray")
    datalist = synthesize_cohort("xray", 12, root / "cohort", (64, 64), seed=0, progress=False)
    torch.manual_seed(1)
    export = export_encoder(build_encoder("resnet10", 2, 1), root / "encoder.pt", patch_size=[32, 32], method="SimCLR")
    return datalist, export


def evaluate(cohort, out, *extra):
    datalist, export = cohort
    return main(["evaluate", "--encoder", str(export), "--datalist", str(datalist), "--chain", "xray",
                 "--out", str(out), "--mlp-epochs", "5", *extra])


def test_end_to_end_report_holds_numbers(cohort, tmp_path, capsys):
    out = tmp_path / "report"
    assert evaluate(cohort, out, "--fractions", "0.5", "1", "--seeds", "0", "1", "--k", "5", "--compare-scratch") == 0
    assert "report:" in capsys.readouterr().out
    saved = json.loads((out / "metrics.json").read_text())["metrics"]
    rows = {(r["init"], r["method"]): r for r in saved["classification"]}
    assert set(rows) == {(i, m) for i in ("SimCLR", "scratch")
                         for m in ("knn_weighted", "knn_majority", "linear_probe", "mlp_probe")}
    assert rows["SimCLR", "linear_probe"]["n"] == 2 and rows["SimCLR", "knn_weighted"]["n"] == 1
    assert all(0 <= r["accuracy_mean"] <= 1 for r in rows.values())
    assert saved["setup"]["n_train"] == 9 and saved["setup"]["k"] == 5 and saved["setup"]["patch_size"] == "32x32"
    assert {(r["init"], r["fraction"]) for r in saved["label_fractions"]} == {
        (i, f) for i in ("SimCLR", "scratch") for f in (0.5, 1.0)}
    assert set(saved["representation_quality"]) == {"SimCLR", "scratch"}
    report = (out / "report.md").read_text()
    accuracy = rows["SimCLR", "mlp_probe"]
    assert f"| SimCLR | mlp_probe | 2 | {accuracy['accuracy_mean']:.4g} ± {accuracy['accuracy_std']:.4g} |" in report
    for png in ("tsne_SimCLR.png", "tsne_scratch.png", "label_fractions.png"):
        assert (out / png).stat().st_size > 1000 and f"]({png})" in report


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_datalist_without_labels_is_named(cohort, tmp_path, capsys):
    datalist, export = cohort
    content = json.loads(datalist.read_text())
    for item in content["test"]:
        del item["class"]
    unlabelled = datalist.parent / "unlabelled.json"
    unlabelled.write_text(json.dumps(content))
    assert evaluate((unlabelled, export), tmp_path) == 2
    assert f"error: no labels in {unlabelled} key test" in one_line_error(capsys)


def test_impossible_fraction_and_unfit_export_are_named(cohort, tmp_path, capsys):
    assert evaluate(cohort, tmp_path, "--fractions", "0.01") == 2
    assert "label fraction 0.01 leaves class" in one_line_error(capsys)
    assert evaluate(cohort, tmp_path, "--spatial-dims", "3") == 2
    assert "spatial_dims is 2 but 3 is expected" in one_line_error(capsys)
    datalist, _ = cohort
    assert main(["evaluate", "--scratch", "--spatial-dims", "2", "--datalist", str(datalist), "--chain", "xray",
                 "--out", str(tmp_path)]) == 2
    assert "--scratch needs --patch-size" in one_line_error(capsys)


def test_end_to_end_3d_ct(tmp_path, capsys):
    datalist = synthesize_cohort("ct", 6, tmp_path / "ct", (56, 56, 12), seed=0, progress=False)
    content = json.loads(datalist.read_text())  # the tiny cohort's CTs all hold nodules: relabel for two classes
    content["test"] = content["validation"] + content["test"]
    for split in ("training", "test"):
        for i, item in enumerate(content[split]):
            item["class"] = i % 2
    datalist.write_text(json.dumps(content))
    export = export_encoder(build_encoder("resnet10", 3, 1), tmp_path / "encoder.pt", patch_size=[32, 32, 16])
    assert main(["evaluate", "--encoder", str(export), "--datalist", str(datalist), "--chain", "ct", "--out",
                 str(tmp_path / "report"), "--mlp-epochs", "2", "--fit", "crop"]) == 0
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())["metrics"]
    assert saved["setup"]["patch_size"] == "32x32x16" and saved["setup"]["n_train"] == 4
    assert {r["method"] for r in saved["classification"] if r["init"] == "pretrained"} == {
        "knn_weighted", "knn_majority", "linear_probe", "mlp_probe"}
    assert "| pretrained | linear_probe | 1 |" in (tmp_path / "report" / "report.md").read_text()


def test_folds_cross_validate_over_both_keys(cohort, tmp_path):
    """--folds 3 pools training (9) and test (2) items: each probe has one row per fold, every item is tested
    once (the summed confusion matrix counts 11), and the summary is mean ± std over the folds."""
    content = json.loads(cohort[0].read_text())
    assert (len(content["training"]), len(content["test"])) == (9, 2)
    out = tmp_path / "folds"
    assert evaluate(cohort, out, "--folds", "3", "--k", "3", "--probes", "knn_weighted", "linear_probe") == 0
    saved = json.loads((out / "metrics.json").read_text())
    metrics, runs = saved["metrics"], saved["tables"]["runs (test items, one row per fold and seed)"]
    assert {r["method"] for r in runs} == {"knn_weighted", "linear_probe"}
    assert sorted(r["fold"] for r in runs if r["method"] == "knn_weighted") == [0, 1, 2]
    assert sum(map(sum, metrics["confusion_matrices"]["SimCLR knn_weighted"])) == 11
    row = next(r for r in metrics["classification"] if r["method"] == "knn_weighted")
    accuracies = [r["accuracy"] for r in runs if r["method"] == "knn_weighted"]
    assert row["n"] == 3 and row["accuracy_mean"] == pytest.approx(sum(accuracies) / 3)
    assert metrics["setup"]["split"].startswith("3-fold") and metrics["setup"]["n_train"] == "7-8"


def test_folds_larger_than_a_class_is_named(cohort, tmp_path, capsys):
    assert evaluate(cohort, tmp_path, "--folds", "7") == 2
    err = one_line_error(capsys)
    assert "--folds 7 on datalist" in err and "at most the size of the smallest class" in err


def test_finetune_uses_the_recipe_for_every_init_with_validation_held_out(cohort, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("min_steps: 3\nmax_steps: 3\nhead_warmup: 0.34\nevaluations: 1\nmin_batch: 4\n"
                      "grid: [[1.0, full], [0.1, partial]]\n")
    datalist, export = cohort
    content = json.loads(datalist.read_text())
    one_class = [item for item in content.get("validation", []) + content["training"] if item["class"] == 1][:1]
    content["validation"] = one_class
    with_val = datalist.with_name("one_class_validation.json")
    with_val.write_text(json.dumps(content))
    assert evaluate((with_val, export), tmp_path / "r1", "--probes", "linear_probe", "--finetune") != 0
    assert "needs both classes" in one_line_error(capsys)
    content.pop("validation")
    datalist = datalist.with_name("no_validation.json")
    datalist.write_text(json.dumps(content))
    out = tmp_path / "report"
    assert evaluate((datalist, export), out, "--probes", "linear_probe", "--compare-scratch", "--finetune",
                    "--recipe", str(recipe)) == 0
    saved = json.loads((out / "metrics.json").read_text())["metrics"]
    assert {(r["init"], r["method"]) for r in saved["classification"]} == {
        (i, m) for i in ("SimCLR", "scratch") for m in ("linear_probe", "finetune")}
    runs = saved["finetune"]["runs"]
    assert [r["init"] for r in runs] == ["SimCLR", "scratch"]
    for run in runs:  # the same budget and grid for both inits, chosen on held-out training items
        assert (run["steps"], run["warmup_steps"]) == (3, 1)
        assert list(run["grid_val_auc"]) == ["1 full", "0.1 partial"]
    assert saved["finetune"]["validation"].startswith("15% of training")
    recipe.write_text("min_steps: 0\n")
    assert evaluate(cohort, tmp_path / "bad", "--finetune", "--recipe", str(recipe)) != 0
    assert "--recipe" in one_line_error(capsys)

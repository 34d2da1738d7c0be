"""``medssl3d evaluate --detections``: detection runs scored against reference boxes on tiny synthetic cohorts
(3D LUNA16 world-mm CSV and JSON, 2D pixel CSV), and its one-line errors."""

import csv
import json

import pytest

from medssl3d.cli import main
from medssl3d.data.synthetic import synthesize_cohort


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct")
    datalist = synthesize_cohort("ct", 10, root / "cohort", (64, 64, 24), (1.0, 1.0, 2.0), seed=1, progress=False)
    with open(root / "cohort" / "nodules.csv", newline="") as handle:
        nodules = list(csv.DictReader(handle))
    test = {item["image"].split("/")[-1].removesuffix(".nii.gz") for item in json.loads(datalist.read_text())["test"]}
    return datalist, [row for row in nodules if row["seriesuid"] in test]


def _write_ct_run(folder, rows):
    folder.mkdir(parents=True)
    with open(folder / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "probability"])
        writer.writerows(rows)
    return folder


def _evaluate(datalist, out, *runs, boxes="nodules.csv", extra=()):
    return main(["evaluate", "--detections", *map(str, runs), "--boxes", str(datalist.parent / boxes),
                 "--datalist", str(datalist), "--out", str(out), *extra])


def test_ct_runs_get_coco_at_iou_010_and_luna16_froc(ct, tmp_path, capsys):
    datalist, nodules = ct
    assert len(nodules) >= 4
    far = [(row["seriesuid"], -300.0, -300.0, 0.0, 5.0, 0.3) for row in nodules]  # one false positive per nodule
    found = [(r["seriesuid"], r["coordX"], r["coordY"], r["coordZ"], r["diameter_mm"], 0.9) for r in nodules]
    half = len(nodules) // 2
    perfect = _write_ct_run(tmp_path / "perfect", found + far)
    # half the nodules, the other half missed by their own diameter (centre outside the LUNA16 radius, IoU 0)
    shifted = [(s, float(x) + 2 * float(d), y, z, d, p) for s, x, y, z, d, p in found[half:]]
    partial = _write_ct_run(tmp_path / "partial", found[:half] + shifted)
    assert _evaluate(datalist, tmp_path / "report", perfect, partial) == 0
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())["metrics"]
    rows = saved["detection"]
    assert rows["perfect"]["froc"] == pytest.approx(1.0) and rows["perfect"]["mAP"] == pytest.approx(1.0)
    assert rows["perfect"]["AP_10"] == pytest.approx(1.0) and rows["perfect"]["sensitivity_at_0.125fp"] == 1.0
    # 0 true hits among the shifted detections: sensitivity half/n at every rate (they add false positives)
    assert rows["partial"]["sensitivity_at_8fp"] == pytest.approx(half / len(nodules))
    assert rows["partial"]["froc"] <= half / len(nodules) + 1e-9 and rows["partial"]["mAP"] < 0.75
    assert saved["setup"]["spatial_dims"] == 3 and saved["setup"]["n_reference_boxes"] == len(nodules)
    assert saved["setup"]["coordinates"] == "world mm (LPS)"
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| perfect | 1 | 1 | 1 | 1 |" in report and "| partial |" in report and "sensitivity_at_8fp" in report
    assert "froc 1.000" in capsys.readouterr().out


def test_ct_json_of_the_writer_scores_as_its_csv(ct, tmp_path):
    datalist, nodules = ct
    folder = tmp_path / "run"
    folder.mkdir()
    detections = {}
    for r in nodules:  # the writer's JSON: cccwhd boxes in mm (here cubes, as the CSV's diameters make them)
        detections.setdefault(r["seriesuid"], []).append(
            {"box": [float(r[k]) for k in ("coordX", "coordY", "coordZ")] + [float(r["diameter_mm"])] * 3,
             "class_name": "nodule", "probability": 0.8})
    detections["ct_9999"] = []  # an image outside the evaluated list is refused, even without detections
    (folder / "predictions.json").write_text(json.dumps(detections))
    assert main(["evaluate", "--detections", str(folder), "--boxes", str(datalist.parent / "nodules.csv"),
                 "--datalist", str(datalist), "--out", str(tmp_path / "bad")]) == 2
    del detections["ct_9999"]
    (folder / "predictions.json").write_text(json.dumps(detections))
    copied = tmp_path / "datalist.json"  # a datalist kept apart from its images, as the bundles' dataset_dir allows
    copied.write_text(datalist.read_text())
    assert main(["evaluate", "--detections", str(folder), "--boxes", str(datalist.parent / "nodules.csv"),
                 "--datalist", str(copied), "--dataset-dir", str(datalist.parent),
                 "--out", str(tmp_path / "report")]) == 0
    row = json.loads((tmp_path / "report" / "metrics.json").read_text())["metrics"]["detection"]["run"]
    assert row["froc"] == pytest.approx(1.0) and row["mAP"] == pytest.approx(1.0)


def test_xray_runs_get_coco_at_050_095_and_no_froc(tmp_path):
    datalist = synthesize_cohort("xray", 12, tmp_path / "cohort", (64, 64), seed=0, progress=False)
    test = {item["image"].split("/")[-1].removesuffix(".png") for item in json.loads(datalist.read_text())["test"]}
    with open(tmp_path / "cohort" / "boxes.csv", newline="") as handle:
        boxes = [row for row in csv.DictReader(handle) if row["image_id"] in test and row["class_name"] == "nodule"]
    assert boxes
    run = tmp_path / "xray_run"
    run.mkdir()
    with open(run / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "class_name", "x_min", "y_min", "x_max", "y_max", "probability"])
        for row in boxes:  # each box found exactly
            x0, y0, x1, y1 = (float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
            writer.writerow([row["image_id"], "nodule", x0, y0, x1, y1, 0.9])
    assert _evaluate(datalist, tmp_path / "report", run / "predictions.csv", boxes="boxes.csv") == 0
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())["metrics"]
    row = saved["detection"]["xray_run"]
    assert set(row) == {"mAP", "AP_50", "mAR"} and row["mAP"] == pytest.approx(1.0)
    assert saved["setup"]["coco"] == "mAP/mAR over IoU 0.50:0.95, AP at IoU 0.50"
    assert saved["setup"]["coordinates"] == "pixels"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_bad_detection_inputs_are_named_in_one_line(ct, tmp_path, capsys):
    datalist, nodules = ct
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert _evaluate(datalist, tmp_path / "r", empty) == 2
    assert "no predictions.json or predictions.csv" in one_line_error(capsys)
    training = json.loads(datalist.read_text())["training"][0]["image"].split("/")[-1].removesuffix(".nii.gz")
    other = _write_ct_run(tmp_path / "other", [(training, 0.0, 0.0, 0.0, 5.0, 0.5)])
    assert _evaluate(datalist, tmp_path / "r", other) == 2
    err = one_line_error(capsys)
    assert "predictions.csv row 2" in err and f"'{training}' is not in list 'test'" in err
    assert main(["evaluate", "--detections", str(other), "--datalist", str(datalist), "--out", str(tmp_path)]) == 2
    assert "--detections needs --boxes" in one_line_error(capsys)
    assert main(["evaluate", "--scratch", "--datalist", str(datalist), "--out", str(tmp_path)]) == 2
    assert "--chain is required" in one_line_error(capsys)

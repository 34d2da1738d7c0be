"""Synthetic detection data: nodule diameters in the CT table, --nodule-scale, X-ray boxes per image."""

import csv

import pytest

from medssl3d.cli import main
from medssl3d.data.synthetic import synthesize_cohort


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_nodule_scale_multiplies_the_diameters(tmp_path):
    sizes = {"size": (64, 64, 24), "spacing": (1.0, 1.0, 2.0), "seed": 4, "progress": False}
    plain = _rows(synthesize_cohort("ct", 2, tmp_path / "a", **sizes).parent / "nodules.csv")
    large = _rows(synthesize_cohort("ct", 2, tmp_path / "b", nodule_scale=1.3, **sizes).parent / "nodules.csv")
    first = {row["seriesuid"]: float(row["diameter_mm"]) for row in reversed(plain)}  # each scan's first nodule
    scaled = {row["seriesuid"]: float(row["diameter_mm"]) for row in reversed(large)}
    assert first and all(scaled[series] == pytest.approx(1.3 * d, abs=2e-3) for series, d in first.items())


def test_xray_box_table_lists_every_image(tmp_path):
    out = synthesize_cohort("xray", 6, tmp_path / "x", size=(64, 64), progress=False).parent
    rows = _rows(out / "boxes.csv")
    assert {row["image_id"] for row in rows} == {f"xray_{i:04d}" for i in range(6)}
    for row in rows:
        if row["class_name"] == "No finding":
            assert not any(row[k] for k in ("x_min", "y_min", "x_max", "y_max"))
        else:
            x0, y0, x1, y1 = (float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64


def test_nodule_scale_is_for_ct_only(tmp_path, capsys):
    assert main(["synth", "--modality", "xray", "--n", "1", "--nodule-scale", "2", "--out", str(tmp_path / "x")]) == 2
    assert "--nodule-scale applies to --modality ct" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

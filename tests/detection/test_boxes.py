"""Box tables -> detection items: synthetic boxes land on the nodules through MONAI's box transforms (2D pixels,
3D world LPS mm), boxes follow resizing and padding both ways, and bad rows give one error naming the row."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from monai.apps.detection.transforms.dictionary import ConvertBoxToStandardModed
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Resized, SpatialPadd, Spacingd

from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.detection.boxes import load_detection_datalist
from medssl3d.detection.transforms import BoxToImageCoordinated, BoxToWorldCoordinated
from medssl3d.errors import InputError


@pytest.fixture(scope="module")
def xray(tmp_path_factory):
    return synthesize_cohort("xray", 6, tmp_path_factory.mktemp("x") / "xray", size=(64, 64), progress=False).parent


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "ct"
    return synthesize_cohort("ct", 3, out, size=(64, 64, 24), spacing=(0.8, 0.8, 2.0), seed=2, progress=False).parent


def _all(root, dims):
    return [item for key in ("training", "validation", "test")
            for item in load_detection_datalist(root / "datalist.json", key, root,
                                                root / ("boxes.csv" if dims == 2 else "nodules.csv"), dims)]


def test_xray_boxes_sit_on_the_nodules(xray):
    rows = list(csv.DictReader(open(xray / "boxes.csv")))
    assert list(rows[0]) == ["image_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
    items = _all(xray, 2)
    negatives = [i for i in items if i["class"] == 0]
    assert negatives and all(i["box"].shape == (0, 4) for i in negatives)  # "No finding" rows: no boxes
    assert sum(len(i["box"]) for i in items) == sum(r["class_name"] == "nodule" for r in rows) > 0
    load = Compose([LoadImaged("image"), EnsureChannelFirstd("image")])
    for item in (i for i in items if i["class"] == 1):
        image = load(item)["image"][0].numpy()
        for x0, y0, x1, y1 in item["box"]:  # MONAI's first image axis is x (the PNG's columns)
            inside = image[int(np.ceil(x0)):int(x1) + 1, int(np.ceil(y0)):int(y1) + 1]
            ring = image[max(int(x0) - 4, 0):int(x1) + 5, max(int(y0) - 4, 0):int(y1) + 5]
            assert inside.max() > np.median(ring)  # the nodule brightens its box over the surroundings


def test_ct_boxes_land_on_nodule_voxels_after_reorientation_and_resampling(ct):
    items = [i for i in _all(ct, 3) if len(i["box"])]
    assert items
    chain = Compose([
        LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"]),
        Orientationd(["image", "label"], axcodes="RAS"), Spacingd(["image", "label"], (1.0, 1.0, 1.5), mode=("bilinear", "nearest")),
        ConvertBoxToStandardModed("box", mode="cccwhd"),
        BoxToImageCoordinated("box", box_ref_image_keys="image", affine_lps_to_ras=True),
    ])
    rows = list(csv.DictReader(open(ct / "nodules.csv")))
    assert list(rows[0])[:5] == ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
    for item in items:
        out = chain(item)
        label = out["label"][0].numpy()
        for box in out["box"]:
            centre = np.round((box[:3] + box[3:]) / 2).astype(int)
            assert label[tuple(centre)] == 2, f"box centre {centre} is not on a nodule"
            sides_mm = (box[3:] - box[:3]) * np.array([1.0, 1.0, 1.5])
            assert np.allclose(sides_mm, sides_mm[0], rtol=1e-4)  # a sphere's box: one diameter on every axis
        back = BoxToWorldCoordinated("box", box_ref_image_keys="image", affine_lps_to_ras=True)(out)
        np.testing.assert_allclose(back["box"], ConvertBoxToStandardModed("box", mode="cccwhd")(item)["box"],
                                   atol=1e-3)


def test_boxes_follow_resize_and_padding_both_ways(xray):
    item = next(i for i in _all(xray, 2) if len(i["box"]))
    chain = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Resized("image", 96, size_mode="longest"),
                     SpatialPadd("image", (100, 100)), BoxToImageCoordinated("box", "image")])
    out = chain(item)
    scaled = (torch.as_tensor(item["box"]) + 0.5) * 1.5 - 0.5 + 2  # pixel centres scale about -0.5; pad 2 each side
    np.testing.assert_allclose(np.asarray(out["box"]), scaled.numpy(), atol=1e-3)
    back = BoxToWorldCoordinated("box", "image")(out)
    np.testing.assert_allclose(np.asarray(back["box"]), item["box"], atol=1e-3)


def _write(path, header, rows):
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


BOX_HEADER = ["image_id", "class_name", "x_min", "y_min", "x_max", "y_max"]


@pytest.mark.parametrize("row,message", [
    (["xray_0000", "nodule", "10", "10", "10", "20"], "row 3: box .* has zero or negative size"),
    (["xray_0000", "nodule", "50", "50", "70", "60"], "row 3: box .* lies outside image 'xray_0000.png' of 64x64"),
    (["xray_0000", "mass", "1", "1", "5", "5"], "row 3: class 'mass' is not one of the 1 detected classes"),
    (["xray_9999", "nodule", "1", "1", "5", "5"], "row 3: image 'xray_9999' is not in the datalist"),
    (["xray_0000", "nodule", "a", "1", "5", "5"], "row 3: non-numeric box"),
])
def test_bad_box_rows_name_the_row(xray, tmp_path, row, message):
    table = _write(tmp_path / "boxes.csv", BOX_HEADER, [["xray_0001", "No finding", "", "", "", ""], row])
    with pytest.raises(InputError, match=message):
        for key in ("training", "validation", "test"):
            load_detection_datalist(xray / "datalist.json", key, xray, table, 2)


def test_bad_nodule_rows_name_the_row(ct, tmp_path):
    header = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
    first = next(r for r in csv.DictReader(open(ct / "nodules.csv")))
    good = [first["seriesuid"], first["coordX"], first["coordY"], first["coordZ"], first["diameter_mm"]]
    cases = [
        ([good, ["ct_0099", "0", "0", "0", "5"]], "row 3: series 'ct_0099' is not in the datalist"),
        ([good, [*good[:4], "0"]], "row 3: diameter_mm must be a positive number"),
        ([good, [good[0], "0", "0", "5000", "5"]], r"row 3: candidate at LPS \(0.0, 0.0, 5000.0\) mm lies outside"),
    ]
    datalist = json.loads((ct / "datalist.json").read_text())
    key = next(k for k in ("training", "validation", "test")
               if any(i["patient_id"] == good[0] for i in datalist[k]))
    for rows, message in cases:
        table = _write(tmp_path / "nodules.csv", header, rows)
        with pytest.raises(InputError, match=message):
            load_detection_datalist(ct / "datalist.json", key, ct, table, 3)

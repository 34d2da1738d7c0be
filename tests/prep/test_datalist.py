"""Datalists: patient-level stratified splits, nested label fractions, pretraining pools, MONAI loading."""

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from medssl3d.prep.datalist import build_datalist, collect_items, fraction_key, make_datalist

ROOT = Path(__file__).resolve().parents[2]
FRACTIONS = (0.1, 0.2, 0.5, 0.9)
N_PATIENTS = 40


def _cli(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "data_prep" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def dataset(tmp_path):
    """40 patients with 1–3 images each (``p007_2.png``), masks, and a CSV of classes: 2/3 'benign'."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rows = ["image,label"]
    for patient in range(N_PATIENTS):
        label = "malignant" if patient % 3 == 0 else "benign"
        for k in range(int(rng.integers(1, 4))):
            name = f"p{patient:03d}_{k}.png"
            (tmp_path / "images" / name).write_bytes(b"x")
            (tmp_path / "masks" / name).write_bytes(b"m")
            rows.append(f"{name},{label}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def _build(root, seed=0, fractions=FRACTIONS, name="datalist.json", **kwargs):
    path = build_datalist(root / "images", root / "out" / name, masks_dir=root / "masks", table=root / "labels.csv",
                          patient_regex=r"^(?P<patient>p\d+)_", label_fractions=fractions, seed=seed, **kwargs)
    return path, json.loads(path.read_text())


def _patients(items):
    return {item["patient_id"] for item in items}


def test_splits_are_patient_disjoint_and_stratified(dataset):
    _, datalist = _build(dataset)
    splits = [datalist[key] for key in ("training", "validation", "test")]
    patients = [_patients(items) for items in splits]
    assert not (patients[0] & patients[1]) and not (patients[0] & patients[2]) and not (patients[1] & patients[2])
    assert sum(len(items) for items in splits) == len(list((dataset / "images").iterdir()))  # every image once
    assert [len(p) for p in patients] == [28, 4, 8]  # 70/10/20 % of 40 patients
    share = sum(1 for p in range(N_PATIENTS) if p % 3 == 0) / N_PATIENTS
    for items, group in zip(splits, patients):
        malignant = len({i["patient_id"] for i in items if datalist["classes"][str(i["class"])] == "malignant"})
        assert abs(malignant - share * len(group)) <= 1
    assert datalist["classes"] == {"0": "benign", "1": "malignant"}


def test_label_fractions_nested_stratified_and_pools(dataset):
    _, datalist = _build(dataset)
    training = datalist["training"]
    classes = {i["patient_id"]: i["class"] for i in training}
    totals = Counter(classes.values())
    previous = set()
    for fraction in FRACTIONS:
        subset = _patients(datalist[fraction_key("training", fraction)])
        assert len(subset) == int(np.floor(fraction * len(classes) + 0.5))
        assert previous <= subset  # nested
        previous = subset
        kept = Counter(classes[p] for p in subset)
        for label, total in totals.items():  # stratified: each class in proportion, ±1 patient
            assert abs(kept[label] - total * len(subset) / len(classes)) <= 1
        # every image of a chosen patient comes along
        assert len(datalist[fraction_key("training", fraction)]) == sum(1 for i in training if i["patient_id"] in subset)
        pool = datalist[fraction_key("unlabeled", fraction)]
        assert _patients(pool) == set(classes) - subset
        assert all("class" not in i and "label" not in i for i in pool)
        assert len(pool) + len(datalist[fraction_key("training", fraction)]) == len(training)


def test_reproducible_by_seed(dataset):
    _, first = _build(dataset, seed=1, name="a.json")
    _, again = _build(dataset, seed=1, name="b.json")
    _, other = _build(dataset, seed=2, name="c.json")
    assert first == again
    assert _patients(first["training"]) != _patients(other["training"])
    assert _patients(first["training_10pct"]) != _patients(other["training_10pct"])


def test_monai_loads_every_list(dataset):
    path, datalist = _build(dataset)
    for key in ("training", "validation", "test", "training_20pct", "unlabeled_20pct"):
        loaded = load_decathlon_datalist(str(path), data_list_key=key)
        assert len(loaded) == len(datalist[key])
        assert all(Path(item["image"]).is_file() for item in loaded)
        assert all(Path(item["label"]).is_file() for item in loaded if "label" in item)
    assert Path(load_decathlon_datalist(str(path))[0]["label"]).parent == (dataset / "masks").resolve()


def test_patient_column_and_nested_folders(tmp_path):
    """A tiles.csv-style table: images in per-slide folders, the patient (slide) id from the CSV."""
    rows = ["image,patient_id,label"]
    for slide in range(10):
        (tmp_path / "tiles" / f"s{slide}").mkdir(parents=True)
        for tile in range(3):
            name = f"s{slide}/s{slide}_x{tile:06d}_y000000.png"
            (tmp_path / "tiles" / name).write_bytes(b"t")
            rows.append(f"{name},s{slide},{slide % 2}")
    (tmp_path / "tiles.csv").write_text("\n".join(rows) + "\n")
    items, classes = collect_items(tmp_path / "tiles", table=tmp_path / "tiles.csv", relative_to=tmp_path)
    assert classes == {0: "0", 1: "1"} and len(items) == 30
    assert items[0] == {"image": "tiles/s0/s0_x000000_y000000.png", "patient_id": "s0", "class": 0}
    datalist = make_datalist(items, label_fractions=(0.5,), seed=0)
    assert [len(_patients(datalist[k])) for k in ("training", "validation", "test")] == [7, 1, 2]
    with pytest.raises(ValueError, match="patient_id' column and a patient regex"):
        collect_items(tmp_path / "tiles", table=tmp_path / "tiles.csv", patient_regex="s(\\d+)")


def test_errors(dataset, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        build_datalist(tmp_path / "empty", tmp_path / "x.json")
    # 28 training patients, 9 of them malignant: 5 % keeps 1 patient and leaves a class empty.
    with pytest.raises(ValueError, match=r"label fraction 5% keeps 1 of 28 training patients and leaves class"):
        _build(dataset, fractions=(0.05, 0.5))
    with pytest.raises(ValueError, match="does not match the patient regex"):
        build_datalist(dataset / "images", tmp_path / "y.json", patient_regex=r"^q\d+")
    (dataset / "masks" / "p000_0.png").unlink()
    with pytest.raises(ValueError, match="p000_0.png: no mask named 'p000_0'"):
        _build(dataset)
    with pytest.raises(ValueError, match="summing to 1"):
        make_datalist([{"image": "a", "patient_id": "a"}], split=(0.5, 0.1, 0.1))


def test_cli(dataset, capsys):
    cli = _cli("make_datalist")
    out = dataset / "cli.json"
    args = [str(dataset / "images"), "--table", str(dataset / "labels.csv"), "--output", str(out),
            "--patient-regex", r"^(p\d+)_", "--label-fractions", "0.25", "0.5"]
    assert cli.main(args) == 0
    datalist = json.loads(out.read_text())
    assert {"training_25pct", "training_50pct", "unlabeled_25pct"} <= set(datalist) and "training_10pct" not in datalist
    assert cli.main(args) == 1 and "pass --overwrite" in capsys.readouterr().err
    assert cli.main(args + ["--overwrite", "--split", "0.5", "0.5", "0.5"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("make_datalist: error: split fractions") and len(error.strip().splitlines()) == 1

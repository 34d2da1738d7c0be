"""MedMNIST .npz → arrays and → image folder + datalist: official splits, labels, nested fractions, errors,
and that a failed conversion leaves nothing behind (tiny fake files; the real ones are for benchmarks only)."""

import importlib.util
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImage
from PIL import Image

from medssl3d.prep import medmnist
from medssl3d.prep.medmnist import convert_medmnist, load_medmnist, read_medmnist

ROOT = Path(__file__).resolve().parents[2]
COUNTS = {"train": 40, "val": 6, "test": 8}
FRACTIONS = (0.1, 0.25, 0.5)
SHAPES = {"grey": (12, 10), "rgb": (12, 10, 3), "3d": (6, 8, 7)}


def _cli():
    spec = importlib.util.spec_from_file_location("medmnist_command", ROOT / "data_prep" / "medmnist.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["medmnist_command"] = module
    spec.loader.exec_module(module)
    return module


def _arrays(layout="grey", num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in COUNTS.items():
        arrays[f"{prefix}_images"] = rng.integers(0, 256, (n, *SHAPES[layout]), dtype=np.uint8)
        arrays[f"{prefix}_labels"] = (np.arange(n) % num_classes).astype(np.uint8)[rng.permutation(n), None]
    return arrays


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("layout", sorted(SHAPES))
def test_load_medmnist_channel_first_unit_range(tmp_path, layout):
    arrays = _arrays(layout)
    data = load_medmnist(_npz(tmp_path / "fake.npz", **arrays))
    assert list(data) == ["training", "validation", "test"]
    images, labels = data["training"]
    channels, spatial = (3, SHAPES["rgb"][:2]) if layout == "rgb" else (1, SHAPES[layout])
    assert images.shape == (COUNTS["train"], channels, *spatial) and images.dtype == np.float32
    assert labels.dtype == np.int64 and labels.shape == (COUNTS["train"],)
    np.testing.assert_array_equal(labels, arrays["train_labels"][:, 0])
    raw = arrays["test_images"][3]
    expected = np.moveaxis(raw, -1, 0) if layout == "rgb" else raw[None]
    np.testing.assert_allclose(data["test"][0][3] * 255, expected, atol=1e-4)
    assert 0.0 <= images.min() and images.max() <= 1.0


@pytest.mark.parametrize("layout,image_format", [("grey", "png"), ("grey", "nifti"), ("rgb", "png"), ("3d", None)])
def test_convert_keeps_splits_labels_and_pixels(tmp_path, layout, image_format):
    arrays = _arrays(layout)
    datalist_path = convert_medmnist(_npz(tmp_path / "fake.npz", **arrays), tmp_path / "out", image_format,
                                     label_fractions=FRACTIONS, class_names=["a", "b", "c"])
    datalist = json.loads(datalist_path.read_text())
    assert datalist["classes"] == {"0": "a", "1": "b", "2": "c"} and datalist["num_classes"] == 3
    assert datalist["channels"] == (3 if layout == "rgb" else 1)
    assert datalist["tensorImageSize"] == ("3D" if layout == "3d" else "2D")
    suffix = ".png" if image_format == "png" else ".nii.gz"
    assert len(list((tmp_path / "out" / "images").iterdir())) == sum(COUNTS.values())
    reader = LoadImage(image_only=True, ensure_channel_first=True)
    for prefix, split in medmnist.MEDMNIST_SPLITS.items():
        items = load_decathlon_datalist(datalist_path, True, split)
        assert [item["class"] for item in items] == arrays[f"{prefix}_labels"][:, 0].tolist()
        for index in (0, len(items) - 1):
            assert items[index]["image"].endswith(f"{prefix}_{index:06d}{suffix}")
            raw = arrays[f"{prefix}_images"][index]
            if layout == "3d":
                loaded = nib.load(items[index]["image"]).get_fdata()
                np.testing.assert_array_equal(loaded, raw)
                continue
            if suffix == ".png":
                np.testing.assert_array_equal(np.asarray(Image.open(items[index]["image"])), raw)
            # MONAI reads PNG and the 2D NIfTI alike: (C, W, H)
            loaded = np.asarray(reader(items[index]["image"]))
            expected = np.moveaxis(raw, -1, 0).swapaxes(1, 2) if layout == "rgb" else raw.T[None]
            np.testing.assert_array_equal(loaded, expected)


def test_label_fractions_nested_stratified_and_pools(tmp_path):
    arrays = _arrays("grey", num_classes=2)
    datalist = json.loads(convert_medmnist(_npz(tmp_path / "fake.npz", **arrays), tmp_path / "out",
                                           label_fractions=FRACTIONS).read_text())
    training = {item["patient_id"] for item in datalist["training"]}
    previous: set = set()
    for fraction in FRACTIONS:
        subset = datalist[f"training_{fraction * 100:g}pct"]
        names = {item["patient_id"] for item in subset}
        assert len(names) == round(fraction * COUNTS["train"])
        assert previous <= names <= training, "label fractions must be nested subsets of training"
        assert {item["class"] for item in subset} == {0, 1}
        pool = datalist[f"unlabeled_{fraction * 100:g}pct"]
        assert {item["patient_id"] for item in pool} == training - names
        assert all("class" not in item for item in pool)
        previous = names
    again = json.loads(convert_medmnist(tmp_path / "fake.npz", tmp_path / "again", label_fractions=FRACTIONS)
                       .read_text())
    assert again["training_10pct"] == datalist["training_10pct"], "same seed, same subsets"


def _broken(name):
    arrays = _arrays("grey")
    if name == "missing":
        del arrays["val_labels"]
    elif name == "float_images":
        arrays["train_images"] = arrays["train_images"].astype(np.float64)
    elif name == "float_labels":
        arrays["test_labels"] = arrays["test_labels"].astype(np.float32)
    elif name == "count":
        arrays["val_labels"] = arrays["val_labels"][:-1]
    elif name == "multilabel":
        arrays["train_labels"] = np.zeros((COUNTS["train"], 14), np.uint8)
    elif name == "shape_mismatch":
        arrays["test_images"] = np.zeros((COUNTS["test"], 9, 9), np.uint8)
    return arrays


@pytest.mark.parametrize("name,message", [
    ("missing", "missing key(s) ['val_labels']"),
    ("float_images", "'train_images' has dtype float64; expected uint8"),
    ("float_labels", "'test_labels' has dtype float32; expected integer"),
    ("count", "'val_labels' has 5 labels but 'val_images' has 6 images"),
    ("multilabel", "'train_labels' has shape (40, 14): 14 labels per image (multi-label"),
    ("shape_mismatch", "'test_images' holds grey images of shape (9, 9)"),
])
def test_bad_files_name_file_and_key(tmp_path, name, message):
    path = _npz(tmp_path / f"{name}.npz", **_broken(name))
    with pytest.raises(ValueError) as error:
        convert_medmnist(path, tmp_path / "out")
    assert message in str(error.value) and str(path) in str(error.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="multi-label|missing|dtype|labels but|holds grey"):
        load_medmnist(path)


def test_fraction_emptying_a_class_and_format_errors(tmp_path):
    path = _npz(tmp_path / "fake.npz", **_arrays("3d"))
    with pytest.raises(ValueError, match=r"fake.npz: label fraction 1% keeps 0 of 40 .* leaves class"):
        convert_medmnist(path, tmp_path / "out", label_fractions=(0.01,))
    with pytest.raises(ValueError, match="cannot be written as PNG"):
        convert_medmnist(path, tmp_path / "out", "png")
    with pytest.raises(ValueError, match="RGB images cannot be written as NIfTI"):
        convert_medmnist(_npz(tmp_path / "rgb.npz", **_arrays("rgb")), tmp_path / "out", "nifti")
    assert not (tmp_path / "out").exists()
    assert read_medmnist(path)["validation"][0].shape == (COUNTS["val"], *SHAPES["3d"])


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    path = _npz(tmp_path / "fake.npz", **_arrays("grey"))
    original, written = medmnist._write_image, []

    def fail_late(image, layout, destination):
        if len(written) == 20:
            raise OSError("disk full")
        written.append(destination)
        original(image, layout, destination)

    monkeypatch.setattr(medmnist, "_write_image", fail_late)
    with pytest.raises(OSError, match="disk full"):
        convert_medmnist(path, tmp_path / "out", label_fractions=FRACTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.npz"], "no output and no staging folder left"

    # a failed --overwrite keeps the previous conversion intact
    monkeypatch.setattr(medmnist, "_write_image", original)
    convert_medmnist(path, tmp_path / "out", label_fractions=FRACTIONS)
    before = sorted(p.name for p in (tmp_path / "out" / "images").iterdir())
    written.clear()
    monkeypatch.setattr(medmnist, "_write_image", fail_late)
    with pytest.raises(OSError):
        convert_medmnist(path, tmp_path / "out", label_fractions=FRACTIONS, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.npz", "out"]


def test_command_line(tmp_path, capsys):
    cli = _cli()
    path = _npz(tmp_path / "fake.npz", **_arrays("grey", num_classes=2))
    args = [str(path), "--output", str(tmp_path / "out"), "--label-fractions", "0.25", "0.5"]
    assert cli.main(args) == 0
    datalist = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert datalist["label_fractions"] == [0.25, 0.5] and "training_25pct" in datalist
    assert cli.main(args) == 1
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert cli.main([*args, "--overwrite", "--class-names", "normal", "pneumonia"]) == 0
    assert json.loads((tmp_path / "out" / "datalist.json").read_text())["classes"]["1"] == "pneumonia"
    assert cli.main([str(tmp_path / "absent.npz"), "--output", str(tmp_path / "x")]) == 1
    assert "absent.npz: no such MedMNIST file" in capsys.readouterr().err

"""Histology tiling: background tiles dropped, slide id kept; Macenko stain normalisation."""

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from medssl3d.data.synthetic import synth_histology
from medssl3d.data.synthetic.histology import EOSIN_OD, HAEMATOXYLIN_OD
from medssl3d.prep.histology import MACENKO_REFERENCE, estimate_stains, macenko_normalize, read_slide, tile_grid, tile_slide

ROOT = Path(__file__).resolve().parents[2]
TILE = 32
TISSUE_AT = [(0, 32), (64, 64), (96, 0)]  # (row, col) of whole tissue tiles in a 128x128 slide


def _cli(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "data_prep" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so the process pool can pickle its worker function
    spec.loader.exec_module(module)
    return module


def _slide(seed=0):
    """128x128 near-white glass (with noise) holding three whole tissue tiles and one quarter-covered tile."""
    rng = np.random.default_rng(seed)
    slide = np.clip(rng.normal(238, 4, (128, 128, 3)), 0, 255).astype(np.uint8)
    for row, col in TISSUE_AT:
        slide[row : row + TILE, col : col + TILE] = synth_histology((TILE, TILE), rng).image
    slide[0:16, 96:112] = synth_histology((TILE, TILE), rng).image[:16, :16]  # 25 % of tile (0, 96)
    return slide


def _restain(rgb, scale=(1.4, 0.8, 1.2), io=240.0):
    """The same tissue under other stains: each channel's optical density scaled."""
    od = -np.log((rgb.astype(float) + 1) / io)
    return np.clip(np.rint(io * np.exp(-od * np.asarray(scale)) - 1), 0, 255).astype(np.uint8)


def test_tile_grid_drops_partial_tiles():
    assert tile_grid((100, 70), 32) == [(r, c) for r in (0, 32, 64) for c in (0, 32)]
    assert len(tile_grid((64, 64), 32, stride=16)) == 9


def test_background_dropped_tissue_kept(tmp_path):
    path = tmp_path / "slide.A1.png"  # dots in the name stay in the slide id
    Image.fromarray(_slide()).save(path)
    items = tile_slide(path, tmp_path / "tiles", tile_size=TILE, min_tissue=0.5)
    assert sorted((item["y"], item["x"]) for item in items) == sorted(TISSUE_AT)
    assert all(item["slide_id"] == item["patient_id"] == "slide.A1" and item["tissue_share"] > 0.6 for item in items)
    names = sorted(p.name for p in (tmp_path / "tiles" / "slide.A1").iterdir())
    assert names == sorted(f"slide.A1_x{c:06d}_y{r:06d}.png" for r, c in TISSUE_AT)
    first = np.asarray(Image.open(tmp_path / "tiles" / items[0]["image"]))
    np.testing.assert_array_equal(first, _slide()[items[0]["y"] : items[0]["y"] + TILE, items[0]["x"] : items[0]["x"] + TILE])
    # A lower tissue threshold also keeps the quarter-covered tile; earlier tiles need --overwrite.
    with pytest.raises(FileExistsError, match="overwrite"):
        tile_slide(path, tmp_path / "tiles", tile_size=TILE)
    more = tile_slide(path, tmp_path / "tiles", tile_size=TILE, min_tissue=0.2, overwrite=True)
    assert sorted((i["y"], i["x"]) for i in more) == sorted(TISSUE_AT + [(0, 96)])


def test_read_tiff_planar(tmp_path):
    slide = _slide()
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(slide, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_slide(tmp_path / "planar.tif"), slide)


def test_macenko_recovers_stains_and_normalises_restained_tile():
    tile = synth_histology((64, 64), np.random.default_rng(3)).image
    stains = estimate_stains(tile)
    assert stains.matrix[:, 0] @ HAEMATOXYLIN_OD / np.linalg.norm(HAEMATOXYLIN_OD) > 0.98
    assert stains.matrix[:, 1] @ EOSIN_OD / np.linalg.norm(EOSIN_OD) > 0.98
    restained = _restain(tile)
    a, b = macenko_normalize(tile), macenko_normalize(restained)
    assert a.dtype == np.uint8 and a.shape == tile.shape and a.std() > 5  # valid range, content kept
    before = np.abs(tile.astype(float) - restained).mean()
    after = np.abs(a.astype(float) - b).mean()
    assert after < 0.25 * before
    # The normalised tile carries the reference stains: re-estimating gives the reference vectors.
    assert np.all(np.sum(estimate_stains(a).matrix * MACENKO_REFERENCE.matrix, axis=0) > 0.98)


def test_macenko_rejects_blank_image():
    with pytest.raises(ValueError, match="too little stained tissue"):
        estimate_stains(np.full((16, 16, 3), 250, np.uint8))


def test_cli_normalised_tiles_and_table(tmp_path, capsys):
    (tmp_path / "slides").mkdir()
    Image.fromarray(_slide(0)).save(tmp_path / "slides" / "s1.png")
    Image.fromarray(_restain(_slide(1))).save(tmp_path / "slides" / "s2.png")
    (tmp_path / "labels.csv").write_text("slide_id,label\ns1,tumour\ns2,normal\n")
    cli = _cli("tile_histology")
    args = [str(tmp_path / "slides"), "--output", str(tmp_path / "tiles"), "--tile-size", str(TILE), "--normalize",
            "--slide-labels", str(tmp_path / "labels.csv"), "--workers", "2"]
    assert cli.main(args) == 0
    with open(tmp_path / "tiles" / "tiles.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * len(TISSUE_AT)
    assert {(r["slide_id"], r["label"]) for r in rows} == {("s1", "tumour"), ("s2", "normal")}
    assert all(Path(r["image"]).name.startswith(r["slide_id"] + "_") for r in rows)
    # Normalised tiles of two differently stained slides look alike: mean colours within a few grey levels.
    means = {s: np.mean([np.asarray(Image.open(tmp_path / "tiles" / r["image"])).mean((0, 1)) for r in rows if r["slide_id"] == s], 0)
             for s in ("s1", "s2")}
    raw = [_slide(0)[:TILE, 32:64].mean((0, 1)), _restain(_slide(1))[:TILE, 32:64].mean((0, 1))]
    assert np.abs(means["s1"] - means["s2"]).max() < 0.5 * np.abs(raw[0] - raw[1]).max()
    assert cli.main(args) == 1 and "overwrite" in capsys.readouterr().err

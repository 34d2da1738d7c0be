#!/usr/bin/env python
"""Tile histology slides (RGB PNG/TIFF/JPEG) into fixed-size PNG tiles, dropping background tiles (Otsu on
HSV saturation), with optional Macenko stain normalisation.

Example:
    python data_prep/tile_histology.py slides/ --output tiles/ --tile-size 256 --min-tissue 0.5 --normalize
    python data_prep/make_datalist.py tiles/ --table tiles/tiles.csv --output tiles/datalist.json

Writes tiles/<slide_id>/<slide_id>_x<col>_y<row>.png and tiles/tiles.csv with the columns
image, patient_id, slide_id, x, y, tissue_share (+ label with --slide-labels), which make_datalist.py reads
to split by slide. See medssl3d/prep/histology.py and docs/data_prep_2d_and_datalists.md.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from medssl3d.atomic import atomic_path
from medssl3d.prep.datalist import file_stem
from medssl3d.prep.histology import tile_slide
from medssl3d.prep.parallel import map_progress
from medssl3d.prep.command import report_failures, run_command

PROG = "tile_histology"
SLIDE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
COLUMNS = ["image", "patient_id", "slide_id", "x", "y", "tissue_share"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, help="slide files and/or folders")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--tile-size", type=int, default=256, help="tile side in pixels (default 256)")
    parser.add_argument("--stride", type=int, help="step between tiles in pixels (default: the tile size)")
    parser.add_argument("--min-tissue", type=float, default=0.5, help="keep tiles with at least this tissue share (default 0.5)")
    parser.add_argument("--min-saturation", type=float, default=0.05,
                        help="floor of the Otsu saturation threshold (default 0.05)")
    parser.add_argument("--normalize", action="store_true", help="Macenko stain normalisation to the reference H&E")
    parser.add_argument("--slide-labels", type=Path, help="CSV with columns slide_id,label; adds a label column")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes, one slide each (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing tiles and tiles.csv")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser.parse_args(argv)


def find_slides(inputs: list[Path]) -> list[Path]:
    slides = []
    for entry in inputs:
        if entry.is_dir():
            slides += [p for p in sorted(entry.rglob("*")) if p.suffix.lower() in SLIDE_SUFFIXES and not p.name.startswith(".")]
        elif entry.is_file():
            slides.append(entry)
        else:
            raise ValueError(f"{entry}: no such file or folder.")
    if not slides:
        raise ValueError(f"no slides ({', '.join(SLIDE_SUFFIXES)}) found in {', '.join(map(str, inputs))}.")
    seen: dict[str, Path] = {}
    for slide in slides:
        if file_stem(slide) in seen:
            raise ValueError(f"{slide} and {seen[file_stem(slide)]} share the slide id '{file_stem(slide)}'.")
        seen[file_stem(slide)] = slide
    return slides


def read_slide_labels(path: Path) -> dict[str, str]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"slide_id", "label"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: needs the columns slide_id,label; found {reader.fieldnames}.")
        return {row["slide_id"].strip(): row["label"].strip() for row in reader}


def tile(job: tuple[Path, Path, dict]) -> list[dict]:
    slide, output, options = job
    return tile_slide(slide, output, **options)


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}.")
    slides = find_slides(args.inputs)
    table = args.output / "tiles.csv"
    if table.exists() and not args.overwrite:
        raise FileExistsError(f"{table} exists; pass --overwrite to replace it.")
    labels = read_slide_labels(args.slide_labels) if args.slide_labels else None
    if labels is not None:
        missing = [file_stem(s) for s in slides if file_stem(s) not in labels]
        if missing:
            raise ValueError(f"{args.slide_labels}: no label for slide '{missing[0]}' ({len(missing)} slides missing).")
    options = dict(tile_size=args.tile_size, stride=args.stride, min_tissue=args.min_tissue,
                   min_saturation=args.min_saturation, normalize=args.normalize, overwrite=args.overwrite)
    results = map_progress(tile, [(slide, args.output, options) for slide in slides], args.workers, desc=PROG)
    failed = report_failures(PROG, slides, results, args.debug)
    if failed:
        print(f"{PROG}: {failed} of {len(slides)} slide(s) failed; {table} not written", file=sys.stderr)
        return 1
    rows = [item for items in results for item in items]
    if labels is not None:
        rows = [{**row, "label": labels[row["slide_id"]]} for row in rows]
    with atomic_path(table, overwrite=args.overwrite) as temporary:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, COLUMNS + (["label"] if labels is not None else []))
            writer.writeheader()
            writer.writerows(rows)
    print(f"{PROG}: kept {len(rows)} tile(s) of {len(slides)} slide(s); table {table}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(PROG, run, args)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Resample images (linear or B-spline) and label maps (nearest) to a target spacing, keeping origin and direction.

A truncated file, NaN/Inf voxels (unless --fill-nonfinite) and a NIfTI whose sform is sheared (gantry tilt)
are errors: nothing is written for them, and a datalist run writes its datalist only when every file succeeded.

Examples:
    # every image and label of a datalist, mirrored under a new folder with an updated datalist.json
    python data_prep/resample.py data/datalist.json --out data_1mm --spacing 1 1 1 --workers 4
    # one file
    python data_prep/resample.py ct.nii.gz --out ct_1mm.nii.gz --spacing 1 1 2.5 --interp bspline
    python data_prep/resample.py seg.nii.gz --out seg_1mm.nii.gz --spacing 1 1 2.5 --label

See docs/data_prep_dicom.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medssl3d.prep.resample import resample_datalist, resample_file
from medssl3d.prep.command import run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="a datalist .json, or one image file (NIfTI, NRRD, MHA …)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (datalist input) or output file")
    parser.add_argument(
        "--spacing", type=float, nargs="+", required=True, help="target spacing in mm per voxel axis (i j k)"
    )
    parser.add_argument("--interp", choices=("linear", "bspline"), default="linear", help="image interpolation")
    parser.add_argument("--label", action="store_true", help="single-file input is a label map: nearest neighbour")
    parser.add_argument("--image-keys", nargs="+", default=["image"], help="datalist keys holding images")
    parser.add_argument("--label-keys", nargs="+", default=["label"], help="datalist keys holding label maps")
    parser.add_argument(
        "--fill-nonfinite",
        type=float,
        metavar="VALUE",
        help="replace NaN/Inf voxels by VALUE and report how many (default: a file with NaN/Inf is an error)",
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}.")
    if args.input.suffix.lower() != ".json":
        interpolator = "nearest" if args.label else args.interp
        _, filled = resample_file(
            args.input, args.out, args.spacing, interpolator, args.overwrite, fill_nonfinite=args.fill_nonfinite
        )
        if filled:
            print(f"note: '{args.input}': {filled} NaN/Inf voxel(s) set to {args.fill_nonfinite:g}", file=sys.stderr)
        print(f"wrote {args.out}")
        return 0
    datalist, errors, notes = resample_datalist(
        args.input,
        args.out,
        args.spacing,
        args.interp,
        args.image_keys,
        args.label_keys,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        fill_nonfinite=args.fill_nonfinite,
    )
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    print(f"{len(errors)} files failed; datalist not written" if errors else f"wrote {datalist}")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("resample", run, args)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Convert radiographs (DICOM or PNG) to display-ready PNG (8/16-bit) or NIfTI: MONOCHROME1 inverted,
VOI window applied, optional CLAHE, optional aspect-preserving resize padded to a square.

Example:
    python data_prep/xray_to_png.py raw_dicom/ --output xray_png/ --size 512 --clahe --workers 4

Folders are searched recursively (*.dcm, *.dicom, *.png and files with a DICOM preamble); the folder
layout is kept under --output. OUTPUT/preprocessing.json records what was applied (modality XRAY, CLAHE and
its clip limit, window, size); make_datalist copies it into the datalist, and the X-ray bundles then skip their
own CLAHE when --clahe was given here, so it is not applied twice. See medssl3d/prep/xray.py and docs/data_prep_2d_and_datalists.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medssl3d.prep.parallel import map_progress
from medssl3d.prep.xray import convert_radiograph, write_preprocessing_record
from medssl3d.prep.command import report_failures, run_command

PROG = "xray_to_png"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, help="radiograph files and/or folders")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--format", choices=("png", "nifti"), default="png", help="output format (default png)")
    parser.add_argument("--bits", type=int, choices=(8, 16), default=16, help="PNG bit depth (default 16)")
    parser.add_argument("--size", type=int, help="resize the longer side to SIZE and pad to SIZE x SIZE")
    parser.add_argument("--window", type=float, nargs=2, metavar=("CENTER", "WIDTH"),
                        help="VOI window in modality units (default: the file's VOI LUT/window, else full range)")
    parser.add_argument("--clahe", action="store_true", help="apply CLAHE (contrast-limited adaptive equalisation)")
    parser.add_argument("--clip-limit", type=float, default=0.01, help="CLAHE clip limit in (0, 1] (default 0.01)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser.parse_args(argv)


def _is_radiograph(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    if path.suffix.lower() in (".dcm", ".dicom", ".png"):
        return True
    with open(path, "rb") as handle:
        return handle.read(132)[128:132] == b"DICM"


def find_jobs(inputs: list[Path], output: Path, suffix: str) -> list[tuple[Path, Path]]:
    """(source, destination) pairs; a folder's layout is kept below ``output``."""
    jobs = []
    for entry in inputs:
        if entry.is_dir():
            files = [p for p in sorted(entry.rglob("*")) if p.is_file() and _is_radiograph(p)]
            jobs += [(p, output / p.relative_to(entry).parent / (p.stem + suffix)) for p in files]
        elif entry.is_file():
            jobs.append((entry, output / (entry.stem + suffix)))
        else:
            raise ValueError(f"{entry}: no such file or folder.")
    if not jobs:
        raise ValueError(f"no radiographs (*.dcm, *.dicom, *.png, DICOM preamble) found in {', '.join(map(str, inputs))}.")
    seen: dict[Path, Path] = {}
    for source, destination in jobs:
        if destination in seen:
            raise ValueError(f"{source} and {seen[destination]} would both be written to {destination}.")
        seen[destination] = source
    return jobs


def convert(job: tuple[Path, Path, dict]) -> Path:
    source, destination, options = job
    return convert_radiograph(source, destination, **options)


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}.")
    jobs = find_jobs(args.inputs, args.output, ".png" if args.format == "png" else ".nii.gz")
    existing = [d for _, d in jobs if d.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{existing[0]} (and {len(existing) - 1} more) exist; pass --overwrite to replace them.")
    options = dict(size=args.size, window=args.window, clahe=args.clahe, clip_limit=args.clip_limit, bits=args.bits,
                   overwrite=args.overwrite)
    record = {"modality": "XRAY", "clahe": {"clip_limit": args.clip_limit} if args.clahe else None,
              "window": list(args.window) if args.window else None, "size": args.size, "format": args.format}
    write_preprocessing_record(args.output, record, overwrite=args.overwrite)
    outcomes = map_progress(convert, [(s, d, options) for s, d in jobs], args.workers, desc=PROG)
    failed = report_failures(PROG, [source for source, _ in jobs], outcomes, args.debug)
    print(f"{PROG}: wrote {len(jobs) - failed} file(s) to {args.output}; {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(PROG, run, args)


if __name__ == "__main__":
    sys.exit(main())

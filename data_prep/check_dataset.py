#!/usr/bin/env python
"""Check a dataset described by a Decathlon-style datalist before training (like nnU-Net's verification).

Checks: files readable (truncated files too); one 3D volume per CT/MRI image (no 4D series, single slice or
1x1x1 placeholder); no NaN/Inf; no constant image; CT in Hounsfield units (the check the CT bundles run);
image/label shape, spacing, origin and direction agree; label values declared; duplicate images; the same
patient in two splits; an empty datalist. The modality is the datalist's "modality" (make_datalist records
it), else --modality, else inferred from the data (the report says which).
Exit status 1 when there is any error; warnings alone exit 0.

Example:
    python data_prep/check_dataset.py data/datalist.json --num-classes 3 --report data/integrity --workers 4

See docs/data_prep_dicom.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medssl3d.atomic import atomic_path, write_json_atomic
from medssl3d.prep.integrity import MODALITIES, check_datalist
from medssl3d.prep.command import run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datalist", type=Path, help="datalist JSON with training/validation/test lists")
    parser.add_argument(
        "--labels", type=int, nargs="+", help="allowed label values (default: keys of the datalist's 'labels')"
    )
    parser.add_argument("--num-classes", type=int, help="label values must lie in 0..N-1 (instead of --labels)")
    parser.add_argument(
        "--modality", type=str.upper,
        help=f"{', '.join(MODALITIES)} (default: the datalist's 'modality', else inferred); CT adds the HU check",
    )
    parser.add_argument("--base-dir", type=Path, help="folder the datalist paths are relative to (default: its own)")
    parser.add_argument("--report", type=Path, help="write REPORT.txt and REPORT.json (refuses to replace them)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}.")
    if args.labels is not None and args.num_classes is not None:
        raise ValueError("give either --labels or --num-classes, not both.")
    report = check_datalist(
        args.datalist,
        labels=args.labels,
        modality=args.modality,
        base_dir=args.base_dir,
        workers=args.workers,
        progress=not args.no_progress,
        num_classes=args.num_classes,
    )
    text = report.to_text()
    print(text, end="")
    if args.report is not None:
        text_path, json_path = (args.report.with_name(args.report.name + suffix) for suffix in (".txt", ".json"))
        with atomic_path(text_path, overwrite=args.overwrite) as temporary:
            temporary.write_text(text)
        write_json_atomic(report.to_json(), json_path, overwrite=args.overwrite)
        print(f"report written to {text_path} and {json_path}")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("check_dataset", run, args)


if __name__ == "__main__":
    sys.exit(main())

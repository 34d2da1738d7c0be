#!/usr/bin/env python
"""Extract fixed-size 3D patches around nodule candidates (LUNA16-style CSV, world mm LPS) and write a
classification datalist with patient-level splits.

Example:
    python data_prep/extract_nodule_patches.py candidates.csv volumes/ --output nodule_patches/ \\
        --patch-size 48 48 48 --spacing 1 1 1 --labels masks/ --workers 4

CSV columns: seriesuid (the volume's file stem), coordX, coordY, coordZ, optional class and patient_id.
Writes OUTPUT/patches/<seriesuid>_<csv row>.nii.gz, OUTPUT/labels/… (with --labels) and OUTPUT/datalist.json
(items: image, label, class, patient_id, seriesuid, csv_row, center_lps_mm). Every candidate is checked
against its volume's header before anything is written; a truncated volume or NaN/Inf voxels (unless
--fill-nonfinite) fail the run and no patch of it is kept. See medssl3d/prep/nodule_patches.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medssl3d.atomic import write_json_atomic
from medssl3d.prep.datalist import DEFAULT_LABEL_FRACTIONS, DEFAULT_SPLIT, make_datalist
from medssl3d.prep.nodule_patches import (
    candidate_item,
    check_candidates,
    extract_series,
    find_volumes,
    read_candidates,
    shown_path,
)
from medssl3d.prep.parallel import map_progress
from medssl3d.prep.command import report_failures, run_command

PROG = "extract_nodule_patches"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", type=Path, help="LUNA16-style CSV of candidates")
    parser.add_argument("volumes", type=Path, help="folder of volumes named <seriesuid>.nii.gz/.mhd/.mha/.nrrd")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--labels", type=Path, help="folder of masks named like the volumes: also extract mask patches")
    parser.add_argument("--patch-size", type=int, nargs=3, default=(32, 32, 32), metavar=("X", "Y", "Z"),
                        help="patch size in voxels (default 32 32 32)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        help="resample to this spacing in mm (default: keep the volume's)")
    parser.add_argument("--pad-value", type=float, help="value outside the volume (default: the volume's minimum)")
    parser.add_argument("--fill-nonfinite", type=float, metavar="VALUE",
                        help="replace NaN/Inf voxels of the volumes by VALUE (default: NaN/Inf is an error)")
    parser.add_argument("--modality", type=str.upper, choices=("CT", "MRI"), default="CT",
                        help="CT (default): each volume must be in Hounsfield units; MRI: no intensity check")
    parser.add_argument("--class-column", default="class", help="CSV column of the class (default class)")
    parser.add_argument("--split", type=float, nargs=3, default=DEFAULT_SPLIT, metavar=("TRAIN", "VAL", "TEST"),
                        help="shares of patients (default 0.7 0.1 0.2)")
    parser.add_argument("--label-fractions", type=float, nargs="*", default=DEFAULT_LABEL_FRACTIONS,
                        help="labelled shares of the training patients (default 0.1 … 0.9; none: no subsets)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the splits (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes, one volume each (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing patches and datalist")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser.parse_args(argv)


def extract(job: tuple) -> list[dict]:
    volume, candidates, output, options = job
    return extract_series(volume, candidates, output, **options)


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}.")
    candidates = read_candidates(args.candidates, args.class_column)
    volumes = find_volumes(args.volumes)
    masks = find_volumes(args.labels) if args.labels else None
    check_candidates(candidates, volumes, args.candidates, root=args.volumes)
    # The datalist follows from the CSV alone: build it first, so a bad split fails before any extraction.
    items = [candidate_item(c, masks is not None) for c in candidates]
    classes = {c: str(c) for c in sorted({item["class"] for item in items if "class" in item})}
    datalist = make_datalist(items, args.split, args.label_fractions, args.seed, classes, name="nodule patches")
    datalist.update(patch_size=list(args.patch_size), spacing=list(args.spacing) if args.spacing else None,
                    candidates=str(args.candidates))
    datalist_path = args.output / "datalist.json"
    outputs = [datalist_path] + [args.output / item[key] for item in items for key in ("image", "label") if key in item]
    existing = [p for p in outputs if p.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{existing[0]} (and {len(existing) - 1} more) exist; pass --overwrite to replace them.")
    by_series: dict[str, list] = {}
    for candidate in candidates:
        by_series.setdefault(candidate.seriesuid, []).append(candidate)
    options = dict(patch_size=args.patch_size, spacing=args.spacing, pad_value=args.pad_value, overwrite=args.overwrite,
                   root=args.volumes, label_root=args.labels, fill_nonfinite=args.fill_nonfinite,
                   modality=args.modality)
    tasks = []
    for series, group in by_series.items():
        if masks is not None and series not in masks:
            raise ValueError(f"{args.labels}: no mask named '{series}' for volume '{shown_path(volumes[series], args.volumes)}'.")
        tasks.append((volumes[series], group, args.output, {**options, "label_volume": masks[series] if masks else None}))
    results = map_progress(extract, tasks, args.workers, desc=PROG)
    failed = report_failures(PROG, [shown_path(task[0], args.volumes) for task in tasks], results, args.debug)
    if failed:
        for path in set(outputs) - set(existing):  # patches of this run only: no partial set is left behind
            path.unlink(missing_ok=True)
        print(f"{PROG}: {failed} of {len(tasks)} volume(s) failed; no patch kept, {datalist_path} not written",
              file=sys.stderr)
        return 1
    write_json_atomic(datalist, datalist_path, overwrite=args.overwrite)
    print(f"{PROG}: wrote {len(items)} patch(es) from {len(tasks)} volume(s); datalist {datalist_path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(PROG, run, args)


if __name__ == "__main__":
    sys.exit(main())

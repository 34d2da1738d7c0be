"""``medssl3d evaluate --detections``: a detection run's boxes scored against the reference boxes of a datalist list.

The detections are what a detection bundle's ``inference.yaml`` writes (:class:`medssl3d.detection.writer.
DetectionWriter`), given as the run folder (its ``predictions.json``, else ``predictions.csv``) or as either file:

* 3D: ``seriesuid,coordX,coordY,coordZ,diameter_mm,probability`` (LUNA16, world LPS mm; a row is a cube of side
  ``diameter_mm``) or the JSON's cccwhd boxes in mm;
* 2D: ``image_id,class_name,x_min,y_min,x_max,y_max,probability`` (pixels of the stored image) or the JSON's.

The references are the box table the detection bundles train on (``--boxes``: LUNA16's ``annotations.csv`` or
the 2D box table, :mod:`medssl3d.detection.boxes`), checked row by row against the images of list ``--test-key``;
an image of that list without boxes is a negative, an image without detections has none. Both sides are compared
in the table's own coordinates (world mm, pixels). Metrics (:func:`medssl3d.detection.metrics.detection_metrics`):
COCO mAP/mAR with MONAI's ``COCOMetric`` — 2D over IoU 0.50:0.95 with AP at 0.50, 3D over IoU 0.10:0.50 with AP
at 0.10 as MONAI's LUNA16 bundle — and for 3D LUNA16's FROC (sensitivity at 1/8 ... 8 false positives per scan
and their mean). One row per run in ``report.md`` and ``metrics.json``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from medssl3d.errors import InputError

__all__ = ["read_detections", "reference_boxes", "run"]

COLUMNS = {3: ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "probability"),
           2: ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max", "probability")}
IOU = {2: {"coco_iou_range": (0.5, 0.95, 0.05), "coco_iou_list": (0.5,)},
       3: {"coco_iou_range": (0.1, 0.5, 0.05), "coco_iou_list": (0.1,)}}


def _corners(boxes: np.ndarray, dims: int) -> np.ndarray:
    """cccwhd (3D centre and sides) -> xyzxyz; 2D xyxy unchanged."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 2 * dims)
    if dims == 2:
        return boxes
    return np.concatenate([boxes[:, :3] - boxes[:, 3:] / 2, boxes[:, :3] + boxes[:, 3:] / 2], axis=1)


def _detections_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("predictions.json", "predictions.csv"):
            if (path / name).is_file():
                return path / name
        raise InputError(f"{path}: no predictions.json or predictions.csv in this detection run; run the bundle's "
                         "inference.yaml with this output_dir first, or give the predictions file.")
    if not path.is_file():
        raise InputError(f"{path}: no such detections file or run folder.")
    return path


def read_detections(path: str | Path) -> tuple[int, dict[str, list[tuple[str, list[float], str | None, float]]]]:
    """``(spatial dims, {image id: [(where, corner box, class name, probability), ...]})`` of a detection run
    (folder, ``predictions.json`` or ``predictions.csv``; see the module docstring); ``where`` names the row.
    3D detections have no class name (every nodule is class 0, as in the reference table)."""
    path = _detections_file(Path(path))
    detections: dict[str, list] = {}
    if path.suffix == ".json":
        try:
            content = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON ({err}).") from None
        if not isinstance(content, dict) or not all(isinstance(v, list) for v in content.values()):
            raise InputError(f"{path}: expected {{image_id: [{{box, class_name, probability}}, ...]}} as written by "
                             "a detection bundle's inference.")
        sizes = {len(d.get("box", [])) for found in content.values() for d in found}
        if not sizes <= {4, 6} or len(sizes) > 1:
            raise InputError(f"{path}: boxes must all have 4 (2D xyxy) or all 6 (3D cccwhd) numbers, found "
                             f"{sorted(sizes)}.")
        dims = sizes.pop() // 2 if sizes else 3
        for name, found in content.items():
            try:
                detections[name] = [(f"{path} '{name}' detection {i + 1}", list(_corners(d["box"], dims)[0]),
                                     None if dims == 3 else str(d.get("class_name")), float(d["probability"]))
                                    for i, d in enumerate(found)]
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{path}: image '{name}': every detection needs a numeric 'box' and "
                                 "'probability'.") from None
        return dims, detections
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        dims = next((d for d, columns in COLUMNS.items() if set(columns) <= set(fields)), None)
        if dims is None:
            raise InputError(f"{path}: columns {fields} are neither the 3D detections' ({', '.join(COLUMNS[3])}) "
                             f"nor the 2D detections' ({', '.join(COLUMNS[2])}).")
        for number, row in enumerate(reader, start=2):
            try:
                values = [float(row[c]) for c in COLUMNS[dims][-5:]]
            except (TypeError, ValueError):
                raise InputError(f"{path} row {number}: non-numeric box or probability in {dict(row)}.") from None
            if dims == 3:
                x, y, z, diameter, probability = values
                box, name, class_name = [x, y, z, diameter, diameter, diameter], row["seriesuid"], None
            else:
                *box, probability = values
                name, class_name = row["image_id"], row["class_name"].strip()
            detections.setdefault(name.strip(), []).append(
                (f"{path} row {number}", list(_corners(box, dims)[0]), class_name, probability))
    return dims, detections


def reference_boxes(datalist: Path, key: str, boxes_csv: Path, dims: int, class_names,
                    dataset_dir: Path | None = None) -> dict[str, dict]:
    """``{image id: {"box": corner boxes, "label": class indices}}`` of every image of list ``key`` (negatives
    included; relative paths from ``dataset_dir``, default the datalist's folder), the rows checked against the
    images (:func:`medssl3d.detection.boxes.load_detection_datalist`)."""
    from medssl3d.detection.boxes import image_id, load_detection_datalist

    items = load_detection_datalist(datalist, key, dataset_dir or datalist.parent, boxes_csv, dims, class_names)
    return {image_id(item["image"]): {"box": _corners(item["box"], dims), "label": item["box_label"]}
            for item in items}


def _class_names(args, dims: int, runs) -> list[str]:
    """``--class-names``; else 3D: ``nodule``; 2D: the classes of the reference table and the detections, sorted."""
    if args.class_names:
        return list(args.class_names)
    if dims == 3:
        return ["nodule"]
    from medssl3d.detection.boxes import NO_FINDING

    if not args.boxes.is_file():
        raise InputError(f"{args.boxes}: no such box table; give the reference boxes with --boxes.")
    with open(args.boxes, newline="") as handle:
        names = {(row.get("class_name") or "").strip() for row in csv.DictReader(handle)}
    names |= {c for _, _, detections in runs for found in detections.values() for _, _, c, _ in found}
    return sorted(names - {NO_FINDING, ""})


def _run_name(path: Path, taken: set[str]) -> str:
    """The run folder's name (also for its predictions file), else the file's stem; made unique."""
    name = path.name if path.is_dir() else path.parent.name if path.stem == "predictions" else path.stem
    unique, count = name, 1
    while unique in taken:
        count += 1
        unique = f"{name} ({count})"
    taken.add(unique)
    return unique


def _predictions(path: Path, detections: dict, references: dict, class_names: list[str], key: str) -> list[dict]:
    """Per-image prediction dicts in the order of ``references``; refuses detections on images outside the list
    and classes outside ``class_names``."""
    for name, found in detections.items():
        if name not in references:
            raise InputError(f"{found[0][0] if found else path}: image '{name}' is not in list '{key}' of the "
                             f"datalist; evaluate the list the detections were made on (--test-key).")
        for where, _, class_name, _ in found:
            if class_name is not None and class_name not in class_names:
                raise InputError(f"{where}: class '{class_name}' is not among the evaluated classes {class_names}; "
                                 "pass every class with --class-names.")
    predictions = []
    for name, reference in references.items():
        found = detections.get(name, [])
        predictions.append({
            "box": np.array([box for _, box, _, _ in found], np.float64).reshape(-1, reference["box"].shape[1]),
            "label": np.array([0 if c is None else class_names.index(c) for _, _, c, _ in found], np.int64),
            "label_scores": np.array([p for _, _, _, p in found], np.float64)})
    return predictions


def _headline(results: dict, dims: int, class_names: list[str]) -> dict:
    """The reported metrics: COCO aliases, per-class AP at the list IoU where several classes, FROC in 3D."""
    from medssl3d.detection.metrics import FROC_FP_RATES

    iou = IOU[dims]["coco_iou_list"][0]
    ap = f"AP_{round(100 * iou)}"
    row = {"mAP": results["mAP"], ap: results[ap], "mAR": results["mAR"]}
    if len(class_names) > 1:
        row.update({f"{name} {ap}": results.get(f"{name}_AP_IoU_{iou:.2f}_MaxDet_100") for name in class_names})
    if dims == 3:
        row["froc"] = results["froc"]
        row.update({f"sensitivity_at_{r:g}fp": results[f"sensitivity_at_{r:g}fp"] for r in FROC_FP_RATES})
    return row


def run(args) -> None:
    """``medssl3d evaluate --detections RUN [RUN ...] --boxes TABLE --datalist D [--test-key test] --out OUT``."""
    from medssl3d.detection.metrics import detection_metrics

    from .report import write_report

    if args.boxes is None:
        raise InputError("--detections needs --boxes: the reference box table (LUNA16 annotations.csv for CT, "
                         "the image_id,class_name,x_min,y_min,x_max,y_max table for radiographs).")
    runs = [(path, *read_detections(path)) for path in args.detections]
    dims = {d for _, d, _ in runs}
    if len(dims) > 1:
        raise InputError(f"--detections mixes 2D and 3D runs ({', '.join(str(p) for p, _, _ in runs)}); evaluate "
                         "them separately.")
    dims = dims.pop()
    class_names = _class_names(args, dims, runs)
    references = reference_boxes(args.datalist, args.test_key, args.boxes, dims, class_names, args.dataset_dir)
    reference_list = list(references.values())
    taken: set[str] = set()
    rows, table = {}, []
    for path, _, detections in runs:
        name = _run_name(path, taken)
        predictions = _predictions(path, detections, references, class_names, args.test_key)
        results = detection_metrics(predictions, reference_list, class_names, **IOU[dims])
        rows[name] = _headline(results, dims, class_names)
        table.append({"run": name, "detections": str(_detections_file(path)),
                      "boxes": int(sum(len(p["box"]) for p in predictions)),
                      "images with boxes": sum(bool(len(p["box"])) for p in predictions)})
    low, high, _ = IOU[dims]["coco_iou_range"]
    setup = {"datalist": str(args.datalist), "test_key": args.test_key, "boxes_csv": str(args.boxes),
             "spatial_dims": dims, "classes": ", ".join(class_names), "n_images": len(references),
             "n_reference_boxes": int(sum(len(r["box"]) for r in reference_list)),
             "n_negative_images": sum(not len(r["box"]) for r in reference_list),
             "coco": f"mAP/mAR over IoU {low:.2f}:{high:.2f}, AP at IoU {IOU[dims]['coco_iou_list'][0]:.2f}",
             "coordinates": "world mm (LPS)" if dims == 3 else "pixels"}
    if dims == 3:
        setup["froc"] = "LUNA16: sensitivity at 1/8, 1/4, 1/2, 1, 2, 4, 8 false positives per scan; froc = their mean"
    args.out.mkdir(parents=True, exist_ok=True)
    report = write_report(args.out, {"setup": setup, "detection": rows}, {"detections per run": table}, [],
                          f"medssl3d detection evaluation on {args.datalist.name} ({args.test_key})")
    for name, row in rows.items():
        print(f"{name:<24} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()
                                         if k in ("mAP", "mAR", "froc") or k.startswith("AP_")))
    print(f"report: {report}")
    print(f"metrics: {args.out / 'metrics.json'}")

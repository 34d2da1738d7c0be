"""Detections -> files: boxes in the input's own coordinates, as CSV and JSON, written atomically.

Boxes come out of the detector in the coordinates of the preprocessed image; MONAI's
``AffineBoxToWorldCoordinated`` maps them back through the image's affine (which every spatial transform of the
chain updated): for a volume to world millimetres in LPS (as LUNA16 reports them), for a PNG radiograph
(identity affine on load) to pixels of the stored image.

* 3D: ``seriesuid,coordX,coordY,coordZ,diameter_mm,probability`` (LUNA16 submission columns plus the mean box
  side as diameter).
* 2D: ``image_id,class_name,x_min,y_min,x_max,y_max,probability`` (the training box table's columns).

The JSON holds ``{image_id: [{"box", "class_name", "probability"}, ...]}`` (cccwhd mm in 3D, xyxy pixels in 2D).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ignite.engine import Engine, Events
from monai.apps.detection.transforms.dictionary import ConvertBoxModed

from medssl3d.atomic import atomic_path, write_json_atomic

from .boxes import image_id
from .transforms import BoxToWorldCoordinated

__all__ = ["DetectionWriter"]


class DetectionWriter:
    """Ignite handler: collects an evaluator's detections (output ``pred`` and ``image``) and writes
    ``<output_dir>/<name>.csv`` and ``.json`` when the run completes.

    Args:
        output_dir: folder of the files.
        name: file stem (``predictions``).
        class_names: name of each label index.
        min_score: detections below this probability are left out.
    """

    def __init__(self, output_dir: str | os.PathLike, name: str = "predictions",
                 class_names: Sequence[str] = ("nodule",), min_score: float = 0.0) -> None:
        self.output_dir, self.name = Path(output_dir), name
        self.class_names, self.min_score = list(class_names), float(min_score)
        self.rows: dict[str, list[dict]] = {}
        self.dims = 2

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def collect(self, engine: Engine) -> None:
        for prediction, image in zip(engine.state.output["pred"], engine.state.output["image"]):
            dims = self.dims = image.ndim - 1
            keep = prediction["label_scores"].cpu().numpy() >= self.min_score
            world = BoxToWorldCoordinated("box", "image", affine_lps_to_ras=dims == 3)(
                {"box": prediction["box"].cpu().numpy()[keep], "image": image})
            if dims == 3:  # cccwhd: centre and sides in mm
                world = ConvertBoxModed("box", src_mode="xyzxyz", dst_mode="cccwhd")(world)
            boxes = np.asarray(world["box"], dtype=np.float64).reshape(-1, 2 * dims)
            labels = prediction["label"].cpu().numpy()[keep]
            scores = prediction["label_scores"].cpu().numpy()[keep]
            self.rows[image_id(image.meta["filename_or_obj"])] = [
                {"box": [round(float(v), 3) for v in box], "class_name": self.class_names[int(label)],
                 "probability": round(float(score), 5)}
                for box, label, score in zip(boxes, labels, scores)
            ]

    def write(self, engine: Engine) -> None:
        three_d = self.dims == 3
        header = (["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "probability"] if three_d
                  else ["image_id", "class_name", "x_min", "y_min", "x_max", "y_max", "probability"])
        with atomic_path(self.output_dir / f"{self.name}.csv") as staging, open(staging, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for name, detections in self.rows.items():
                for d in detections:
                    box = d["box"]
                    writer.writerow([name, *box[:3], round(float(np.mean(box[3:])), 3), d["probability"]]
                                    if three_d else [name, d["class_name"], *box, d["probability"]])
        write_json_atomic(self.rows, self.output_dir / f"{self.name}.json")

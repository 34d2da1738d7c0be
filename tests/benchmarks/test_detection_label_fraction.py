"""benchmarks/detection_label_fraction.py helpers: nested label fractions, the random-box baseline, the tables."""

from __future__ import annotations

import json

import numpy as np

from medssl3d.data.synthetic import synthesize_cohort

from ._scripts import load_benchmark


def test_fractions_are_nested_and_the_random_baseline_finds_little(tmp_path):
    study = load_benchmark("detection_label_fraction")
    data = synthesize_cohort("ct", 10, tmp_path / "ct", size=(64, 64, 24), spacing=(1.0, 1.0, 2.0), seed=3,
                             progress=False).parent
    datalist = study.nested_fractions(data / "datalist.json", tmp_path / "datalist.json", [0.2, 0.6, 1.0])
    content = json.loads(datalist.read_text())
    small, large = ({i["image"] for i in content[k]} for k in ("training_20pct", "training_60pct"))
    assert small < large < {i["image"] for i in content["training"]} and "training_100pct" not in content
    assert len(small) == round(0.2 * len(content["training"]))
    baseline = study.random_baseline(datalist, data, data / "nodules.csv", 3)
    assert 0 <= baseline["froc"] < 0.2 and baseline["mAP"] < 0.05


def test_tables_average_the_seeds():
    study = load_benchmark("detection_label_fraction")
    runs = [{"fraction": 0.2, "arm": "scratch", "seed": s, "froc": f, "sensitivity_at_1fp": f, "mAP": f, "mAR": f,
             "training_images": 6} for s, f in ((0, 0.1), (1, 0.3))]
    table = study.markdown({"runs": runs, "random_baseline": dict.fromkeys(study.REPORTED, 0.0)})
    assert f"| 20% | 6 | scratch | 0.200 ± {np.std([0.1, 0.3], ddof=1):.3f} |" in table and "random boxes" in table


def test_seconds_per_iteration_leaves_out_the_validation_epochs(tmp_path):
    study = load_benchmark("detection_label_fraction")
    log = tmp_path / "train.log"
    line = "2026-01-01 00:00:00,000 - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[{}] Complete. Time taken: {}"
    log.write_text("\n".join(line.format(e, t) for e, t in ((1, "00:00:05.000"), (2, "00:00:07.000"),
                                                            (3, "00:01:30.000"), (4, "00:00:06.000"))))
    assert study.seconds_per_iteration(log, epoch_length=10, val_interval=3) == 0.6  # epochs 1, 2, 4: 5, 7, 6 s

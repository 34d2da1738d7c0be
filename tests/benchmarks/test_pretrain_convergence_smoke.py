"""Smoke run of benchmarks/pretrain_convergence.py: 2 methods x 3 iterations on a tiny synthetic CT cohort."""

from __future__ import annotations

import json
import math

from ._scripts import load_benchmark


def test_main_writes_finite_curves_and_statistics(tmp_path):
    script = load_benchmark("pretrain_convergence")
    out = tmp_path / "convergence.json"
    argv = ["--iterations", "3", "--methods", "rotation", "simclr", "--cases", "3", "--size", "64", "64", "24",
            "--batch", "2", "--crops-per-volume", "1", "--threads", "1", "--warmup", "1",
            "--data-dir", str(tmp_path / "ct"), "--out", str(out)]
    report = script.main(argv)
    saved = json.loads(out.read_text())
    assert saved["results"].keys() == {"rotation", "simclr"}
    assert {"command", "date", "machine", "load_average", "settings", "table", "held_out_crops"} <= saved.keys()
    for name, record in saved["results"].items():
        assert record["iterations"] == 3 and len(record["losses"]) == 3
        assert all(math.isfinite(v) for v in record["losses"]), name
        assert record["loss_first10"] == sum(record["losses"][:1]) and record["loss_last10"] == record["losses"][-1]
        assert record["embedding_std_random_init"] > 0 and math.isfinite(record["embedding_std_trained"])
        assert record["seconds_per_iteration"] > 0
        assert {"ratio", "falls", "collapse", "crop_size", "batch"} <= record.keys()
        assert f"| {name} |" in saved["table"]
    assert report["results"].keys() == saved["results"].keys()
    # a second run of one method keeps the other's record (runs may be split over processes)
    script.main(["--iterations", "1", "--methods", "rotation", *argv[5:]])
    merged = json.loads(out.read_text())["results"]
    assert merged.keys() == {"rotation", "simclr"} and merged["simclr"] == saved["results"]["simclr"]

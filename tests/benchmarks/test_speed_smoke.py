"""benchmarks/speed.py: the per-iteration clock that bundle runs carry (fast; the sections themselves are long)."""

from __future__ import annotations

import json
import time

from ignite.engine import Engine

from ._scripts import load_benchmark


def test_iteration_clock_stamps_every_iteration_and_writes_at_completion(tmp_path):
    speed = load_benchmark("speed")

    def busy(_engine, _batch):  # 20 ms of CPU work per iteration
        end = time.process_time() + 0.02
        while time.process_time() < end:
            pass

    engine = Engine(busy)
    path = tmp_path / "clock.json"
    speed.IterationClock(str(path)).attach(engine)
    engine.run(range(3), max_epochs=2)
    stamps = json.loads(path.read_text())
    assert len(stamps["cpu"]) == len(stamps["wall"]) == 6
    cpu_gaps = [b - a for a, b in zip(stamps["cpu"], stamps["cpu"][1:])]
    assert all(0.019 <= gap < 1.0 for gap in cpu_gaps), cpu_gaps
    assert all(b >= a for a, b in zip(stamps["wall"], stamps["wall"][1:]))

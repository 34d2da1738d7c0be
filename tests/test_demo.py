"""``medssl3d demo``, the main job, end to end at a tiny size with the network blocked; its input checks; and
the ``--synthetic-ct`` smoke path."""

import json
import socket

import numpy as np
import pytest
import torch

from medssl3d.cli import main
from medssl3d.demo import PNEUMONIAMNIST, DemoSettings, run_demo
from medssl3d.demo_ct import CTDemoSettings, run_ct_demo
from medssl3d.engine import load_checkpoint, load_encoder_export


@pytest.fixture
def blocked_network(monkeypatch) -> list:
    """Every outgoing internet connection or DNS lookup raises; the list collects the attempts."""
    attempts = []
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"network blocked by the test: connect to {address}")
        return real_connect(self, address)  # local IPC (AF_UNIX) stays allowed

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError(f"network blocked by the test: {args}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_packaged_data_ships_with_its_licence():
    folder = PNEUMONIAMNIST.parent
    attribution = (folder / "ATTRIBUTION.md").read_text()
    assert PNEUMONIAMNIST.is_file() and "CC BY 4.0" in attribution
    assert "Scientific Data 10, 41 (2023)" in attribution and "10.17632/rscbjbr9sj.2" in attribution


def test_demo_runs_end_to_end_with_the_network_blocked(tmp_path, capsys, blocked_network):
    """Tiny demo on the packaged file: conversion -> contrastive_xray bundle -> xray_cls preprocessing ->
    fine-tuning SSL and scratch at two fractions and two seeds -> report; intermediates deleted."""
    settings = DemoSettings.smoke(out=tmp_path / "demo", max_images=100, finetune_images=32, pretrain_batch=25)
    report = run_demo(settings)
    out = capsys.readouterr().out
    assert blocked_network == [], "the demo tried to reach the network"
    assert "[5/5" in out and str(report) in out and "AUC gain of pretraining at 10% of the labels" in out
    assert "\r" not in out, "progress output for a log must not hold carriage returns"
    assert "pretraining epoch 1/1: 4 iterations" in out  # 100 training images, batch 25

    saved = json.loads((report.parent / "metrics.json").read_text())
    runs = saved["tables"]["every run"]
    assert sorted((r["seed"], r["fraction"], r["init"]) for r in runs) == sorted(
        (s, f, i) for s in (0, 1) for f in (0.1, 1.0) for i in ("ssl", "scratch"))
    for run in runs:
        assert all(0.0 <= run[key] <= 1.0 for key in ("auc", "accuracy", "f1_weighted", "val_auc"))
        assert run["labelled"] == (10 if run["fraction"] == 0.1 else 100)
        assert 1 <= run["epoch_kept"] <= run["epochs"] == (4 if run["fraction"] == 0.1 else 1)
    metrics = saved["metrics"]
    assert metrics["seeds"] == [0, 1] and metrics["data"]["test_images"] in (100, 101)  # stratified, rounded
    summary = saved["tables"]["test metrics (mean ± std over seeds)"]
    assert {row["n"] for row in summary} == {2}
    ssl, scratch = ({r["fraction"]: r["auc_mean"] for r in summary if r["init"] == i} for i in ("ssl", "scratch"))
    assert metrics["auc_gain_at_0.1"] == pytest.approx(ssl[0.1] - scratch[0.1], abs=1e-4)
    assert json.loads((report.parent / "runs.json").read_text())["records"] == runs

    for figure in ("label_fraction_auc.png", "tsne_test_embeddings.png", "gradcam_test.png"):
        assert (report.parent / figure).stat().st_size > 5000 and f"({figure})" in report.read_text()
    assert len(metrics["gradcam_test_indices"]) >= 4
    assert not (settings.out / "work").exists(), "the PNGs, checkpoints and logs must be deleted"
    files = {p.relative_to(settings.out).as_posix() for p in settings.out.rglob("*") if p.is_file()}
    assert files == {"encoder.pt", *(f"report/{name}" for name in (
        "metrics.json", "runs.json", "report.md", "label_fraction_auc.png", "tsne_test_embeddings.png",
        "gradcam_test.png"))}
    encoder, metadata = load_encoder_export(settings.out / "encoder.pt")
    assert metadata["encoder_kwargs"] == {"conv1_t_size": 3} and metadata["spatial_dims"] == 2
    assert encoder.embed(torch.zeros(2, 1, 28, 28)).shape == (2, encoder.embedding_dim)


def test_demo_refuses_a_3d_file_with_one_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    arrays = {f"{split}_images": rng.integers(0, 255, (6, 8, 8, 8), dtype=np.uint8) for split in ("train", "val", "test")}
    arrays.update({f"{split}_labels": np.array([[0], [1]] * 3) for split in ("train", "val", "test")})
    np.savez(tmp_path / "volumes.npz", **arrays)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--data", str(tmp_path / "volumes.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "volumes.npz" in err and "2D grey MedMNIST" in err
    assert not (tmp_path / "demo" / "report").exists()


def test_demo_rejects_zero_seeds(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--seeds", "0"]) == 2
    assert "medssl3d demo: error: --seeds, --pretrain-epochs and --threads must be at least 1" in capsys.readouterr().err


def test_synthetic_ct_path_runs_end_to_end(tmp_path, capsys, blocked_network):
    """Tiny ``--synthetic-ct`` run: synthesize -> Genesis bundle 2 iterations -> nodule patches -> fine-tune SSL
    and scratch -> report with real metrics."""
    settings = CTDemoSettings(out=tmp_path / "demo", cases=6, ct_size=(64, 64, 24), pretrain_epochs=1,
                              crops_per_volume=2, finetune_steps=2, fractions=(0.5, 1.0), seeds=(0,))
    report = run_ct_demo(settings)
    out = capsys.readouterr().out
    assert "[5/5" in out and "ssl" in out and "scratch" in out and str(report) in out
    assert blocked_network == [], "the demo tried to reach the network"

    checkpoint = load_checkpoint(settings.out / "pretraining" / "checkpoints" / "checkpoint_last.pt")
    assert checkpoint["iteration"] == 2  # 4 training volumes, 2 per batch, 1 epoch
    saved = json.loads((report.parent / "metrics.json").read_text())
    runs = saved["tables"]["every run"]
    assert {(r["init"], r["fraction"]) for r in runs} == {(i, f) for i in ("ssl", "scratch") for f in (0.5, 1.0)}
    for run in runs:
        assert 0.0 <= run["accuracy"] <= 1.0 and run["labelled"] >= 2
    assert saved["metrics"]["cohort"]["test_nodules"] > 0
    for figure in ("label_fraction_auc.png", "tsne_pretrained_test.png", "gradcam_test.png"):
        assert (report.parent / figure).stat().st_size > 1000
        assert f"({figure})" in report.read_text()

import io
import math

import numpy as np
import pytest
import torch

from medssl3d.engine.monitor import embedding_spread


def test_spread_is_zero_for_collapsed_and_about_one_over_sqrt_d_for_spread_embeddings():
    torch.manual_seed(0)
    assert embedding_spread(torch.ones(64, 128) * 3.0) == pytest.approx(0.0, abs=1e-7)
    assert embedding_spread(torch.randn(512, 128)) == pytest.approx(1 / math.sqrt(128), rel=0.05)
    # scale-invariant: normalised before the std
    x = torch.randn(32, 16)
    assert embedding_spread(10 * x) == pytest.approx(embedding_spread(x), rel=1e-5)


def test_spread_needs_a_batch_of_vectors():
    with pytest.raises(ValueError, match=r"expected embeddings \(B >= 2, D\), got shape \(1, 8\)"):
        embedding_spread(torch.randn(1, 8))


def test_slice_grid_takes_the_middle_slice_on_one_scale_per_sample():
    from medssl3d.engine.monitor import slice_grid

    x = torch.zeros(2, 1, 4, 4, 5)
    x[0, ..., 2] = torch.arange(16.0).reshape(4, 4)  # only the middle slice (index 5 // 2) is non-zero
    x[1] = -3.0
    corrupted, original = slice_grid([x, 2 * x], spatial_dims=3)
    assert corrupted.shape == original.shape == (2, 1, 4, 4)
    assert original[0].max() == 1.0 and corrupted[0].max() == 0.5  # shared scale: 2x stays twice as bright
    assert original[0].min() == 0.0 and (corrupted[1] == 1).all() and (original[1] == 0).all()  # -3 > -6
    assert (slice_grid([x[1:], x[1:]], spatial_dims=3)[0] == 0).all()  # a constant sample maps to 0, not NaN
    assert torch.equal(slice_grid([x[..., 2]], spatial_dims=2)[0], slice_grid([x], spatial_dims=3)[0])


def test_restoration_methods_finds_genesis_alone_and_inside_a_multitask():
    from medssl3d.engine.monitor import restoration_methods
    from medssl3d.methods import build_method, build_multitask
    from medssl3d.networks import build_encoder

    encoder = build_encoder("resnet10", 2, 1)
    genesis = build_method("genesis", encoder)
    assert restoration_methods(genesis) == {"": genesis}
    multitask = build_multitask(["genesis", "rotation"], encoder,
                                method_args={"rotation": {"image_key": "rotation_image"}})
    assert restoration_methods(multitask) == {"genesis": multitask.methods["genesis"]}
    assert restoration_methods(build_method("rotation", encoder)) == {}


def test_genesis_training_logs_input_target_and_restoration_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.data import DataLoader

    from PIL import Image

    from medssl3d.engine.monitor import slice_grid
    from medssl3d.engine.trainer import build_trainer
    from medssl3d.methods import build_method
    from medssl3d.networks import build_encoder

    torch.manual_seed(0)
    method = build_method("genesis", build_encoder("resnet10", 3, 1), min_input_size=16)
    target = torch.rand(5, 1, 16, 16, 16)
    data = [{"image": (t + 0.2 * torch.randn_like(t)).clamp(0, 1), "target": t} for t in target]
    trainer = build_trainer(method, DataLoader(data, batch_size=3), torch.optim.SGD(method.parameters(), lr=0.1),
                            tmp_path, max_iterations=2, checkpointing={"resume": False},
                            monitoring={"progress_bar": False, "spread_key": None, "image_every": 1})
    trainer.run()
    assert method.training and method.encoder.training and method.decoder.training

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    for part in ("input", "target", "restoration"):
        images = events.Images(f"images/{part}")
        # iterations 1 and 2 (batches of 3 and 2): one 16x16 middle slice per sample, side by side
        assert [(e.step, e.width, e.height) for e in images] == [(1, 48, 16), (2, 32, 16)]

    # the last grids show the last batch (items 3 and 4) and the final model's restoration of it
    last = {"input": torch.stack([d["image"] for d in data[3:]]), "target": target[3:]}
    method.eval()
    with torch.no_grad():
        last["restoration"] = method.restore(last["input"])
    expected = dict(zip(last, slice_grid(list(last.values()), spatial_dims=3), strict=True))
    for part, grid in expected.items():
        png = Image.open(io.BytesIO(events.Images(f"images/{part}")[-1].encoded_image_string)).convert("L")
        logged = torch.from_numpy(np.asarray(png, dtype=np.float32) / 255)
        torch.testing.assert_close(logged, torch.cat(list(grid[:, 0]), dim=1), atol=1 / 255, rtol=0)

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from medssl3d.engine.step import SSLStep, StepEvents, move_to_device


class LinearMethod(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(5, 1)

    def forward(self, batch):
        mse = ((self.linear(batch["x"]) - batch["y"]) ** 2).mean()
        return {"loss": mse, "loss/mse": mse}


def _data(n=8):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=generator), torch.randn(n, 1, generator=generator)


def _train(batches, grad_accumulation):
    method = LinearMethod()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    engine = Engine(SSLStep(method, optimizer, grad_accumulation=grad_accumulation))
    engine.register_events(*StepEvents)
    steps = []
    engine.add_event_handler(StepEvents.OPTIMIZER_STEP_COMPLETED, lambda e: steps.append(e.state.iteration))
    outputs = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
    engine.run(batches, max_epochs=1)
    return method, steps, outputs


def test_accumulating_two_half_batches_equals_one_full_batch_step():
    x, y = _data()
    full, full_steps, _ = _train([{"x": x[:4], "y": y[:4]}, {"x": x[4:], "y": y[4:]}], grad_accumulation=1)
    halves = [{"x": x[i : i + 2], "y": y[i : i + 2]} for i in range(0, 8, 2)]
    accumulated, accumulated_steps, outputs = _train(halves, grad_accumulation=2)
    assert full_steps == [1, 2] and accumulated_steps == [2, 4]
    for a, b in zip(full.parameters(), accumulated.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert LinearMethod().linear.weight.ne(accumulated.linear.weight).any()  # training moved the weights
    assert all(set(o) == {"loss", "loss/mse"} and isinstance(o["loss"], float) for o in outputs)


def test_losses_must_be_a_dict_of_scalars():
    class NoLossKey(LinearMethod):
        def forward(self, batch):
            return {"mse": super().forward(batch)["loss"]}

    class NotScalar(LinearMethod):
        def forward(self, batch):
            return {"loss": super().forward(batch)["loss"], "loss/vector": torch.zeros(3)}

    x, y = _data(2)
    for cls, message in ((NoLossKey, "NoLossKey must return a dict with a 'loss' entry"),
                         (NotScalar, r"NotScalar returned 'loss/vector' = Tensor\(3,\)")):
        method = cls()
        engine = Engine(SSLStep(method, torch.optim.SGD(method.parameters(), lr=0.1)))
        with pytest.raises(ValueError, match=message):
            engine.run([{"x": x, "y": y}], max_epochs=1)


def test_amp_is_off_on_cpu_with_a_warning():
    method = LinearMethod()
    with pytest.warns(UserWarning, match="AMP is only used on CUDA"):
        step = SSLStep(method, torch.optim.SGD(method.parameters(), lr=0.1), device="cpu", amp=True)
    assert not step.amp and not step.scaler.is_enabled()
    with pytest.raises(ValueError, match="grad_accumulation must be a positive int"):
        SSLStep(method, torch.optim.SGD(method.parameters(), lr=0.1), grad_accumulation=0)


def test_move_to_device_keeps_structure():
    batch = {"a": torch.zeros(1), "b": [torch.ones(1), "text"], "c": (torch.ones(2),), "d": 3}
    moved = move_to_device(batch, torch.device("meta"))
    assert moved["a"].device.type == "meta" and moved["b"][0].device.type == "meta"
    assert moved["b"][1] == "text" and isinstance(moved["c"], tuple) and moved["d"] == 3


def test_batch_transforms_run_on_the_device_before_the_forward_pass_without_gradients():
    """The method sees the transformed batch; the transforms see it on the step's device, under no_grad, in order;
    engine.state.batch becomes the transformed batch (what the image monitor logs)."""
    seen = []

    def make_target(batch):
        seen.append((batch["x"].device, torch.is_grad_enabled(), "y" in batch))
        return {**batch, "y": batch["x"].sum(1, keepdim=True)}

    def scale(batch):
        seen.append((batch["x"].device, torch.is_grad_enabled(), "y" in batch))
        return {**batch, "y": 2 * batch["y"]}

    x, _ = _data(4)
    method = LinearMethod()
    step = SSLStep(method, torch.optim.SGD(method.parameters(), lr=0.1), batch_transforms=[make_target, scale])
    engine = Engine(step)
    logged = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: logged.append((e.state.batch, e.state.output)))
    engine.run([{"x": x}], max_epochs=1)
    assert seen == [(torch.device("cpu"), False, False), (torch.device("cpu"), False, True)]
    batch, output = logged[0]
    torch.testing.assert_close(batch["y"], 2 * x.sum(1, keepdim=True))
    expected = ((LinearMethod().linear(x) - batch["y"]) ** 2).mean()
    assert output["loss"] == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="batch_transforms must be callables"):
        SSLStep(method, torch.optim.SGD(method.parameters(), lr=0.1), batch_transforms=["not callable"])

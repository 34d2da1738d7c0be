"""Momentum (EMA) update of a method's target network after every optimiser step, as an ignite handler.

Methods with a target encoder (MoCo, BYOL) expose ``momentum_update(momentum)``; this handler calls it on
:attr:`~medssl3d.engine.step.StepEvents.OPTIMIZER_STEP_COMPLETED`. With ``base_momentum`` set, the momentum
follows BYOL's cosine schedule (Grill et al., NeurIPS 2020, sec. 3.2) over the training progress
``p = iteration / total_iterations``::

    m(p) = final - (final - base) * (cos(pi * p) + 1) / 2        # base at p = 0, final at p = 1

``base_momentum=None`` calls ``momentum_update()`` with the method's own (constant) default, as MoCo does.
The momentum is a function of the iteration, so it continues unchanged after a resume. MONAI has no such
handler, hence written here.
"""

from __future__ import annotations

import math

from ignite.engine import Engine
from torch import nn

from .step import StepEvents

__all__ = ["MomentumUpdate", "cosine_momentum"]


def cosine_momentum(progress: float, base: float, final: float = 1.0) -> float:
    """BYOL's momentum at training progress ``progress`` in [0, 1]: ``base`` at 0 rising to ``final`` at 1."""
    progress = min(max(progress, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class MomentumUpdate:
    """Ignite handler: ``method.momentum_update(m)`` after each optimiser step.

    Args:
        method: a module with a ``momentum_update`` method.
        base_momentum: start of the cosine schedule (e.g. 0.996 for BYOL); ``None`` for the method's default.
        final_momentum: end of the schedule (1.0 in BYOL).
    """

    def __init__(self, method: nn.Module, base_momentum: float | None = None, final_momentum: float = 1.0) -> None:
        if not callable(getattr(method, "momentum_update", None)):
            raise ValueError(f"MomentumUpdate: method {type(method).__name__} has no momentum_update().")
        for name, value in (("base_momentum", base_momentum), ("final_momentum", final_momentum)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"MomentumUpdate: {name} must be in [0, 1], got {value!r}.")
        self.method = method
        self.base_momentum = base_momentum
        self.final_momentum = final_momentum

    def attach(self, engine: Engine) -> None:
        if not engine.has_registered_events(StepEvents.OPTIMIZER_STEP_COMPLETED):
            engine.register_events(*StepEvents)
        engine.add_event_handler(StepEvents.OPTIMIZER_STEP_COMPLETED, self)

    def momentum(self, engine: Engine) -> float | None:
        """The momentum for the optimiser step just taken, or ``None`` for the method's default."""
        if self.base_momentum is None:
            return None
        state = engine.state
        total = state.max_iters if state.max_iters is not None else state.max_epochs * state.epoch_length
        return cosine_momentum(state.iteration / total, self.base_momentum, self.final_momentum)

    def __call__(self, engine: Engine) -> None:
        momentum = self.momentum(engine)
        if momentum is None:
            self.method.momentum_update()
        else:
            self.method.momentum_update(momentum)

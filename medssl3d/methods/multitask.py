"""Several self-supervised methods trained together on one shared encoder, with fixed or learned task weights.

Uncertainty weighting follows Kendall et al., "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
Geometry and Semantics", CVPR 2018, eq. 7 in the log-variance form of their implementation: with a learnable
``s_i = log sigma_i^2`` per task (initialised to 0, i.e. weight 1),

    L = sum_i exp(-s_i) * L_i + s_i.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from medssl3d.networks import Encoder

from .base import SSLMethod

__all__ = ["MultiTask", "build_multitask"]


class MultiTask(SSLMethod):
    """Sum of the losses of several methods built on ONE encoder instance.

    Each method gets the whole batch and reads its own keys (give the methods distinct key names where
    their transforms would collide). Leaving a method out of ``methods`` is the drop-one ablation.

    Args:
        methods: ``{name: method}``; every method's ``encoder`` must be the same object (build them all on
            one :func:`~medssl3d.networks.build_encoder` result). Names must be valid ``nn.ModuleDict`` keys
            (no ``"."``).
        weighting: ``"fixed"`` (``L = sum_i w_i L_i``) or ``"uncertainty"`` (Kendall et al., see module
            docstring; learnable ``log_vars``, which the optimiser must include).
        weights: ``{name: w_i}`` for ``"fixed"`` (names not given weigh 1); not allowed with ``"uncertainty"``.

    Output: ``{"loss": L, "loss/<name>": L_i, "loss/<name>/<part>": ...}``, ``L_i`` being method ``name``'s own
    (internally weighted) total.
    """

    def __init__(
        self,
        methods: Mapping[str, SSLMethod],
        weighting: str = "fixed",
        weights: Mapping[str, float] | None = None,
    ) -> None:
        if not methods:
            raise ValueError("MultiTask: methods must name at least one method, got none.")
        for name, method in methods.items():
            if not isinstance(method, SSLMethod):
                raise ValueError(f"MultiTask: method {name!r} must be an SSLMethod, got {type(method).__name__}.")
        names = list(methods)
        encoder = methods[names[0]].encoder
        others = [name for name in names[1:] if methods[name].encoder is not encoder]
        if others:
            raise ValueError(
                f"MultiTask: every method must share one encoder instance, but {others} hold a different encoder "
                f"object than {names[0]!r}; build all methods on the same build_encoder(...) result."
            )
        if weighting not in ("fixed", "uncertainty"):
            raise ValueError(f"MultiTask: weighting must be 'fixed' or 'uncertainty', got {weighting!r}.")
        weights = dict(weights or {})
        if weighting == "uncertainty" and weights:
            raise ValueError("MultiTask: weights are learned with weighting='uncertainty'; pass weights=None.")
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ValueError(f"MultiTask: weights name {unknown}, which are not among the methods {names}.")
        super().__init__(encoder, min_input_size=encoder.min_spatial_size, weights=weights)
        self.methods = nn.ModuleDict(methods)
        self.weighting = weighting
        self.log_vars = nn.Parameter(torch.zeros(len(names))) if weighting == "uncertainty" else None

    def batch_keys(self) -> dict[str, str]:
        """Every key any of the methods reads."""
        return {key: producer for method in self.methods.values() for key, producer in method.batch_keys().items()}

    def check_input_size(self, spatial_shape: Sequence[int], what: str = "images") -> None:
        """Every method's :meth:`~medssl3d.methods.base.SSLMethod.check_input_size`: the strictest one decides."""
        for method in self.methods.values():
            method.check_input_size(spatial_shape, what)

    def task_weights(self) -> dict[str, float]:
        """The current weight of each method's loss: ``w_i``, or ``exp(-s_i)`` with uncertainty weighting."""
        if self.log_vars is None:
            return {name: self.weights.get(name, 1.0) for name in self.methods}
        return dict(zip(self.methods, torch.exp(-self.log_vars.detach()).tolist(), strict=True))

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        self.check_batch(batch)
        out: dict[str, Tensor] = {}
        total: Tensor | float = 0.0
        for i, (name, method) in enumerate(self.methods.items()):
            losses = method(batch)
            task = losses["loss"]
            if self.log_vars is None:
                total = total + self.weights.get(name, 1.0) * task
            else:
                total = total + torch.exp(-self.log_vars[i]) * task + self.log_vars[i]
            out[f"loss/{name}"] = task
            out.update({f"loss/{name}/{key[len('loss/'):]}": value for key, value in losses.items() if key != "loss"})
        return {"loss": total, **out}

    def momentum_update(self, momentum: float | None = None) -> None:
        """Call ``momentum_update(momentum)`` of every method that has a target network (MoCo, BYOL)."""
        for method in self.methods.values():
            if callable(getattr(method, "momentum_update", None)):
                method.momentum_update(momentum)


def build_multitask(
    tasks: Sequence[str],
    encoder: Encoder,
    weighting: str = "fixed",
    weights: Mapping[str, float] | None = None,
    method_args: Mapping[str, Mapping[str, Any]] | None = None,
) -> MultiTask:
    """A :class:`MultiTask` of the registered methods named in ``tasks``, all built on the one ``encoder``.

    For bundle YAMLs, where a list of names is easier to override than a dict of modules: dropping a name
    from ``tasks`` is the drop-one ablation.

    Args:
        tasks: method names of :data:`medssl3d.methods.METHODS`, e.g. ``["genesis", "rotation", "simclr"]``;
            each once.
        encoder: the shared encoder (:func:`~medssl3d.networks.build_encoder`).
        weighting, weights: as :class:`MultiTask`.
        method_args: ``{task: keyword arguments of its method class}``, e.g. the batch keys its transform
            writes (``{"rotation": {"image_key": "rotation_image"}}``); tasks not named get the defaults.

    Raises a ValueError before anything is trained for an unknown task (listing the registered methods) and
    when two tasks read one batch key that different transforms write (e.g. ``image`` of Models Genesis and
    of rotation prediction): one transform would overwrite the other's output.
    """
    from . import METHODS, build_method  # the registry imports this module

    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    if not tasks:
        raise ValueError(f"build_multitask: tasks must name at least one method of {sorted(METHODS)}, got none.")
    unknown = [task for task in tasks if task not in METHODS]
    if unknown:
        raise ValueError(
            f"build_multitask: unknown task(s) {unknown}; registered methods: {', '.join(sorted(METHODS))}."
        )
    repeated = sorted({task for task in tasks if tasks.count(task) > 1})
    if repeated:
        raise ValueError(f"build_multitask: tasks {repeated} are listed more than once in {tasks}.")
    method_args = dict(method_args or {})
    stray = sorted(set(method_args) - set(tasks))
    if stray:
        raise ValueError(f"build_multitask: method_args name {stray}, which are not among the tasks {tasks}.")
    methods = {task: build_method(task, encoder, **dict(method_args.get(task) or {})) for task in tasks}
    readers: dict[str, tuple[str, str]] = {}  # batch key -> (first task reading it, its producer)
    for task, method in methods.items():
        for key, producer in method.batch_keys().items():
            first, first_producer = readers.setdefault(key, (task, producer))
            if first_producer != producer:
                raise ValueError(
                    f"build_multitask: tasks {first!r} and {task!r} both read batch key {key!r}, written by "
                    f"{first_producer} and by {producer}; give one of them its own key names in method_args "
                    f"(e.g. {{{task!r}: {{'image_key': '{task}_image'}}}}) and write them with its transform."
                )
    return MultiTask(methods, weighting, weights)

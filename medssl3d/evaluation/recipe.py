"""The fine-tuning recipe: one protocol for every dataset, every label count and every initialisation.

``benchmarks/label_efficiency.py`` and ``medssl3d evaluate --finetune`` both call :func:`fine_tune_with_recipe`;
``docs/finetuning_recipe.md`` gives the recipe and its reasons with the figures behind them. In short:

* **Budget in optimisation steps, with a floor.** ``steps = clip(ceil(epochs * n / batch), min_steps,
  max_steps)``. An epoch count starves small sets (one epoch of 550 images at batch 32 is 17 steps; a scratch
  ResNet then learns little more than the class prior), an epoch count that suits small sets wastes time on
  large ones; the floor gives every run enough updates and the validation checkpoint stops what overfits.
  Optionally (``max_epochs``) the floor gives way to a cap on passes over the labelled set, ``steps <=
  ceil(max_epochs * n / batch)``: a floor long enough for a hundred labels is hundreds of passes over ten.
* **A budget that grows while the labelled set is not fit** (``fit_loss``, default 0.3): when a cycle of full
  fine-tuning ends with the labelled set's mean cross-entropy (the model as it is: eval mode, no augmentation)
  above ``fit_loss``, the decaying rates restart for another cycle of the same length (warm restarts, SGDR,
  Loshchilov & Hutter, ICLR 2017), up to ``max_cycles`` (3) cycles and within ``max_steps`` (and ``max_epochs``).
  A labelled set that is not yet fit gets more steps; one that is fit does not. At the floor's 200 steps the
  119 labelled volumes of AdrenalMNIST3D at 10 % are not fit (loss 0.34-0.46 after one cycle) while its 12 at 1 %
  are (0.00-0.22), and a budget near ``max_steps`` leaves no room for another cycle: the rule changes only the
  runs that end underfit.
* **Linear-probe warm-up, then full fine-tuning (LP-FT, Kumar et al., ICLR 2022).** The first
  ``head_warmup`` of the steps train only the head on the frozen encoder (in eval mode: BatchNorm keeps its
  running statistics), at ``head_lr``; then everything trains. A randomly initialised head sends large,
  arbitrary gradients into the encoder at the first steps, which distorts pretrained features most where
  labels are fewest; with a fitted head the encoder moves only as far as the task needs. The end of the warm-up
  is itself a candidate checkpoint, so at very few labels the selection may keep the linear probe. Applied to
  every init alike (for a random encoder the warm-up is a probe of random features).
* **A minimum effective batch.** A batch holds ``max(min_batch, min(batch_size, n))`` draws: with 5 labelled
  images a batch repeats them under different augmentation, so BatchNorm's batch statistics and the gradient
  are not those of 5 samples.
* **Class-balanced sampling when classes are skewed** (the rarest class below ``balance_below`` times the
  most common): :class:`~medssl3d.evaluation.finetune.RepeatFactorSampler` (LVIS repeat factors).
* **Learning rates that decay to zero** on a half cosine over full fine-tuning (``lr_decay="cosine"``), so the
  final checkpoint is a converged model rather than a snapshot of a run still moving at the full rate.
* **A small grid, and a selection that decides only what validation can resolve; identical for every init.**
  Each ``(encoder_lr_factor, mode)`` of ``grid`` is trained with the same seed (same head initialisation and
  data order); the validation AUC is measured about ``evaluations`` times per run (and at the end of the
  warm-up). The final checkpoint of the first grid entry is kept unless the candidate with the best validation
  AUC beats it by more than ``margin_se`` (2) standard errors of the difference, estimated by the paired
  bootstrap over the validation samples (:func:`~medssl3d.evaluation.auc_difference_se`): on a validation split
  of 100 volumes that error (about 0.06) exceeds the differences between checkpoints, and the maximum of about
  20 noisy scores is biased upwards. ``selection="best"`` keeps the best candidate outright. The test split is
  never seen.
* **Deterministic.** Weights, batches and augmentation draw from generators seeded with ``seed``; the run uses
  ``threads`` torch threads (the float reduction order, hence the trained weights, depend on the thread count
  and on the CPU's vector instructions: a rerun gives the same figures on the same kind of CPU with the same
  thread count, which the result records).
"""

from __future__ import annotations

import copy
import math
import platform
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .finetune import RepeatFactorSampler, predict_proba
from .metrics import auc_difference_se, classification_metrics

__all__ = ["FineTuneRecipe", "RecipeResult", "cpu_name", "fine_tune_with_recipe", "labelled_fit", "recipe_max_steps",
           "recipe_steps"]

MODES = ("full", "partial")
LR_DECAYS = ("none", "cosine")
SELECTIONS = ("best", "reference")
Monitor = Callable[[str, int, float, nn.Module], None]  # (grid entry, step, validation AUC, model)


@dataclass(frozen=True)
class FineTuneRecipe:
    """Settings of :func:`fine_tune_with_recipe` (see the module docstring for the reasons). The defaults are the
    measured recipe, benchmark profile ``recipe_v9`` (``recipe_v4``'s, the fine-tuning of ``recipe_v6``, with the
    labelled-set fit rule ``fit_loss=0.3``, ``max_cycles=3``).

    ``lr``: AdamW learning rate of the head in full fine-tuning (the encoder's is ``lr * encoder_lr_factor``);
    ``head_lr``: the head's rate during the warm-up; ``grid``: ``(encoder_lr_factor, mode)`` pairs, mode ``"full"``
    or ``"partial"`` (the last ``trainable_stages`` encoder stages train, the others stay frozen in eval mode);
    ``pooled_stages``: the classifier's head reads the pooled maps of the encoder's last this many stages
    (:class:`~medssl3d.transfer.EncoderClassifier`; 1: the coarsest only); ``reset_last_stages``: that many of the
    encoder's last stages are re-initialised before fine-tuning (:func:`~medssl3d.transfer.reset_stages`; 0: none),
    for every init alike; ``max_epochs``: if set, the step budget is at most this many passes over the labelled set
    (it then overrides ``min_steps``); ``fit_loss``, ``max_cycles``: restart the cosine for another cycle of full
    fine-tuning while the labelled set's mean cross-entropy at a cycle's end (:func:`labelled_fit`) exceeds
    ``fit_loss``, at most ``max_cycles`` cycles within ``max_steps`` (``fit_loss=None``: always one cycle);
    ``threads``: torch threads during the run (``None``: leave as is);
    ``lr_warmup``: the learning rates of full fine-tuning rise linearly over this fraction of its steps (``k /
    ramp`` at its k-th step), then stay constant; 0 (the default) keeps them constant throughout
    (docs/finetuning_recipe.md says why it is off);
    ``lr_decay``: ``"none"`` keeps the rates of full fine-tuning constant, ``"cosine"`` multiplies them by
    ``(1 + cos(pi k / K)) / 2`` at its k-th of K steps (SGDR without restarts, Loshchilov & Hutter, ICLR 2017),
    so the last checkpoints are those of a converged run rather than snapshots of a noisy one; ``selection``:
    ``"best"`` keeps the candidate (grid entry and step) with the best validation AUC, ``"reference"`` keeps the
    final checkpoint of the first grid entry (the reference) unless that best candidate beats it by more than
    ``margin_se`` standard errors of the AUC difference (paired bootstrap over the validation samples,
    ``bootstrap`` resamples). Two, not one: the best candidate is the maximum of about ``2 * evaluations``
    validation scores per grid entry, so its score is biased upwards (the winner's curse).
    """

    lr: float = 1e-3
    head_lr: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 16
    min_batch: int = 16
    epochs: float = 16.0
    min_steps: int = 200
    max_steps: int = 1200
    max_epochs: float | None = None
    fit_loss: float | None = 0.3
    max_cycles: int = 3
    head_warmup: float = 0.2
    lr_warmup: float = 0.0
    lr_decay: str = "cosine"
    selection: str = "reference"
    margin_se: float = 2.0
    bootstrap: int = 200
    grid: tuple[tuple[float, str], ...] = ((1.0, "full"), (0.1, "full"))
    trainable_stages: int = 2
    pooled_stages: int = 1
    reset_last_stages: int = 0
    balance_below: float = 0.5
    evaluations: int = 10
    threads: int | None = 1

    def __post_init__(self) -> None:
        problems = []
        if not (self.lr > 0 and self.head_lr > 0 and self.weight_decay >= 0):
            problems.append("lr and head_lr must be > 0, weight_decay >= 0")
        if not (1 <= self.min_batch and 1 <= self.batch_size):
            problems.append("batch_size and min_batch must be >= 1")
        if not (self.epochs > 0 and 1 <= self.min_steps <= self.max_steps):
            problems.append("epochs must be > 0 and 1 <= min_steps <= max_steps")
        if self.max_epochs is not None and not self.max_epochs >= self.epochs:
            problems.append("max_epochs must be None or >= epochs")
        if self.fit_loss is not None and not self.fit_loss > 0:
            problems.append("fit_loss must be None or > 0")
        if self.max_cycles < 1:
            problems.append("max_cycles must be >= 1")
        if self.pooled_stages < 1 or self.reset_last_stages < 0:
            problems.append("pooled_stages must be >= 1 and reset_last_stages >= 0")
        if not 0 <= self.head_warmup < 1:
            problems.append("head_warmup must lie in [0, 1)")
        if not 0 <= self.lr_warmup <= 1:
            problems.append("lr_warmup must lie in [0, 1]")
        if self.lr_decay not in LR_DECAYS:
            problems.append(f"lr_decay must be one of {LR_DECAYS}")
        if self.selection not in SELECTIONS or self.margin_se < 0 or self.bootstrap < 2:
            problems.append(f"selection must be one of {SELECTIONS}, margin_se >= 0 and bootstrap >= 2")
        if not self.grid or any(f <= 0 or m not in MODES for f, m in self.grid):
            problems.append(f"grid must hold (encoder_lr_factor > 0, mode in {MODES}) pairs")
        if not 0 <= self.balance_below <= 1 or self.evaluations < 1:
            problems.append("balance_below must lie in [0, 1] and evaluations be >= 1")
        if self.threads is not None and self.threads < 1:
            problems.append("threads must be >= 1 or None")
        if problems:
            raise ValueError(f"FineTuneRecipe: {'; '.join(problems)}; got {self}.")

    def as_dict(self) -> dict:
        return {**asdict(self), "grid": [list(g) for g in self.grid]}

    @classmethod
    def from_dict(cls, values: dict) -> FineTuneRecipe:
        values = dict(values)
        if "grid" in values:
            values["grid"] = tuple((float(f), str(m)) for f, m in values["grid"])
        return cls(**values)


@dataclass
class RecipeResult:
    """What :func:`fine_tune_with_recipe` returns: the model (eval mode, the kept weights), the chosen grid entry,
    its validation AUC and step (0-based count of optimisation steps done, warm-up included), the steps that grid
    entry ran (the budget, or more where ``fit_loss`` restarted it), the validation AUC of every grid entry,
    whether class-balanced sampling was used, threads and CPU; with
    ``selection="reference"`` also the reference's (final checkpoint of the first grid entry) validation AUC and
    the margin (``margin_se`` standard errors) its best challenger had to exceed."""

    model: nn.Module
    encoder_lr_factor: float
    mode: str
    val_auc: float
    step_kept: int
    steps: int
    warmup_steps: int
    batch: int
    class_balanced: bool
    grid_val_auc: dict[str, float] = field(default_factory=dict)
    threads: int = 1
    cpu: str = ""
    reference_val_auc: float | None = None
    selection_margin: float | None = None

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "model"}


def _step_limit(recipe: FineTuneRecipe, n_labels: int) -> int:
    """The most steps a run may take, restarts included: ``max_steps``, and ``ceil(max_epochs * n / batch)`` when
    ``max_epochs`` is set (``recipe_steps``' budget never exceeds either)."""
    if recipe.max_epochs is None:
        return recipe.max_steps
    batch = recipe_steps(recipe, n_labels)[2]
    return min(recipe.max_steps, math.ceil(recipe.max_epochs * n_labels / batch))


def recipe_steps(recipe: FineTuneRecipe, n_labels: int) -> tuple[int, int, int]:
    """``(total steps, warm-up steps, batch)`` for ``n_labels`` labelled samples: ``batch = max(min_batch,
    min(batch_size, n))``, ``total = clip(ceil(epochs * n / batch), min_steps, max_steps)``, then at most
    ``ceil(max_epochs * n / batch)`` when ``max_epochs`` is set; warm-up ``round(head_warmup * total)``."""
    if n_labels < 1:
        raise ValueError(f"recipe_steps: need at least one labelled sample, got {n_labels}.")
    batch = max(recipe.min_batch, min(recipe.batch_size, n_labels))
    total = min(recipe.max_steps, max(recipe.min_steps, math.ceil(recipe.epochs * n_labels / batch)))
    if recipe.max_epochs is not None:
        total = min(total, math.ceil(recipe.max_epochs * n_labels / batch))
    return total, round(recipe.head_warmup * total), batch


def recipe_max_steps(recipe: FineTuneRecipe, n_labels: int) -> int:
    """The most steps a run on ``n_labels`` samples may take: the budget of :func:`recipe_steps`, and with
    ``fit_loss`` set the warm-up plus as many cycles as ``max_cycles`` and the step limit allow (a labelled set that
    is never fit takes them all). What a runtime projection must count, since the fit is known only at run time."""
    total, warmup, _ = recipe_steps(recipe, n_labels)
    cycle = total - warmup
    if recipe.fit_loss is None or cycle == 0:
        return total
    return warmup + cycle * min(recipe.max_cycles, (_step_limit(recipe, n_labels) - warmup) // cycle)


def is_skewed(labels: np.ndarray, balance_below: float) -> bool:
    """True when the rarest class has fewer than ``balance_below`` times the samples of the most common."""
    counts = np.unique(np.asarray(labels), return_counts=True)[1]
    return bool(counts.min() < balance_below * counts.max())


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s model name where there is one), for the record of a run."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextmanager
def _threads(count: int | None):
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _Batches:
    """An endless stream of index batches of ``batch`` draws: epoch orders (a permutation, or the repeat-factor
    sampler's draws) concatenated, so a batch larger than the set spans several epochs (repeats)."""

    def __init__(self, labels: np.ndarray, batch: int, balanced: bool, seed: int) -> None:
        self.n, self.batch, self.epoch = len(labels), batch, 0
        self.rng = np.random.default_rng([seed, 1])
        self.sampler = RepeatFactorSampler(labels, seed=seed) if balanced else None
        self.buffer = np.empty(0, dtype=np.int64)

    def __next__(self) -> torch.Tensor:
        while len(self.buffer) < self.batch:
            order = (np.fromiter(iter(self.sampler), dtype=np.int64) if self.sampler is not None
                     else self.rng.permutation(self.n))
            self.buffer = np.concatenate([self.buffer, order])
        out, self.buffer = self.buffer[: self.batch], self.buffer[self.batch:]
        return torch.as_tensor(out)


class _Candidate(NamedTuple):
    """A checkpoint of one grid entry: validation AUC, step, weights and validation probabilities."""

    auc: float
    step: int
    state: dict
    probs: np.ndarray


def _validate(model: nn.Module, images, labels, num_classes: int, device) -> tuple[float, np.ndarray]:
    probs = predict_proba(model, images, batch_size=256, device=device)
    auc = classification_metrics(labels, probs, num_classes)["auc"]
    return (float(auc) if auc is not None and math.isfinite(auc) else -math.inf), probs


def _grid_key(factor: float, mode: str) -> str:
    return f"{factor:g} {mode}"


def _rate_factor(recipe: FineTuneRecipe, full_steps: int) -> Callable[[int], float]:
    """The learning-rate factor at the ``done``-th step of full fine-tuning: the linear warm-up (``lr_warmup``) times
    the decay (``lr_decay``); torch's LambdaLR applies it."""
    ramp = max(1, round(recipe.lr_warmup * full_steps))

    def factor(done: int) -> float:
        decay = 0.5 * (1.0 + math.cos(math.pi * done / full_steps)) if recipe.lr_decay == "cosine" else 1.0
        return min(1.0, (done + 1) / ramp) * decay

    return factor


def labelled_fit(model: nn.Module, images, labels, device="cpu") -> tuple[float, float]:
    """How well ``model`` as it is (eval mode, no augmentation) fits its labelled set: ``(mean cross-entropy,
    accuracy)``."""
    probs = torch.as_tensor(predict_proba(model, images, batch_size=256, device=device))
    target = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    loss = nn.functional.nll_loss(probs.clamp_min(1e-12).log(), target).item()
    return loss, (probs.argmax(1) == target).double().mean().item()


def _train_one(build: Callable[[str], nn.Module], factor: float, mode: str, recipe: FineTuneRecipe,
               x: torch.Tensor, y: torch.Tensor, val: tuple, num_classes: int, seed: int, device,
               augment, balanced: bool, monitor: Monitor | None) -> tuple[_Candidate, _Candidate, int]:
    """One grid entry: its checkpoint with the best validation AUC (the first of ties), its final one and the number
    of steps it ran (more than the budget where ``fit_loss`` restarted the schedule)."""
    total, warmup, batch = recipe_steps(recipe, len(y))
    cycle, limit = total - warmup, _step_limit(recipe, len(y))
    torch.manual_seed(seed)  # the head's initialisation: the same for every grid entry and init
    model = build(mode).to(device)
    draws = _Batches(y.numpy(), batch, balanced, seed)
    every = max(1, cycle // recipe.evaluations)
    kept = {}

    def evaluate(step: int) -> None:
        auc, probs = _validate(model, val[0], val[1], num_classes, device)
        if monitor is not None:
            with torch.random.fork_rng(devices=[]):  # whatever it draws leaves the run's random stream alone
                monitor(_grid_key(factor, mode), step, auc, model)
        kept["last"] = (auc, step, probs)
        if "best" not in kept or auc > kept["best"].auc:
            kept["best"] = _Candidate(auc, step, copy.deepcopy(model.state_dict()), probs)

    def batch_of_draws() -> tuple[torch.Tensor, torch.Tensor]:
        index = next(draws)
        images = x[index].to(device)
        return (augment(images) if augment is not None else images), y[index].to(device)

    head_opt = torch.optim.AdamW(model.head.parameters(), lr=recipe.head_lr, weight_decay=recipe.weight_decay)
    inner = model.encoder
    for _ in range(warmup):  # linear-probe warm-up: the head alone, on the frozen encoder in eval mode
        images, target = batch_of_draws()
        model.eval()
        with torch.no_grad():
            features = model.embed(images)
        model.head.train()
        loss = nn.functional.cross_entropy(model.head(model.dropout(features)), target)
        head_opt.zero_grad()
        loss.backward()
        head_opt.step()
    if warmup:  # the warm-up's probe is a candidate
        evaluate(warmup)
    groups = [{"params": [p for p in inner.parameters() if p.requires_grad],
               "lr": recipe.lr * factor, "weight_decay": recipe.weight_decay},
              {"params": list(model.head.parameters()), "lr": recipe.lr, "weight_decay": recipe.weight_decay}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]])
    step = warmup
    for cycles in range(1, recipe.max_cycles + 1):  # full fine-tuning: one schedule of `cycle` steps per cycle
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _rate_factor(recipe, cycle))  # (re)starts at 1
        for done in range(1, cycle + 1):
            images, target = batch_of_draws()
            model.train()
            loss = nn.functional.cross_entropy(model(images), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if done % every == 0 or done == cycle:
                evaluate(step)
        if (recipe.fit_loss is None or cycles == recipe.max_cycles or step + cycle > limit
                or labelled_fit(model, x, y, device)[0] <= recipe.fit_loss):
            break  # no restart: none asked for, none allowed, or the labelled set is fit
    auc, step, probs = kept["last"]  # the last evaluation is at the last step: the weights as they are now
    return kept["best"], _Candidate(auc, step, model.state_dict(), probs), step


def fine_tune_with_recipe(build: Callable[[str], nn.Module], train: tuple, val: tuple, num_classes: int,
                          recipe: FineTuneRecipe = FineTuneRecipe(), seed: int = 0, device="cpu",
                          augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                          monitor: Monitor | None = None) -> RecipeResult:
    """Fine-tune the classifier ``build(mode)`` returns (a new :class:`~medssl3d.transfer.EncoderClassifier`
    with the encoder's initial weights; ``mode`` ``"full"`` or ``"partial"``) on ``train = (images, labels)`` by
    ``recipe``, every grid entry selected on ``val = (images, labels)``; return the kept model and the record.

    Images ``(N, C, *spatial)`` (arrays or tensors, float), labels ``(N,)`` ints. ``augment``: a batch transform
    drawing from torch's global generator (e.g. :class:`~medssl3d.evaluation.SymmetryGroup`); it is seeded with
    ``seed`` per grid entry, and the caller's random state is restored afterwards. ``monitor(grid_entry, step,
    val_auc, model)`` is called at every validation evaluation (``grid_entry`` as in ``grid_val_auc``, the model
    in eval mode), e.g. to record the curve or score another split along it; it must not change the model, and
    the selection and results are the same with or without it.
    """
    x = torch.as_tensor(np.asarray(train[0]), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(train[1]), dtype=torch.int64)
    val_x, val_y = torch.as_tensor(np.asarray(val[0]), dtype=torch.float32), np.asarray(val[1])
    if x.ndim < 3 or y.shape != x.shape[:1] or len(y) == 0:
        raise ValueError(f"fine_tune_with_recipe: expected images (N, C, *spatial) and labels (N,) with N > 0, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}.")
    if len(np.unique(val_y)) < 2:
        raise ValueError("fine_tune_with_recipe: the validation set needs both classes to select on AUC; "
                         f"it holds {len(val_y)} sample(s) of class(es) {sorted(set(val_y.tolist()))}.")
    balanced = is_skewed(y.numpy(), recipe.balance_below)
    _, warmup, batch = recipe_steps(recipe, len(y))
    runs, steps_run = {}, {}
    with _threads(recipe.threads), torch.random.fork_rng(devices=[]):
        for factor, mode in recipe.grid:
            best, final, steps_run[(factor, mode)] = _train_one(build, factor, mode, recipe, x, y, (val_x, val_y),
                                                                num_classes, seed, device, augment, balanced, monitor)
            runs[(factor, mode)] = best, final
        threads = torch.get_num_threads()
    (factor, mode), kept = max(((key, best) for key, (best, _) in runs.items()),
                               key=lambda pair: pair[1].auc)  # the first of ties: grid order
    reference_auc = margin = None
    if recipe.selection == "reference":  # the challenger must beat the reference by more than the validation noise
        reference_key = recipe.grid[0]
        reference = runs[reference_key][1]
        margin = recipe.margin_se * auc_difference_se(val_y, kept.probs, reference.probs, recipe.bootstrap, seed)
        reference_auc = round(reference.auc, 6)
        if not kept.auc - reference.auc > margin:
            (factor, mode), kept = reference_key, reference
        margin = round(margin, 6)
    with torch.random.fork_rng(devices=[]):
        model = build(mode)
    model.load_state_dict(kept.state)
    return RecipeResult(model=model.to(device).eval(), encoder_lr_factor=factor, mode=mode, val_auc=kept.auc,
                        step_kept=kept.step, steps=steps_run[(factor, mode)], warmup_steps=warmup, batch=batch,
                        class_balanced=balanced,
                        grid_val_auc={_grid_key(f, m): round(best.auc, 6) for (f, m), (best, _) in runs.items()},
                        threads=threads, cpu=cpu_name(), reference_val_auc=reference_auc, selection_margin=margin)

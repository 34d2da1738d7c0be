"""The fine-tuning recipe on tiny synthetic images: step budget, selection on validation, the same grid for
every init, class-balanced draws, a minimum batch and identical figures on a rerun."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from medssl3d.evaluation import (
    FineTuneRecipe,
    fine_tune_with_recipe,
    labelled_fit,
    predict_proba,
    recipe_max_steps,
    recipe_steps,
)
from medssl3d.evaluation.metrics import classification_metrics
from medssl3d.evaluation.recipe import _Batches, is_skewed
from medssl3d.transfer import build_classifier

TINY = FineTuneRecipe(batch_size=8, min_batch=6, epochs=1.0, min_steps=6, max_steps=12, head_warmup=0.25,
                      evaluations=2, grid=((1.0, "full"), (0.1, "full"), (1.0, "partial")), selection="best",
                      fit_loss=None)  # one cycle: the fit rule has tests of its own


def spots(n, seed, positive=0.5):
    """Class 1: a faint 3x3 square in a 16x16 noise image; class 0: noise only (hard enough that AUCs differ)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < positive).astype(np.int64)
    labels[:2] = [0, 1]
    images = rng.normal(0, 0.3, (n, 1, 16, 16)).astype(np.float32)
    images[labels == 1, :, 6:9, 6:9] += 0.3
    return images, labels


def builder(init_seed, calls=None):
    """A 2D ResNet-10 classifier whose encoder weights come from ``init_seed`` (two seeds: two "inits")."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        weights = build_classifier(2, encoder="resnet10", spatial_dims=2, in_channels=1).encoder.state_dict()

    def build(mode):
        if calls is not None:
            calls.append(mode)
        model = build_classifier(2, encoder="resnet10", spatial_dims=2, in_channels=1, mode=mode)
        model.encoder.load_state_dict(weights)
        return model

    return build


@pytest.fixture(scope="module")
def data():
    return spots(20, 0), spots(16, 1), spots(12, 2)


def test_step_budget_has_a_floor_a_cap_and_a_minimum_batch():
    recipe = FineTuneRecipe(batch_size=32, min_batch=16, epochs=4, min_steps=300, max_steps=1200)
    assert recipe_steps(recipe, 550) == (300, 60, 32)  # 4 epochs would be 69 steps: the floor wins
    assert recipe_steps(recipe, 5) == (300, 60, 16)  # 5 labels: batches of 16 draws (repeats)
    assert recipe_steps(recipe, 4708)[0] == math.ceil(4 * 4708 / 32)  # large sets: epochs decide
    assert recipe_steps(recipe, 100_000)[0] == 1200
    with pytest.raises(ValueError, match="min_steps"):
        FineTuneRecipe(min_steps=10, max_steps=5)
    with pytest.raises(ValueError, match="grid"):
        FineTuneRecipe(grid=((1.0, "frozen"),))


def test_an_epoch_cap_gives_the_floor_way_on_the_smallest_sets():
    recipe = FineTuneRecipe(batch_size=16, min_batch=16, epochs=16, min_steps=400, max_steps=1200, max_epochs=200)
    assert recipe_steps(recipe, 12) == (150, 30, 16)  # 400 steps would be 533 passes over 12 labels
    assert recipe_steps(recipe, 5) == (63, 13, 16)
    assert recipe_steps(recipe, 119) == (400, 80, 16)  # 200 passes would be 1,488 steps: the floor holds
    assert recipe_steps(recipe, 1188)[0] == 1188 and recipe_steps(recipe, 100_000)[0] == 1200
    uncapped = FineTuneRecipe(batch_size=16, min_batch=16, epochs=16, min_steps=400, max_steps=1200)
    assert uncapped.max_epochs is None and recipe_steps(uncapped, 12)[0] == 400
    with pytest.raises(ValueError, match="max_epochs"):
        FineTuneRecipe(epochs=16, max_epochs=8)


def test_batches_repeat_small_sets_and_balance_skewed_classes():
    labels = np.array([0] * 18 + [1] * 2)
    assert is_skewed(labels, 0.5) and not is_skewed(np.array([0, 0, 1, 1, 1]), 0.5)
    plain, balanced = _Batches(labels, 16, False, 0), _Batches(labels, 16, True, 0)
    drawn_plain = torch.cat([next(plain) for _ in range(50)]).numpy()
    drawn_balanced = torch.cat([next(balanced) for _ in range(50)]).numpy()
    assert (labels[drawn_plain] == 1).mean() == pytest.approx(0.1, abs=0.01)
    assert (labels[drawn_balanced] == 1).mean() > 0.2  # repeat factor sqrt(0.5 / 0.1) = 2.2 for the rare class
    small = _Batches(np.array([0, 1, 0, 1, 1]), 16, False, 0)
    batch = next(small)
    assert len(batch) == 16 and set(batch.tolist()) == {0, 1, 2, 3, 4}


def test_same_grid_and_budget_for_every_init_and_selection_on_validation(data):
    (x, y), val, _ = data
    results = {}
    for init in (0, 1):
        calls = []
        results[init] = fine_tune_with_recipe(builder(init, calls), (x, y), val, 2, TINY, seed=0)
        assert calls == ["full", "full", "partial", results[init].mode]  # every grid entry, then the kept one
    for result in results.values():
        assert list(result.grid_val_auc) == ["1 full", "0.1 full", "1 partial"]
        assert (result.steps, result.warmup_steps, result.batch) == (6, 2, 8)  # 1 epoch of 20 is 3 steps: the floor of 6
        # the kept entry is the best on validation, and the returned weights give exactly that validation AUC
        assert result.val_auc == pytest.approx(max(result.grid_val_auc.values()), abs=1e-6)
        assert f"{result.encoder_lr_factor:g} {result.mode}" in result.grid_val_auc
        assert result.grid_val_auc[f"{result.encoder_lr_factor:g} {result.mode}"] == pytest.approx(result.val_auc)
        auc = classification_metrics(val[1], predict_proba(result.model, val[0]), 2)["auc"]
        assert auc == pytest.approx(result.val_auc)
        assert 0 <= result.step_kept <= result.steps
    _, _, (test_x, _) = data  # the two inits really differ
    assert not np.allclose(predict_proba(results[0].model, test_x), predict_proba(results[1].model, test_x))


def test_two_runs_give_identical_figures_and_leave_the_callers_random_state(data):
    (x, y), val, (test_x, _) = data
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = fine_tune_with_recipe(builder(0), (x, y), val, 2, TINY, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    second = fine_tune_with_recipe(builder(0), (x, y), val, 2, TINY, seed=3)
    assert first.summary() == second.summary()
    np.testing.assert_array_equal(predict_proba(first.model, test_x), predict_proba(second.model, test_x))
    other_seed = fine_tune_with_recipe(builder(0), (x, y), val, 2, TINY, seed=4)
    assert not np.allclose(predict_proba(other_seed.model, test_x), predict_proba(first.model, test_x))
    assert first.threads == 1 and first.cpu


def test_validation_with_one_class_is_refused(data):
    (x, y), (val_x, val_y), _ = data
    with pytest.raises(ValueError, match="both classes"):
        fine_tune_with_recipe(builder(0), (x, y), (val_x, np.zeros_like(val_y)), 2, TINY)


def test_monitor_sees_every_evaluation_and_changes_nothing(data):
    """The monitor is called at the warm-up end and at each evaluation of every grid entry with the validation AUC
    the selection uses; a monitor that scores another split (and draws random numbers) leaves the result alone."""
    (x, y), val, (test_x, test_y) = data
    seen = []

    def score_test(entry, step, val_auc, model):
        torch.rand(3)  # a monitor that draws from torch's generator
        test_auc = classification_metrics(test_y, predict_proba(model, test_x), 2)["auc"]
        seen.append((entry, step, val_auc, test_auc))

    plain = fine_tune_with_recipe(builder(0), (x, y), val, 2, TINY, seed=5)
    monitored = fine_tune_with_recipe(builder(0), (x, y), val, 2, TINY, seed=5, monitor=score_test)
    assert monitored.summary() == plain.summary()
    np.testing.assert_array_equal(predict_proba(monitored.model, test_x), predict_proba(plain.model, test_x))
    # 6 steps, 2 of warm-up: the warm-up end (step 2), then every 2 of the 4 full steps (4, 6)
    assert [(entry, step) for entry, step, _, _ in seen] == [
        (entry, step) for entry in ("1 full", "0.1 full", "1 partial") for step in (2, 4, 6)]
    for entry, best in plain.grid_val_auc.items():
        assert max(v for e, _, v, _ in seen if e == entry) == pytest.approx(best, abs=1e-6)
    assert all(0 <= t <= 1 for *_, t in seen)


SIX_STEPS = dict(batch_size=8, min_batch=6, epochs=1.0, min_steps=6, max_steps=6, head_warmup=0.25, evaluations=2,
                 grid=((0.1, "full"),))  # 2 head warm-up steps, then 4 full steps


@pytest.fixture
def rates(monkeypatch):
    """The learning rates of every AdamW step, one list of param-group rates per step."""
    seen = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        seen.append([group["lr"] for group in self.param_groups])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    return seen


def test_lr_warmup_ramps_the_full_fine_tuning_learning_rate(data, rates):
    """lr_warmup = 0.5 of 4 full steps: the encoder's rate is 1/2, then 2/2 of lr x factor; the head warm-up keeps
    head_lr; lr_warmup = 0 leaves every rate constant."""
    (x, y), val, _ = data
    base = dict(SIX_STEPS, lr_decay="none")
    fine_tune_with_recipe(builder(0), (x, y), val, 2, FineTuneRecipe(**base, lr_warmup=0.5), seed=0)
    head, full = rates[:2], rates[2:]
    assert head == [[1e-2], [1e-2]]
    assert [lrs[0] for lrs in full] == pytest.approx([0.5e-4, 1e-4, 1e-4, 1e-4])  # encoder: lr x factor 0.1
    assert [lrs[1] for lrs in full] == pytest.approx([0.5e-3, 1e-3, 1e-3, 1e-3])  # head
    rates.clear()
    fine_tune_with_recipe(builder(0), (x, y), val, 2, FineTuneRecipe(**base), seed=0)
    assert [lrs[0] for lrs in rates[2:]] == pytest.approx([1e-4] * 4)
    with pytest.raises(ValueError, match="lr_warmup"):
        FineTuneRecipe(lr_warmup=1.5)


def test_cosine_lr_decay_follows_the_half_cosine_over_the_full_steps(data, rates):
    """lr_decay = "cosine" over 4 full steps: factors (1 + cos(pi k / 4)) / 2 for k = 0..3, for the encoder and the
    head alike; combined with lr_warmup the two factors multiply; the head warm-up keeps head_lr."""
    (x, y), val, _ = data
    base = dict(SIX_STEPS, lr_decay="cosine")
    cosine = [(1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    fine_tune_with_recipe(builder(0), (x, y), val, 2, FineTuneRecipe(**base), seed=0)
    assert rates[:2] == [[1e-2], [1e-2]]
    assert [lrs[0] for lrs in rates[2:]] == pytest.approx([1e-4 * c for c in cosine])
    assert [lrs[1] for lrs in rates[2:]] == pytest.approx([1e-3 * c for c in cosine])
    rates.clear()
    fine_tune_with_recipe(builder(0), (x, y), val, 2, FineTuneRecipe(**base, lr_warmup=0.5), seed=0)
    assert [lrs[1] for lrs in rates[2:]] == pytest.approx([1e-3 * r * c for r, c in zip([0.5, 1, 1, 1], cosine)])
    with pytest.raises(ValueError, match="lr_decay"):
        FineTuneRecipe(lr_decay="step")


@pytest.mark.parametrize("se, keeps_best", [(math.inf, False), (0.0, True)])
def test_reference_selection_keeps_the_reference_unless_beaten_by_more_than_the_margin(data, monkeypatch, se,
                                                                                      keeps_best):
    """selection "reference": the final checkpoint of the first grid entry (the reference) is kept unless the best
    candidate's validation AUC exceeds it by more than margin_se standard errors of the difference. With an
    infinite error the reference stays; with none the choice is "best"'s. The record gives both and the margin."""
    (x, y), val, _ = data
    recipe = FineTuneRecipe(**{**TINY.as_dict(), "grid": TINY.grid})  # cosine decay, selection "best"
    best = fine_tune_with_recipe(builder(0), (x, y), val, 2, recipe, seed=0)
    assert best.reference_val_auc is None and best.selection_margin is None
    seen = []
    monkeypatch.setattr("medssl3d.evaluation.recipe.auc_difference_se",
                        lambda labels, a, b, resamples, seed: seen.append((len(labels), resamples, seed)) or se)
    chosen = fine_tune_with_recipe(builder(0), (x, y), val, 2,
                                   FineTuneRecipe(**{**recipe.as_dict(), "grid": recipe.grid, "selection": "reference"}),
                                   seed=0)
    assert seen == [(len(val[1]), 200, 0)]
    kept_auc = classification_metrics(val[1], predict_proba(chosen.model, val[0]), 2)["auc"]
    assert chosen.val_auc == pytest.approx(kept_auc, abs=1e-6)
    if keeps_best:
        assert (chosen.encoder_lr_factor, chosen.mode, chosen.step_kept, chosen.val_auc) == (
            best.encoder_lr_factor, best.mode, best.step_kept, best.val_auc)
    else:
        assert (chosen.encoder_lr_factor, chosen.mode, chosen.step_kept) == (1.0, "full", chosen.steps)
        assert chosen.reference_val_auc == pytest.approx(chosen.val_auc, abs=1e-6)
        assert chosen.val_auc < best.val_auc  # the reference was not the best candidate: the margin decided
    assert chosen.selection_margin == 2 * se  # margin_se = 2 by default


def test_labelled_fit_is_the_cross_entropy_and_accuracy_of_the_model_as_it_is():
    class FirstTwoPixels(torch.nn.Module):  # logits: the first two pixels of each image
        def forward(self, x):
            return x.flatten(1)[:, :2]

    images = torch.tensor([[2.0, 0.0, 9.0], [0.0, 1.0, 9.0], [3.0, 1.0, 9.0], [0.5, 0.0, 9.0]]).reshape(4, 1, 3)
    labels = np.array([0, 1, 1, 0])  # the third is misclassified
    expected = torch.nn.functional.cross_entropy(images.flatten(1)[:, :2], torch.as_tensor(labels)).item()
    loss, accuracy = labelled_fit(FirstTwoPixels(), images.numpy(), labels)
    assert (loss, accuracy) == (pytest.approx(expected, abs=1e-6), 0.75)


@pytest.mark.parametrize("losses, max_steps, max_cycles, cycles, measured", [
    ([0.9, 0.4], 30, 4, 2, 2),         # fit after the second cycle
    ([0.9, 0.9, 0.9], 30, 3, 3, 2),    # never fit: max_cycles ends it, the last cycle unmeasured
    ([0.9, 0.9, 0.9], 12, 4, 2, 1),    # never fit: a third cycle would pass max_steps (2 + 3 x 4 > 12)
    ([0.3], 30, 4, 1, 1),              # fit after the first cycle: the run of a recipe without fit_loss
])
def test_fit_loss_restarts_the_schedule_until_the_labelled_set_is_fit(data, rates, monkeypatch, losses, max_steps,
                                                                       max_cycles, cycles, measured):
    """fit_loss = 0.5: after each cycle of full fine-tuning (4 steps on a half cosine) the labelled set's loss is
    measured; above 0.5 the cosine restarts from the full rate (warm restart, optimiser state kept), within
    max_cycles and max_steps. Every cycle is evaluated like the first; the record gives the steps run."""
    (x, y), val, _ = data
    fits = iter(losses)
    calls = []
    monkeypatch.setattr("medssl3d.evaluation.recipe.labelled_fit",
                        lambda model, images, labels, device: calls.append(len(labels)) or (next(fits), 0.0))
    recipe = FineTuneRecipe(**dict(SIX_STEPS, max_steps=max_steps), fit_loss=0.5, max_cycles=max_cycles)
    seen = []
    result = fine_tune_with_recipe(builder(0), (x, y), val, 2, recipe, seed=0,
                                   monitor=lambda entry, step, auc, model: seen.append(step))
    cosine = [(1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    assert rates[:2] == [[1e-2], [1e-2]]
    assert [lrs[0] for lrs in rates[2:]] == pytest.approx([1e-4 * c for c in cosine] * cycles)
    assert result.steps == 2 + 4 * cycles and result.step_kept <= result.steps
    assert recipe_max_steps(recipe, len(y)) == 2 + 4 * min(max_cycles, (max_steps - 2) // 4) >= result.steps
    assert seen == [2] + [2 + 2 * k for k in range(1, 2 * cycles + 1)]
    assert calls == [len(y)] * measured  # on the whole labelled set, only where a restart could follow


def test_without_fit_loss_the_labelled_set_is_never_scored_and_restarts_are_refused(data, monkeypatch):
    """fit_loss=None: one cycle whatever the fit (the default rule, 0.3 within 3 cycles, is switched off)."""
    assert (FineTuneRecipe().fit_loss, FineTuneRecipe().max_cycles) == (0.3, 3)
    (x, y), val, _ = data
    monkeypatch.setattr("medssl3d.evaluation.recipe.labelled_fit", lambda *args: pytest.fail("scored"))
    room = FineTuneRecipe(**dict(SIX_STEPS, max_steps=30), fit_loss=None)  # room for three cycles, none taken
    result = fine_tune_with_recipe(builder(0), (x, y), val, 2, room, seed=0)
    assert result.steps == 6
    with pytest.raises(ValueError, match="fit_loss"):
        FineTuneRecipe(fit_loss=0.0)
    with pytest.raises(ValueError, match="max_cycles"):
        FineTuneRecipe(max_cycles=0)


def test_the_default_fit_rule_restarts_a_labelled_set_that_cannot_be_fit(data):
    """The defaults (fit_loss 0.3, 3 cycles) on the real labelled fit: labels drawn at random cannot be fit (their
    loss stays near ln 2), so the run takes all three cycles of 4 full steps; with the rule off it takes one."""
    (x, _), val, _ = data
    noise = np.random.default_rng(7).permutation(np.arange(len(x)) % 2)
    recipe = FineTuneRecipe(**dict(SIX_STEPS, max_steps=30))
    result = fine_tune_with_recipe(builder(0), (x, noise), val, 2, recipe, seed=0)
    assert result.steps == 2 + 4 * 3 == recipe_max_steps(recipe, len(x))
    assert labelled_fit(result.model, x, noise, "cpu")[0] > recipe.fit_loss
    off = fine_tune_with_recipe(builder(0), (x, noise), val, 2, dataclasses.replace(recipe, fit_loss=None), seed=0)
    assert off.steps == 6 == recipe_max_steps(dataclasses.replace(recipe, fit_loss=None), len(x))


def test_head_on_every_stage_is_trained_in_the_warm_up_and_after(data):
    """pooled_stages reaches the classifier: the warm-up's probe and full fine-tuning both feed the head the pooled
    maps of every stage (a head fed the last stage alone would refuse its input), and the kept model keeps them."""
    (x, y), val, _ = data
    recipe = FineTuneRecipe(**SIX_STEPS, pooled_stages=5)
    build = lambda mode: build_classifier(2, encoder="resnet10", spatial_dims=2, in_channels=1, mode=mode,
                                          pooled_stages=recipe.pooled_stages)
    result = fine_tune_with_recipe(build, (x, y), val, 2, recipe, seed=0)
    assert result.model.pooled_stages == 5 and result.model.head.in_dim == 64 + 64 + 128 + 256 + 512
    assert result.steps == 6 and predict_proba(result.model, x).shape == (len(y), 2)
    with pytest.raises(ValueError, match="pooled_stages"):
        FineTuneRecipe(pooled_stages=0)
    with pytest.raises(ValueError, match="reset_last_stages"):
        FineTuneRecipe(reset_last_stages=-1)

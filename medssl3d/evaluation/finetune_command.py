"""``medssl3d evaluate --finetune``: the fine-tuning recipe (:mod:`medssl3d.evaluation.recipe`) on a labelled
datalist, next to the frozen-feature probes, for the encoder export and (``--compare-scratch`` / ``--scratch``)
a random encoder, with the same steps, grid and validation selection for each.

Validation: the datalist's ``--val-key`` items; a datalist without them gives a stratified 15 % of the
``--train-key`` items (seed ``--seeds[0]``), which are then not trained on. The test items are only predicted.
"""

from __future__ import annotations

import json

import numpy as np

from medssl3d.errors import InputError

__all__ = ["finetune_rows", "load_recipe", "validation_split"]

HELD_OUT = 0.15  # the validation share of the training items when the datalist has no validation key


def validation_split(args, items: list[dict], n_train: int) -> tuple[np.ndarray, np.ndarray, list[dict], str]:
    """``(train indices, validation indices, extra validation items, how)``: indices into ``items`` (training
    items first) and the ``--val-key`` items when the datalist has them (then every training item trains)."""
    from sklearn.model_selection import train_test_split

    from .command import _read_items

    content = json.loads(args.datalist.read_text())
    train = np.arange(n_train)
    if content.get(args.val_key):
        pooled = (_read_items(args.datalist, args.train_key, args.label_key)
                  + _read_items(args.datalist, args.test_key, args.label_key))
        values = sorted({item["label_value"] for item in pooled}, key=lambda v: (str(type(v)), v))
        index = {value: i for i, value in enumerate(values)}  # as command.labelled_data numbers the classes
        extra = _read_items(args.datalist, args.val_key, args.label_key)
        unknown = sorted({str(i["label_value"]) for i in extra if i["label_value"] not in index})
        if unknown:
            raise InputError(f"datalist '{args.datalist}': key {args.val_key} has label(s) {unknown} that the "
                             f"{args.train_key}/{args.test_key} items never have; fix the labels or drop those items.")
        for item in extra:
            item["class"] = index[item.pop("label_value")]
        return train, np.arange(0), extra, f"key {args.val_key} ({len(extra)} items)"
    labels = np.array([items[i]["class"] for i in train])
    try:
        size = max(round(HELD_OUT * n_train), len(np.unique(labels)))  # at least one item of each class
        kept, held = train_test_split(train, test_size=size, stratify=labels, random_state=args.seeds[0])
    except ValueError as err:
        raise InputError(f"datalist '{args.datalist}' has no '{args.val_key}' items and {n_train} training items "
                         f"cannot give a stratified {HELD_OUT:.0%} validation set ({err}); add validation items "
                         f"under '{args.val_key}'.") from err
    return np.sort(kept), np.sort(held), [], f"{HELD_OUT:.0%} of {args.train_key}, stratified ({len(held)} items)"


def load_recipe(path, device: str = "cpu"):
    """The library's :class:`~medssl3d.evaluation.FineTuneRecipe`, its fields replaced by those of the YAML file
    ``path`` (``None``: the defaults); on a GPU the thread count is left alone."""
    import yaml

    from .recipe import FineTuneRecipe

    fields = {} if device == "cpu" else {"threads": None}
    if path is not None:
        try:
            values = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise InputError(f"--recipe {path}: cannot read it as YAML ({err}); give a YAML file of "
                             "FineTuneRecipe fields.".replace("\n", " ")) from err
        if not isinstance(values, dict):
            raise InputError(f"--recipe {path}: expected a mapping of FineTuneRecipe fields, got {values!r}.")
        fields.update(values)
    try:
        return FineTuneRecipe.from_dict(fields)
    except (TypeError, ValueError) as err:
        raise InputError(f"--recipe {path}: {err} (fields: docs/finetuning_recipe.md).") from err


def _stack(dataset, indices) -> np.ndarray:
    return np.stack([np.asarray(dataset[int(i)]["image"], dtype=np.float32) for i in indices])


def finetune_rows(args, items: list[dict], n_train: int, test_index: np.ndarray, encoders, metadata: dict,
                  dataset_of, num_classes: int) -> tuple[list[dict], dict]:
    """Run rows (``init``, ``method`` = ``"finetune"``, ``seed`` and the metrics of ``command.METRICS``) of the
    recipe on every init of ``encoders`` and seed of ``args.seeds``, and the recipe's records per run.
    ``dataset_of(items)``: the command's MONAI dataset (chain, then the patch size) over items."""
    import torch

    from medssl3d.transfer import build_classifier

    from .command import _records
    from .recipe import FineTuneRecipe, fine_tune_with_recipe
    from .symmetry import SymmetryGroup

    if args.folds is not None:
        raise InputError("medssl3d evaluate: --finetune needs the fixed split (training, validation and test "
                         "items); drop --folds, or evaluate with the probes only.")
    train, held, extra, how = validation_split(args, items, n_train)
    dataset = dataset_of(items)
    train_x, train_y = _stack(dataset, train), np.array([items[i]["class"] for i in train])
    if extra:
        val_x, val_y = _stack(dataset_of(extra), range(len(extra))), np.array([i["class"] for i in extra])
    else:
        val_x, val_y = _stack(dataset, held), np.array([items[i]["class"] for i in held])
    test_x, test_y = _stack(dataset, test_index), np.array([items[i]["class"] for i in test_index])
    recipe = load_recipe(args.recipe, args.device)
    augment = SymmetryGroup(metadata["spatial_dims"], "flip")
    rows, records = [], {"validation": how, "recipe": recipe.as_dict(), "runs": []}
    for init, _ in encoders:
        def build(mode, init=init):
            if init != "scratch":
                return build_classifier(num_classes, pretrained_encoder=args.encoder, mode=mode,
                                        trainable_stages=recipe.trainable_stages,
                                        pooled_stages=recipe.pooled_stages,
                                        reset_last_stages=recipe.reset_last_stages)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seeds[0])  # the scratch encoder of the probes, the head then seeded per run
                model = build_classifier(num_classes, encoder=metadata["architecture"],
                                         spatial_dims=metadata["spatial_dims"], in_channels=metadata["in_channels"],
                                         mode=mode, trainable_stages=recipe.trainable_stages,
                                         pooled_stages=recipe.pooled_stages,
                                         reset_last_stages=recipe.reset_last_stages)
            return model

        for seed in args.seeds:
            result = fine_tune_with_recipe(build, (train_x, train_y), (val_x, val_y), num_classes, recipe, seed=seed,
                                           device=args.device, augment=augment)
            from .finetune import predict_proba

            probs = predict_proba(result.model, test_x, batch_size=args.batch_size, device=args.device)
            rows.append(_records(init, "finetune", seed, test_y, probs, num_classes)[0])
            records["runs"].append({"init": init, "seed": seed, **result.summary()})
            print(f"{init}: fine-tuned (seed {seed}): {result.encoder_lr_factor:g} x lr {result.mode}, step "
                  f"{result.step_kept}/{result.steps}, validation AUC {result.val_auc:.3f}, test AUC {rows[-1]['auc']:.3f}")
    return rows, records

"""Evaluation of pretrained encoders: frozen features, kNN, linear/MLP probes, fine-tuning, label-fraction
sweeps, the fine-tuning recipe (:mod:`.recipe`), online kNN validation during pretraining, metrics, plots (label-efficiency curves, t-SNE, Grad-CAM), the
symmetry group shared by fine-tuning augmentation and test-time averaging, and a markdown/JSON report.

All arrays are numpy; ``labels`` are int class indices ``0..C-1``; ``probs`` are ``(N, C)`` rows summing to 1.
"""

from .features import extract_features
from .finetune import (
    RepeatFactorSampler,
    fine_tune_classifier,
    predict_proba,
    repeat_factors,
)
from .fractions import kfold_splits, nested_label_fractions
from .knn import knn_classify
from .metrics import auc_difference_se, classification_metrics, representation_quality
from .online_knn import OnlineKNNValidation, leave_one_out_knn
from .plots import gradcam_overlays, plot_label_fraction_curves, plot_tsne
from .probes import linear_probe, mlp_probe
from .recipe import (
    FineTuneRecipe,
    RecipeResult,
    fine_tune_with_recipe,
    labelled_fit,
    recipe_max_steps,
    recipe_steps,
)
from .report import markdown_table, write_report
from .summary import summarize_runs
from .symmetry import SymmetryGroup
from .sweep import SweepRun, drop_one_grid, load_sweep, run_sweep

__all__ = [
    "FineTuneRecipe",
    "RecipeResult",
    "fine_tune_with_recipe",
    "labelled_fit",
    "recipe_max_steps",
    "recipe_steps",
    "OnlineKNNValidation",
    "SweepRun",
    "SymmetryGroup",
    "drop_one_grid",
    "load_sweep",
    "run_sweep",
    "RepeatFactorSampler",
    "auc_difference_se",
    "classification_metrics",
    "extract_features",
    "fine_tune_classifier",
    "gradcam_overlays",
    "kfold_splits",
    "knn_classify",
    "leave_one_out_knn",
    "linear_probe",
    "markdown_table",
    "mlp_probe",
    "nested_label_fractions",
    "plot_label_fraction_curves",
    "plot_tsne",
    "predict_proba",
    "repeat_factors",
    "representation_quality",
    "summarize_runs",
    "write_report",
]

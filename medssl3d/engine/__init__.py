"""The training workflow every method shares: one step on MONAI's ignite engine, optimizers and warm-up +
cosine schedules, momentum (EMA) updates, full-state checkpoints with exact resume, encoder export,
TensorBoard/console monitoring and online kNN validation. ``build_trainer`` assembles them; bundles instantiate it."""

from .checkpoint import (
    CHECKPOINT_FORMAT,
    TrainingCheckpoint,
    announce,
    capture_rng_state,
    check_keep_last,
    is_main_process,
    keep_newest,
    load_checkpoint,
    newest_checkpoint,
    plain_settings,
    remove_partial_files,
    restore_rng_state,
    resume_message,
    safe_torch_load,
    save_periodic,
    settings_differences,
    torch_save_atomic,
    transform_random_states,
)
from .ema import MomentumUpdate, cosine_momentum
from .export import EXPORT_FORMAT, INPUT_KEYS, EncoderExport, export_encoder, load_encoder_export, read_encoder_export
from .knn_validation import OnlineKNNValidation, leave_one_out_knn
from .monitor import (
    EmbeddingSpread,
    RestorationImages,
    TrainingMonitor,
    embedding_spread,
    restoration_methods,
    slice_grid,
)
from .optim import OPTIMIZERS, build_optimizer, warmup_cosine_schedule
from .resume import SUPERVISED_CHECKPOINT_FORMAT, SupervisedResume
from .step import SSLStep, StepEvents, move_to_device
from .trainer import SSLTrainer, build_trainer, parse_flag

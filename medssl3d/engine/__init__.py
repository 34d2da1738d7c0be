"""The training workflow every method shares: one step on MONAI's ignite engine, optimizers and warm-up +
cosine schedules, momentum (EMA) updates, full-state checkpoints with exact resume (one mechanism for pretraining
and fine-tuning), encoder export during training and TensorBoard/console monitoring. ``build_trainer`` assembles
them; bundles instantiate it.

The engine sits above the encoder export format (:mod:`medssl3d.encoder_export`, re-exported here), the
distributed helpers (:mod:`medssl3d.distributed`) and the atomic writer (:mod:`medssl3d.atomic`) and never
imports :mod:`medssl3d.evaluation`: validation handlers such as :class:`medssl3d.evaluation.OnlineKNNValidation`
are handed to ``build_trainer``."""

from medssl3d.encoder_export import (
    EXPORT_FORMAT,
    INPUT_KEYS,
    describe_inputs,
    export_encoder,
    load_encoder_export,
    read_encoder_export,
)

from .checkpoint import (
    CHECKPOINT_FORMAT,
    ResumableCheckpoint,
    TrainingCheckpoint,
    announce,
    capture_rng_state,
    check_keep_last,
    keep_newest,
    load_checkpoint,
    newest_checkpoint,
    parse_flag,
    plain_settings,
    read_checkpoint,
    restore_rng_state,
    resume_message,
    save_periodic,
    settings_differences,
    transform_random_states,
)
from .ema import MomentumUpdate, cosine_momentum
from .export import EncoderExport
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
from .trainer import (
    CheckpointingOptions,
    MomentumOptions,
    MonitoringOptions,
    OptimisationOptions,
    SSLTrainer,
    build_trainer,
)

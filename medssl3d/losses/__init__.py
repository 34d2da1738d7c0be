"""Losses of medssl3d: the self-supervised losses MONAI lacks or gets wrong, one family per module.

Contrastive losses take the negatives of every DDP rank (:func:`gather`) and are written with log-sum-exp
(``cross_entropy``/``logsumexp`` on logits). Convention: a loss of one term returns a 0-d tensor; a loss of
several terms (:class:`VICRegLoss`) returns ``{"loss": total, "loss/<term>": term}``, the dict a method returns.

Not wrapped here, because torch and MONAI already do the job: restoration losses (Models Genesis, masked
image modelling) are ``torch.nn.MSELoss`` / ``torch.nn.L1Loss`` (or ``monai.losses.SSIMLoss``); pretext
classification (rotation, jigsaw, relative position) is ``torch.nn.CrossEntropyLoss`` and multi-label pretext
targets ``torch.nn.BCEWithLogitsLoss``. MONAI's ``ContrastiveLoss`` is not reused: it sees only the local
batch and takes ``exp`` before ``log``.
"""

from .byol import BYOLLoss
from .dcl import DCLLoss, DCLWLoss
from .ema import momentum_update
from .gather import gather, rank_and_world_size
from .moco import KeyQueue, MoCoLoss
from .ntxent import NTXentLoss, contrastive_logits
from .simsiam import SimSiamLoss
from .vicreg import VICRegLoss

__all__ = [
    "BYOLLoss",
    "DCLLoss",
    "DCLWLoss",
    "KeyQueue",
    "MoCoLoss",
    "NTXentLoss",
    "SimSiamLoss",
    "VICRegLoss",
    "contrastive_logits",
    "gather",
    "momentum_update",
    "rank_and_world_size",
]

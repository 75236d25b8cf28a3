"""The shared training loop and its parts (optimizer, schedule, checkpoints, DDP, logging).

Jobs plug a step function into :class:`Trainer`: :mod:`sonofm.pretrain` (``sonofm pretrain``),
:mod:`sonofm.ssl`, :mod:`sonofm.finetune` and :mod:`sonofm.vlm`. The loop imports none of them.
"""

from __future__ import annotations

from sonofm.train.checkpoint import load_checkpoint, save_checkpoint
from sonofm.train.distributed import DistInfo, init_distributed
from sonofm.train.optim import WarmupCosine, build_optimizer, build_scheduler, param_groups
from sonofm.train.sampler import ResumableBatchSampler
from sonofm.train.steps import ContrastiveStep
from sonofm.train.trainer import FitResult, Trainer, TrainingDiverged, TrainStep

__all__ = [
    "ContrastiveStep",
    "DistInfo",
    "FitResult",
    "ResumableBatchSampler",
    "TrainStep",
    "Trainer",
    "TrainingDiverged",
    "WarmupCosine",
    "build_optimizer",
    "build_scheduler",
    "init_distributed",
    "load_checkpoint",
    "param_groups",
    "save_checkpoint",
]

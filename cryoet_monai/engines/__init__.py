"""Engines: trainers MONAI lacks (teacher–student) and their pieces."""

from cryoet_monai.engines.mean_teacher import MeanTeacherTrainer, ema_update, latest_checkpoint, sigmoid_rampup
from cryoet_monai.engines.pseudo_labels import MultiViewPseudoLabeler, UnlabeledMaskd, unlabeled_data_dicts

"""Ignite handlers: pick overlays and MAE reconstructions in TensorBoard, the validation score of picks, and
the model files (final weights only on completion, the weights of the best validation run, what they were trained
for), and loading them with an error that names a model that does not fit."""

from cryoet_monai.handlers.model_info import (
    ModelInfoWriter,
    check_model_info,
    trained_contrast,
    trained_voxel_size,
    write_model_info,
)
from cryoet_monai.handlers.model_loader import ModelLoader, load_weights
from cryoet_monai.handlers.model_saver import BestModelSaver, CompletedCheckpointSaver
from cryoet_monai.handlers.picks_overlay import TensorBoardPicksOverlay
from cryoet_monai.handlers.reconstruction import TensorBoardReconstruction
from cryoet_monai.handlers.score import PicksScorer

__all__ = [
    "BestModelSaver",
    "CompletedCheckpointSaver",
    "ModelInfoWriter",
    "ModelLoader",
    "PicksScorer",
    "TensorBoardPicksOverlay",
    "TensorBoardReconstruction",
    "check_model_info",
    "load_weights",
    "trained_contrast",
    "trained_voxel_size",
    "write_model_info",
]

"""Ignite handlers for training dashboards: pick overlays and MAE reconstructions in TensorBoard, the
validation score of picks."""

from cryoet_monai.handlers.picks_overlay import TensorBoardPicksOverlay
from cryoet_monai.handlers.reconstruction import TensorBoardReconstruction
from cryoet_monai.handlers.score import PicksScorer

__all__ = ["PicksScorer", "TensorBoardPicksOverlay", "TensorBoardReconstruction"]

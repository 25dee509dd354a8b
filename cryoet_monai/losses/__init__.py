"""Losses."""

from cryoet_monai.losses.heatmap import HeatmapFocalLoss, HeatmapMSELoss, MaskedHeatmapLoss, target_peaks

"""Losses."""

from cryoet_monai.losses.heatmap import HeatmapBCELoss, HeatmapFocalLoss, HeatmapMSELoss, MaskedHeatmapLoss, target_peaks

"""Heatmap logits → picks table: per-class peaks with radius-aware suppression and per-class thresholds."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import pandas as pd
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_numpy

from cryoet_monai.inference.peaks import find_peaks, peaks_to_picks, per_class, suppress_across_classes


class HeatmapToPicks(Transform):
    """Extract picks from per-class heatmap logits of one tomogram.

    Peaks are found on the logits (a sigmoid saturates to a plateau of 1.0 on a strong particle);
    thresholds are probabilities and scores are ``sigmoid(logit)`` at the peak.

    Args:
        class_names: class of each heatmap channel.
        radii_angstrom: particle radius of each class in Å.
        thresholds: minimum probability of a pick, one for all classes or one per class.
        nms_radius_scale: two picks of a class are at least ``nms_radius_scale × radius`` apart.
        max_peaks: keep at most this many picks per class (highest scores first); None for all.
        across_classes: also suppress, strongest first, picks of other classes within
            ``nms_radius_scale × radius`` of a kept pick (two particles cannot share a place; a heatmap
            channel often also fires on a particle of a similar class).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        radii_angstrom: Sequence[float],
        thresholds: float | Sequence[float] = 0.5,
        nms_radius_scale: float = 0.75,
        max_peaks: int | None = None,
        across_classes: bool = False,
    ):
        if len(class_names) != len(radii_angstrom):
            raise ValueError(f"{len(class_names)} class names but {len(radii_angstrom)} radii")
        thresholds = per_class(thresholds, len(class_names), "thresholds").tolist()
        if not all(0.0 < t < 1.0 for t in thresholds):
            raise ValueError(f"thresholds are probabilities strictly between 0 and 1, got {list(thresholds)}")
        self.class_names = list(class_names)
        self.radii = [float(r) for r in radii_angstrom]
        self.thresholds = [float(t) for t in thresholds]
        self.nms_radius_scale = nms_radius_scale
        self.max_peaks = max_peaks
        self.across_classes = across_classes

    def __call__(self, heatmap: torch.Tensor, experiment: str, voxel_size: float) -> pd.DataFrame:
        """
        Args:
            heatmap: logits ``(C, Z, Y, X)``.
            experiment: tomogram id written into the table.
            voxel_size: Å per voxel of this tomogram.
        """
        heatmap = torch.as_tensor(heatmap).float()
        if heatmap.shape[0] != len(self.class_names):
            raise ValueError(f"heatmap has {heatmap.shape[0]} channels for {len(self.class_names)} classes")
        min_distance = [self.nms_radius_scale * r / voxel_size for r in self.radii]
        logit_thresholds = torch.logit(torch.tensor(self.thresholds, dtype=torch.float64)).tolist()
        points, labels, logits = find_peaks(heatmap, min_distance, logit_thresholds, self.max_peaks)
        scores = torch.sigmoid(torch.as_tensor(logits).float())
        if self.across_classes:
            keep = suppress_across_classes(convert_to_numpy(points), convert_to_numpy(labels), convert_to_numpy(scores), min_distance)
            keep = torch.as_tensor(keep, device=points.device)
            points, labels, scores = points[keep], labels[keep], scores[keep]
        return peaks_to_picks(points, labels, scores, self.class_names, voxel_size, experiment)


class HeatmapToPicksd(MapTransform):
    """Dictionary version of :class:`HeatmapToPicks` for a bundle's post-processing.

    Args:
        keys: the heatmap logits key (exactly one).
        class_names: see :class:`HeatmapToPicks`.
        radii_angstrom: see :class:`HeatmapToPicks`.
        thresholds: see :class:`HeatmapToPicks`.
        nms_radius_scale: see :class:`HeatmapToPicks`.
        max_peaks: see :class:`HeatmapToPicks`.
        across_classes: see :class:`HeatmapToPicks`.
        id_key: key of the tomogram id.
        voxel_size_key: key of the voxel size in Å.
        picks_key: where the picks table is stored.
    """

    def __init__(
        self,
        keys: KeysCollection,
        class_names: Sequence[str],
        radii_angstrom: Sequence[float],
        thresholds: float | Sequence[float] = 0.5,
        nms_radius_scale: float = 0.75,
        max_peaks: int | None = None,
        across_classes: bool = False,
        id_key: str = "id",
        voxel_size_key: str = "voxel_size",
        picks_key: str = "pred_picks",
    ):
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"HeatmapToPicksd reads exactly one heatmap key, got {self.keys}")
        self.to_picks = HeatmapToPicks(class_names, radii_angstrom, thresholds, nms_radius_scale, max_peaks, across_classes)
        self.id_key = id_key
        self.voxel_size_key = voxel_size_key
        self.picks_key = picks_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        voxel_size = float(torch.as_tensor(d[self.voxel_size_key]).reshape(-1)[0])
        for key in self.key_iterator(d):
            d[self.picks_key] = self.to_picks(d[key], str(d[self.id_key]), voxel_size)
        return d

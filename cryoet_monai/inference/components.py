"""Segmentation logits → picks: argmax, 26-connected components per class (cc3d), centroids, size filter.

A component is kept when it holds at least ``min_size_fraction`` of the voxels of its class's
ball (``4/3·π·r³`` with ``r = radius_scale · radius / voxel_size``); its pick sits at the component's
centroid (voxel → Å) and scores the mean probability of its class over the component. Optional per-class
thresholds on that score (tuned on a validation split by the SaSi bundle's ``evaluate.yaml``) drop the
faint components.

The argmax and the probability of each voxel's own class are computed where the logits live (a GPU
after GPU stitching), so only those two volumes cross to the host for cc3d, not every class's map.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import cc3d
import numpy as np
import pandas as pd
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy import ndimage

from cryoet_monai.data.picks import empty_picks
from cryoet_monai.inference.thresholds import apply_thresholds


def ball_volume(radius_voxels: float) -> float:
    """Voxels in a ball of the given radius, ``4/3·π·r³``."""
    return 4.0 / 3.0 * math.pi * float(radius_voxels) ** 3


def label_map_to_picks(label_map, confidence, class_names, min_sizes, voxel_size: float, experiment: str) -> pd.DataFrame:
    """Picks at the centroids of the 26-connected components of each class of a label map.

    Args:
        label_map: ``(Z, Y, X)`` integers, 0 background and ``c + 1`` for class ``c``.
        confidence: ``(Z, Y, X)`` probability of each voxel's own label, for the scores.
        class_names: name of each class.
        min_sizes: smallest component kept, in voxels, one per class.
        voxel_size: Å per voxel.
        experiment: tomogram id written into the table.
    """
    labels = np.asarray(label_map, dtype=np.uint32)
    rows = []
    for c, name in enumerate(class_names):
        components, count = cc3d.connected_components(labels == c + 1, connectivity=26, return_N=True)
        if count == 0:
            continue
        stats = cc3d.statistics(components)
        ids = np.flatnonzero(stats["voxel_counts"][1:] >= min_sizes[c]) + 1
        if len(ids) == 0:
            continue
        scores = ndimage.mean(np.asarray(confidence), labels=components, index=ids)
        for component, score in zip(ids, scores):
            z, y, x = stats["centroids"][component] * voxel_size
            rows.append((experiment, name, x, y, z, float(score)))
    if not rows:
        return empty_picks(3)
    return pd.DataFrame(rows, columns=["experiment", "particle_type", "x", "y", "z", "score"])


class SegmentationToPicks(Transform):
    """Picks from the segmentation logits of one tomogram (argmax → components → centroids).

    Args:
        class_names: class of each foreground channel (channel ``c + 1`` is class ``c``).
        radii_angstrom: particle radius of each class in Å.
        min_size_fraction: smallest component kept, as a fraction of the class ball's volume.
        radius_scale: ball radius as a fraction of the particle radius (as in training's masks).
        thresholds: lowest component score kept, one per class (``configs/thresholds.json`` via
            :func:`~cryoet_monai.inference.thresholds.load_thresholds`); None keeps every component.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        radii_angstrom: Sequence[float],
        min_size_fraction: float = 0.1,
        radius_scale: float = 1.0,
        thresholds: Sequence[float] | None = None,
    ) -> None:
        if len(class_names) != len(radii_angstrom):
            raise ValueError(f"{len(class_names)} class names but {len(radii_angstrom)} radii")
        if thresholds is not None and len(thresholds) != len(class_names):
            raise ValueError(f"{len(class_names)} class names but {len(thresholds)} thresholds")
        if not 0 <= min_size_fraction or not radius_scale > 0:
            raise ValueError(f"min_size_fraction must be >= 0 and radius_scale > 0, got {min_size_fraction}, {radius_scale}")
        self.class_names = list(class_names)
        self.radii = [float(r) for r in radii_angstrom]
        self.min_size_fraction = float(min_size_fraction)
        self.radius_scale = float(radius_scale)
        self.thresholds = None if thresholds is None else [float(t) for t in thresholds]

    def min_sizes(self, voxel_size: float) -> list[float]:
        """Smallest component kept per class, in voxels."""
        return [self.min_size_fraction * ball_volume(self.radius_scale * r / voxel_size) for r in self.radii]

    def __call__(self, logits, experiment: str, voxel_size: float) -> pd.DataFrame:
        """
        Args:
            logits: ``(C + 1, Z, Y, X)`` segmentation logits, background first.
            experiment: tomogram id written into the table.
            voxel_size: Å per voxel of this tomogram.
        """
        logits = torch.as_tensor(logits).detach().float()
        if logits.shape[0] != len(self.class_names) + 1:
            raise ValueError(f"logits have {logits.shape[0]} channels for {len(self.class_names)} classes + background")
        label_map = logits.argmax(dim=0)
        top = logits.gather(0, label_map[None])[0]
        total = torch.zeros_like(top)
        for channel in logits:  # softmax of the own label, 1 / Σ exp(l_c − l_label), one volume at a time
            total += torch.exp(channel - top)
        confidence = (1.0 / total).cpu().numpy()
        label_map = label_map.to(torch.uint8 if len(self.class_names) < 255 else torch.int32).cpu().numpy()
        picks = label_map_to_picks(label_map, confidence, self.class_names, self.min_sizes(voxel_size), voxel_size, experiment)
        return picks if self.thresholds is None else apply_thresholds(picks, dict(zip(self.class_names, self.thresholds)))


class SegmentationToPicksd(MapTransform):
    """Dictionary twin of :class:`SegmentationToPicks` for a bundle's post-processing.

    Args:
        keys: the logits key (one key).
        class_names: see :class:`SegmentationToPicks`.
        radii_angstrom: see :class:`SegmentationToPicks`.
        min_size_fraction: see :class:`SegmentationToPicks`.
        radius_scale: see :class:`SegmentationToPicks`.
        thresholds: see :class:`SegmentationToPicks`.
        id_key: key of the tomogram id.
        voxel_size_key: key of the voxel size in Å.
        picks_key: where the picks table is stored.
    """

    def __init__(
        self,
        keys: KeysCollection,
        class_names: Sequence[str],
        radii_angstrom: Sequence[float],
        min_size_fraction: float = 0.1,
        radius_scale: float = 1.0,
        thresholds: Sequence[float] | None = None,
        id_key: Hashable = "id",
        voxel_size_key: Hashable = "voxel_size",
        picks_key: Hashable = "pred_picks",
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"SegmentationToPicksd reads exactly one logits key, got {self.keys}")
        self.to_picks = SegmentationToPicks(class_names, radii_angstrom, min_size_fraction, radius_scale, thresholds)
        self.id_key, self.voxel_size_key, self.picks_key = id_key, voxel_size_key, picks_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        voxel_size = float(torch.as_tensor(d[self.voxel_size_key]).reshape(-1)[0])
        for key in self.key_iterator(d):
            d[self.picks_key] = self.to_picks(d[key], str(d[self.id_key]), voxel_size)
        return d

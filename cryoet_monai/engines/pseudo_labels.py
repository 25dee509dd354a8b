"""Multi-view pseudo-labels for teacher–student training, and the unlabeled data they are made on.

The teacher sees a crop under several wedge-preserving views; the inverse-mapped logits are averaged
(fusion), peaks above per-class confidence thresholds become pseudo-particles, and Gaussian heatmaps
are rendered around them exactly like the heatmaps of annotated particles. Peaks on gold beads and other
dense outliers of the crop are dropped and the bead is taught as background
(:mod:`cryoet_monai.transforms.dense_outliers`): a teacher trained on few annotated boxes fires on beads in
every class. Voxels the teacher is
unsure about (fused probability between ``negative_threshold`` and a pseudo-particle) are left out
of the pseudo-label loss: there a missed particle would otherwise be taught as background.

Unlabeled data are the ``unlabeled`` items and the space outside the ``annotated`` boxes of the
``training`` items; ``unlabeled_mask`` marks that space so that annotated space, which the supervised
loss covers, is not also given pseudo-labels.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.inference.peaks import find_peaks, per_class
from cryoet_monai.transforms.dense_outliers import DropDenseOutlierPicks, points_in_mask
from cryoet_monai.transforms.heatmap import annotated_mask, class_sigmas, render_heatmap
from cryoet_monai.transforms.views import invert_view_volume, view_volume


def unlabeled_data_dicts(manifest: str | Path) -> list[dict]:
    """Items holding unlabeled space: all ``unlabeled`` items and the partially annotated ``training`` items.

    ``unlabeled`` items get ``annotated = []`` (nothing annotated); a fully annotated training item
    (``annotated`` None) holds no unlabeled space and is left out.
    """
    manifest = load_manifest(manifest, check_points=False)
    items = [{**d, "annotated": []} for d in manifest.data_dicts("unlabeled")]
    return items + [d for d in manifest.data_dicts("training") if d["annotated"] is not None]


class UnlabeledMaskd(MapTransform):
    """Adds a mask that is 1 outside the item's ``annotated`` boxes (the unlabeled space) and 0 inside.

    Args:
        keys: the image key whose spatial shape the mask takes.
        boxes_key: key of the ``annotated`` boxes in Å (None = whole item annotated, ``[]`` = nothing).
        voxel_size_key: key of the voxel size in Å.
        mask_key: where the mask is stored, ``(1, Z, Y, X)``.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        boxes_key: str = "annotated",
        voxel_size_key: str = "voxel_size",
        mask_key: str = "unlabeled_mask",
    ):
        super().__init__(keys)
        self.boxes_key = boxes_key
        self.voxel_size_key = voxel_size_key
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            shape = d[key].shape[-3:]
            annotated = annotated_mask(d[self.boxes_key], float(d[self.voxel_size_key]), shape)
            d[self.mask_key] = 1.0 - torch.as_tensor(annotated, dtype=torch.float32)
        return d


class MultiViewPseudoLabeler:
    """Teacher pseudo-heatmaps from predictions fused over views.

    Args:
        radii_angstrom: particle radius of each class in Å.
        voxel_size: Å per voxel of the crops.
        sigma_scale: Gaussian σ = ``sigma_scale × radius`` (as for the annotated heatmaps).
        thresholds: minimum fused probability of a pseudo-particle, one or one per class; 1 (or more) gives a
            class no pseudo-particles, e.g. one the teacher has not learned.
        views: view indices the teacher predicts on.
        nms_radius_scale: pseudo-particles of a class are at least ``nms_radius_scale × radius`` apart.
        negative_threshold: a voxel counts as background of a class only where the fused probability is
            below this (one, or one per class); elsewhere outside the pseudo-particles' Gaussians it is
            ignored. None: all voxels count.
        dense_outlier_threshold: the teacher's peaks on the crop's dense outliers (gold beads; a multiple of the
            99th-percentile deviation, see :func:`~cryoet_monai.transforms.dense_outliers.dense_outlier_mask`) are
            not pseudo-particles, and those voxels are trusted background; None turns this off.
        dense_outlier_margin: the outlier mask is grown by this distance in Å.
    """

    def __init__(
        self,
        radii_angstrom: Sequence[float],
        voxel_size: float,
        sigma_scale: float = 0.25,
        thresholds: float | Sequence[float] = 0.5,
        views: Sequence[int] = (0, 1, 2, 8),
        nms_radius_scale: float = 0.75,
        negative_threshold: float | Sequence[float] | None = None,
        dense_outlier_threshold: float | None = None,
        dense_outlier_margin: float = 60.0,
    ):
        num_classes = len(radii_angstrom)
        thresholds = per_class(thresholds, num_classes, "thresholds")
        self.num_classes = num_classes
        self.sigmas = class_sigmas(radii_angstrom, voxel_size, sigma_scale)
        self.active = [int(c) for c in np.flatnonzero(thresholds < 1.0)]
        self.logit_thresholds = torch.logit(torch.tensor(thresholds[self.active], dtype=torch.float64)).tolist()
        self.min_distance = [nms_radius_scale * radii_angstrom[c] / voxel_size for c in self.active]
        self.views = [int(k) for k in views]
        self.voxel_size = float(voxel_size)
        self.outliers = DropDenseOutlierPicks(dense_outlier_threshold, margin_angstrom=dense_outlier_margin)
        self.negative_threshold = None
        if negative_threshold is not None:
            negative = per_class(negative_threshold, num_classes, "negative_threshold")
            if not np.all((negative > 0) & (negative < 1)):
                raise ValueError(f"negative_threshold must be probabilities in (0, 1), got {negative.tolist()}")
            self.negative_threshold = torch.as_tensor(negative, dtype=torch.float32).reshape(num_classes, 1, 1, 1)

    @torch.no_grad()
    def fuse(self, network: Callable, images: torch.Tensor) -> torch.Tensor:
        """Mean of the inverse-mapped logits of ``network`` over the views, ``(B, C, Z, Y, X)``."""
        total = sum(invert_view_volume(network(view_volume(images, k)), k) for k in self.views)
        return total / len(self.views)

    @torch.no_grad()
    def __call__(self, network: Callable, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-heatmaps and their loss weights for a batch of crops ``(B, 1, Z, Y, X)``.

        Returns:
            heatmaps ``(B, C, Z, Y, X)`` in [0, 1], and a 0/1 mask of the same shape marking the voxels
            whose pseudo-label is trusted (all ones when ``negative_threshold`` is None).
        """
        fused = self.fuse(network, images).float()
        masks = [self.outliers.mask(image, self.voxel_size) for image in images]
        heatmaps = []
        for logits, mask in zip(fused, masks):
            points, labels = torch.zeros((0, 3)), torch.zeros((0,), dtype=torch.int64)
            if self.active:
                points, active_labels, _ = find_peaks(logits[self.active], self.min_distance, self.logit_thresholds)
                labels = torch.as_tensor(self.active, device=active_labels.device)[active_labels]
                if mask is not None:
                    keep = torch.as_tensor(~points_in_mask(points, mask), device=points.device)
                    points, labels = points[keep], labels[keep]
            heatmaps.append(render_heatmap(points, labels, self.sigmas, logits.shape[1:], self.num_classes))
        heatmaps = torch.stack(heatmaps).to(device=images.device, dtype=images.dtype)
        if self.negative_threshold is None:
            return heatmaps, torch.ones_like(heatmaps)
        trusted = (torch.sigmoid(fused) < self.negative_threshold.to(fused.device)) | (heatmaps > 0)
        for b, mask in enumerate(masks):
            if mask is not None:
                trusted[b] |= torch.as_tensor(mask, device=trusted.device)
        return heatmaps, trusted.to(heatmaps)

"""Gold fiducials and other dense outliers, kept out of the picks.

Gold beads (5–15 nm) scatter far more than protein. After a small low-pass, measure each voxel's distance
from the tomogram's median in units of the 99th percentile of that distance (a scale set by the ice and the
particles, which fill a few per cent of the volume; beads fill far less than one per cent): on the czii-bin2
replica (low-pass σ 1.5 voxels) protein reaches at most 3.9, gold beads 16–18 (10–15 within a 32 × 48 × 48
crop). Being relative, the measure does not depend on the noise level, so denoised tomograms, where
particles stand far above the noise, are not masked. A heatmap network trained on partially annotated
tomograms has rarely been shown a bead as background and fires on it in every class with full confidence.
:class:`SuppressDenseOutliers` lowers the heatmap to its minimum on those voxels (grown by a margin) before
peaks are extracted, so no pick and no pseudo-particle lands on a bead, and a teacher's pseudo-labels teach
the bead as background.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_numpy
from scipy import ndimage

SCALE_QUANTILE = 0.99
MAX_VOXELS_FOR_STATISTICS = 2_000_000


def _centre_and_scale(values: np.ndarray) -> tuple[float, float]:
    """Median and the 99th percentile of the absolute deviation from it (on at most 2 M evenly spaced voxels)."""
    flat = values.reshape(-1)
    flat = flat[:: max(1, -(-flat.size // MAX_VOXELS_FOR_STATISTICS))]
    median = float(np.median(flat))
    return median, float(np.quantile(np.abs(flat - median), SCALE_QUANTILE))


def dense_outlier_mask(image, threshold: float = 7.0, sigma: float = 1.5, margin: int = 0) -> np.ndarray:
    """Voxels whose low-passed value lies more than ``threshold`` times the 99th percentile of all voxels' distance from the median.

    Args:
        image: channel-first ``(1, *spatial)`` tomogram (or micrograph).
        threshold: distance from the median in units of the 99th percentile of the distance (see the module docstring).
        sigma: Gaussian low-pass σ in voxels before the statistics (averages the noise away, keeps a bead).
        margin: the mask is grown by this many voxels (a cube) to cover peaks at a bead's rim.

    Returns:
        boolean mask ``(1, *spatial)`` (numpy); all False for a constant image.
    """
    image = convert_to_numpy(image, dtype=np.float32)
    if image.ndim < 3 or image.shape[0] != 1:
        raise ValueError(f"dense_outlier_mask expects a one-channel (1, *spatial) image, got shape {image.shape}")
    smooth = ndimage.gaussian_filter(image[0], sigma) if sigma > 0 else image[0]
    median, spread = _centre_and_scale(smooth)
    if spread <= 0:
        return np.zeros(image.shape, dtype=bool)
    mask = np.abs(smooth - median) > threshold * spread
    if margin > 0 and mask.any():
        mask = ndimage.maximum_filter(mask, size=2 * margin + 1)
    return mask[None]


class SuppressDenseOutliers(Transform):
    """Lowers class maps to their minimum where the image holds gold beads or other dense outliers.

    Args:
        threshold: see :func:`dense_outlier_mask`; None turns the suppression off.
        sigma: low-pass σ in voxels, see :func:`dense_outlier_mask`.
        margin_angstrom: the outlier mask is grown by this distance in Å (about a bead's radius: a network
            peaks on the bead or at its rim).
    """

    def __init__(self, threshold: float | None = 7.0, sigma: float = 1.5, margin_angstrom: float = 60.0):
        if threshold is not None and threshold <= 0:
            raise ValueError(f"dense-outlier threshold must be a positive multiple of the 99th-percentile deviation or None, got {threshold!r}")
        if margin_angstrom < 0:
            raise ValueError(f"dense-outlier margin must be ≥ 0 Å, got {margin_angstrom!r}")
        self.threshold = threshold
        self.sigma = sigma
        self.margin_angstrom = margin_angstrom

    def __call__(self, maps: torch.Tensor, image: torch.Tensor, voxel_size: float) -> torch.Tensor:
        """
        Args:
            maps: class maps ``(C, *spatial)`` (logits or probabilities).
            image: the image they were predicted from, ``(1, *spatial)``.
            voxel_size: Å per voxel.
        """
        if self.threshold is None:
            return maps
        if tuple(image.shape[1:]) != tuple(maps.shape[1:]):
            raise ValueError(f"class maps {tuple(maps.shape)} and image {tuple(image.shape)} differ in spatial shape")
        margin = int(round(self.margin_angstrom / float(voxel_size)))
        mask = torch.as_tensor(dense_outlier_mask(image, self.threshold, self.sigma, margin), device=maps.device)
        if not mask.any():
            return maps
        floor = maps.detach().flatten(1).amin(dim=1).reshape(-1, *[1] * (maps.ndim - 1))
        return torch.where(mask, floor, maps)


class SuppressDenseOutliersd(MapTransform):
    """Dictionary twin of :class:`SuppressDenseOutliers` for a bundle's post-processing.

    Args:
        keys: the class-map keys (e.g. ``pred``).
        image_key: key of the image the maps were predicted from.
        voxel_size_key: key of the voxel size in Å.
        threshold: see :class:`SuppressDenseOutliers`.
        sigma: see :class:`SuppressDenseOutliers`.
        margin_angstrom: see :class:`SuppressDenseOutliers`.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        image_key: Hashable = "image",
        voxel_size_key: Hashable = "voxel_size",
        threshold: float | None = 7.0,
        sigma: float = 1.5,
        margin_angstrom: float = 60.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.suppress = SuppressDenseOutliers(threshold, sigma, margin_angstrom)
        self.image_key = image_key
        self.voxel_size_key = voxel_size_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        voxel_size = float(torch.as_tensor(d[self.voxel_size_key]).reshape(-1)[0])
        for key in self.key_iterator(d):
            d[key] = self.suppress(d[key], d[self.image_key], voxel_size)
        return d

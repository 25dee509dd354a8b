"""Gold fiducials and other dense outliers, kept out of the picks.

Gold beads (5–15 nm) scatter far more than protein. After a small low-pass, measure each voxel's distance
from the tomogram's median in units of the 99th percentile of that distance (a scale set by the ice and the
particles, which fill a few per cent of the volume; beads fill far less than one per cent): on the czii-bin2
replica (low-pass σ 1.5 voxels) protein reaches at most 3.9, gold beads 16–18 (10–15 within a 32 × 48 × 48
crop). Being relative, the measure does not depend on the noise level, so denoised tomograms, where
particles stand far above the noise, are not masked. A heatmap network trained on partially annotated
tomograms has rarely been shown a bead as background and fires on it in every class with full confidence.
:class:`DropDenseOutlierPicks` removes the picks that land on those voxels (grown by a margin) after peak
extraction; the pseudo-labeler does the same with its pseudo-particles and teaches the bead as background.
Removing peaks, not lowering the heatmap on the bead, matters: the response around a bead reaches beyond
any margin, and with its summit cut away the NMS no longer suppresses that shoulder, which then breaks up into
a ring of false peaks.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import pandas as pd
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


def points_in_mask(points_zyx, mask: np.ndarray) -> np.ndarray:
    """Whether each voxel point ``(z, y, x)`` (rounded, clipped to the volume) lies in ``mask`` ``(1, Z, Y, X)``."""
    points = np.rint(convert_to_numpy(points_zyx, dtype=np.float64, wrap_sequence=True).reshape(-1, 3)).astype(np.int64)
    points = np.clip(points, 0, np.asarray(mask.shape[1:]) - 1)
    return mask[0][tuple(points.T)] if len(points) else np.zeros(0, dtype=bool)


class DropDenseOutlierPicks(Transform):
    """Removes the picks that lie on gold beads or other dense outliers of their tomogram.

    Args:
        threshold: see :func:`dense_outlier_mask`; None keeps every pick.
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

    def mask(self, image, voxel_size: float) -> np.ndarray | None:
        """The grown outlier mask ``(1, *spatial)`` of ``image``, or None when turned off."""
        if self.threshold is None:
            return None
        return dense_outlier_mask(image, self.threshold, self.sigma, int(round(self.margin_angstrom / float(voxel_size))))

    def __call__(self, picks: pd.DataFrame, image, voxel_size: float) -> pd.DataFrame:
        """
        Args:
            picks: picks table of one tomogram (``x, y, z`` in Å).
            image: the tomogram, ``(1, Z, Y, X)``.
            voxel_size: Å per voxel.
        """
        if self.threshold is None or not len(picks):
            return picks
        mask = self.mask(image, voxel_size)
        on_outlier = points_in_mask(picks[["z", "y", "x"]].to_numpy() / float(voxel_size), mask)
        return picks[~on_outlier].reset_index(drop=True)


class DropDenseOutlierPicksd(MapTransform):
    """Dictionary twin of :class:`DropDenseOutlierPicks` for a bundle's post-processing (after the peaks).

    Args:
        keys: the picks-table keys (e.g. ``pred_picks``).
        image_key: key of the tomogram the picks were made in.
        voxel_size_key: key of the voxel size in Å.
        threshold: see :class:`DropDenseOutlierPicks`.
        sigma: see :class:`DropDenseOutlierPicks`.
        margin_angstrom: see :class:`DropDenseOutlierPicks`.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred_picks",
        image_key: Hashable = "image",
        voxel_size_key: Hashable = "voxel_size",
        threshold: float | None = 7.0,
        sigma: float = 1.5,
        margin_angstrom: float = 60.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.drop = DropDenseOutlierPicks(threshold, sigma, margin_angstrom)
        self.image_key = image_key
        self.voxel_size_key = voxel_size_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        voxel_size = float(torch.as_tensor(d[self.voxel_size_key]).reshape(-1)[0])
        for key in self.key_iterator(d):
            d[key] = self.drop(d[key], d[self.image_key], voxel_size)
        return d

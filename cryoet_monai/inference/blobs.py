"""The zero-label floor: scale-normalised Laplacian-of-Gaussian blobs at each class's size.

Each class gets the response ``-σ² ∇²G_σ * volume`` with ``σ = radius / (voxel_size · √ndim)`` (the
scale at which a uniform ball of that radius responds most). Peaks more than ``threshold_std`` robust
standard deviations above the median response are found per class; then, strongest first, a peak
suppresses the peaks of every other class within its own radius (scale selection: particles do not
overlap). No labels are used: every trained picker must beat this.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from cryoet_monai.inference.peaks import find_peaks, peaks_to_picks, suppress_across_classes


def blob_responses(volume: np.ndarray, radii_voxels, bright: bool = True) -> np.ndarray:
    """Robust-standardised, scale-normalised LoG responses, one channel per radius.

    Args:
        volume: ``[z, y, x]`` (or ``[y, x]``) image.
        radii_voxels: particle radius of each class, in voxels.
        bright: particles are brighter than the background (set False for dark-protein contrast).
    """
    image = np.asarray(volume, dtype=np.float32) * (1.0 if bright else -1.0)
    responses = []
    for radius in radii_voxels:
        sigma = max(float(radius) / np.sqrt(image.ndim), 0.5)
        response = -(sigma**2) * ndimage.gaussian_laplace(image, sigma)
        median = np.median(response)
        spread = 1.4826 * np.median(np.abs(response - median)) + 1e-12
        responses.append((response - median) / spread)
    return np.stack(responses)


class BlobPicker:
    """Zero-label blob picker for all classes of a manifest.

    Args:
        class_names: class names, in manifest order.
        radii_angstrom: class radii in Å (px for micrographs, with ``voxel_size=1``).
        threshold_std: a blob must respond this many robust standard deviations above the median.
        bright: particles are brighter than the background.
        min_distance_fraction: peaks of one class closer than this × radius are suppressed.
    """

    def __init__(self, class_names, radii_angstrom, threshold_std: float = 4.0, bright: bool = True, min_distance_fraction: float = 1.0):
        self.class_names = list(class_names)
        self.radii_angstrom = np.asarray(radii_angstrom, dtype=float)
        self.threshold_std = threshold_std
        self.bright = bright
        self.min_distance_fraction = min_distance_fraction

    def __call__(self, volume: np.ndarray, voxel_size: float, experiment: str) -> pd.DataFrame:
        """Pick one tomogram (or micrograph); returns a picks table in Å (px for 2D with voxel size 1)."""
        radii = self.radii_angstrom / voxel_size
        responses = blob_responses(volume, radii, self.bright)
        points, labels, scores = find_peaks(
            torch.from_numpy(responses), min_distance=radii * self.min_distance_fraction, thresholds=self.threshold_std
        )
        keep = suppress_across_classes(points.numpy(), labels.numpy(), scores.numpy(), radii)
        return peaks_to_picks(points[keep], labels[keep], scores[keep], self.class_names, voxel_size, experiment)


def pick_with_blobs(manifest_path, split: str, threshold_std: float = 4.0):
    """Run the zero-label blob picker over a manifest split (each image at the contrast its manifest declares);
    returns one picks table."""
    import pandas as pd
    from tqdm import tqdm

    from cryoet_monai.data.manifest import load_manifest
    from cryoet_monai.data.picks import empty_picks
    from cryoet_monai.data.readers import read_image
    from cryoet_monai.transforms.contrast import MatchContrast

    manifest = load_manifest(manifest_path)
    picker = BlobPicker(manifest.class_names, [c.radius for c in manifest.classes], threshold_std, bright=False)
    to_dark = MatchContrast("dark")
    tables = []
    for item in tqdm(manifest.items(split), desc=f"blob picking {split}", unit="tomogram"):
        volume, _ = read_image(item.image)
        tables.append(picker(to_dark(volume, item.contrast), item.voxel_size, item.id))
    return pd.concat(tables, ignore_index=True) if tables else empty_picks(manifest.ndim)

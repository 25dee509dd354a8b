"""Spherical pseudo-masks from picks: SaSi's segmentation target.

Each particle becomes a ball of its class radius (``radius / voxel_size`` voxels, optionally scaled)
in a single-channel label map: 0 is background, ``c + 1`` is class ``c``. Where two balls overlap,
a voxel goes to the particle whose centre is nearer relative to its radius. The loss mask from the
manifest's ``annotated`` boxes travels beside it, so a loss never reads unannotated space as background.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Transform

from cryoet_monai.transforms.heatmap import PicksToTargetd


def render_spheres(points_zyx, labels, radii_voxels, shape_zyx) -> torch.Tensor:
    """Render a ``(1, Z, Y, X)`` float32 label map of balls (0 background, ``c + 1`` for class ``c``).

    A voxel belongs to a ball when its centre lies within the radius of the point, ``|v - p| <= r``.

    Args:
        points_zyx: ``(N, 3)`` voxel coordinates ``(z, y, x)``, float allowed.
        labels: ``(N,)`` class index of each point.
        radii_voxels: ball radius of each class, in voxels.
        shape_zyx: spatial shape ``(Z, Y, X)``.
    """
    shape = tuple(int(s) for s in shape_zyx)
    points = np.asarray(torch.as_tensor(points_zyx).detach().cpu(), dtype=np.float64).reshape(-1, 3)
    labels = np.asarray(torch.as_tensor(labels).detach().cpu(), dtype=np.int64).reshape(-1)
    radii = np.asarray(radii_voxels, dtype=np.float64).reshape(-1)
    if len(points) != len(labels):
        raise ValueError(f"got {len(points)} points and {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(radii)):
        raise ValueError(f"labels must be class indices in 0..{len(radii) - 1}, got {sorted(set(labels.tolist()))}")
    label_map = np.zeros(shape, dtype=np.float32)
    nearest = np.full(shape, np.inf)  # distance / radius of the ball that owns each voxel
    for point, label in zip(points, labels):
        radius = radii[label]
        lo = [max(0, math.ceil(p - radius)) for p in point]
        hi = [min(n, math.floor(p + radius) + 1) for p, n in zip(point, shape)]
        if any(a >= b for a, b in zip(lo, hi)):
            continue
        grid = np.meshgrid(*[(np.arange(a, b) - p) ** 2 for a, b, p in zip(lo, hi, point)], indexing="ij", sparse=True)
        relative = np.sqrt(grid[0] + grid[1] + grid[2]) / radius
        window = tuple(slice(a, b) for a, b in zip(lo, hi))
        owns = (relative <= 1.0) & (relative < nearest[window])
        nearest[window][owns] = relative[owns]
        label_map[window][owns] = label + 1
    return torch.from_numpy(label_map)[None]


class PicksToSpheres(Transform):
    """Render class-radius balls from voxel picks.

    Args:
        radii_angstrom: particle radius of each class in Å (class order).
        radius_scale: ball radius as a fraction of the particle radius.
    """

    def __init__(self, radii_angstrom: Sequence[float], radius_scale: float = 1.0) -> None:
        self.radii = np.asarray(radii_angstrom, dtype=np.float64).reshape(-1)
        if self.radii.size == 0 or not np.all(self.radii > 0) or not radius_scale > 0:
            raise ValueError(f"radii and radius_scale must be positive, got {self.radii.tolist()} and {radius_scale!r}")
        self.radius_scale = float(radius_scale)

    def radii_voxels(self, voxel_size: float) -> np.ndarray:
        """Ball radius of each class in voxels."""
        return self.radius_scale * self.radii / float(voxel_size)

    def __call__(self, points_zyx, labels, shape_zyx, voxel_size: float) -> torch.Tensor:
        """
        Args:
            points_zyx: ``(N, 3)`` voxel coordinates ``(z, y, x)``.
            labels: ``(N,)`` class indices.
            shape_zyx: spatial shape of the volume.
            voxel_size: Å per voxel.
        """
        return render_spheres(points_zyx, labels, self.radii_voxels(voxel_size), shape_zyx)


class PicksToSpheresd(PicksToTargetd):
    """Dictionary twin of :class:`PicksToSpheres` that also writes the annotated-box loss mask.

    Writes ``d[label_key]`` ``(1, Z, Y, X)`` and ``d[mask_key]`` ``(1, Z, Y, X)`` with the image's
    metadata (see :class:`~cryoet_monai.transforms.heatmap.PicksToTargetd`).

    Args:
        keys: the image key (exactly one) whose spatial shape the maps take.
        radii_angstrom: particle radius of each class in Å (class order).
        radius_scale: ball radius as a fraction of the particle radius.
        points_key: key of the ``(N, 3)`` voxel ``(z, y, x)`` points.
        labels_key: key of the ``(N,)`` class indices.
        label_key: output key of the label map.
        mask_key: output key of the loss mask.
        allow_missing_keys: don't raise an exception if the image key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        radii_angstrom: Sequence[float] = (),
        radius_scale: float = 1.0,
        points_key: Hashable = "points",
        labels_key: Hashable = "labels",
        label_key: Hashable = "label",
        mask_key: Hashable = "loss_mask",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, PicksToSpheres(radii_angstrom, radius_scale), points_key, labels_key, label_key, mask_key, allow_missing_keys)

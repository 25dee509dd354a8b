"""Particle positions from class heatmaps: smoothed local maxima, hill climbing, distance suppression.

A network's probability map saturates: a float32 sigmoid or softmax is exactly 1.0 across a
large particle, so "voxels equal to their neighbourhood maximum" is a whole plateau and one
ribosome would become hundreds of picks. :func:`find_peaks` therefore, per class,

1. smooths the map with a Gaussian of σ = ``smoothing · min_distance`` (normalised at the
   borders, so border voxels are averages of what lies inside) — a plateau becomes a dome
   whose top is its centre;
2. takes the voxels that are maxima of their 3×3×3 neighbourhood in the smoothed map;
3. moves each one uphill in the *original* map (to its strictly larger 3×3×3 maximum, repeatedly),
   so sharp peaks land exactly on their voxel while a point on a plateau stays put, and keeps
   those whose original value reaches the class threshold. Every start climbs, even one below the
   threshold (it may end above it), so picking at a threshold gives exactly the peaks that picking
   at a lower one keeps with scores above it — which is how thresholds are tuned;
4. runs greedy non-maximum suppression: in decreasing original value (ties, as on a plateau,
   in decreasing smoothed value) a candidate is kept unless a kept peak of its class lies within
   ``min_distance`` voxels.

Steps 1–3 run where the heatmap lives: torch operations on a GPU (the CPU path smooths with
SciPy, which is much faster there); the suppression runs on the few candidates with a k-d tree.
Scores are the original map's values at the peaks (probabilities or logits, whatever was given).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.networks.layers import gaussian_1d, separable_filtering
from monai.utils import convert_to_numpy, convert_to_tensor
from scipy import ndimage
from scipy.spatial import cKDTree

from cryoet_monai.data.picks import make_picks


def per_class(value, num_classes: int, name: str) -> np.ndarray:
    """``value`` (one number, or one per class) as a float64 array of ``num_classes`` finite values."""
    values = convert_to_numpy(value, dtype=np.float64, wrap_sequence=True).reshape(-1)
    if values.size == 1:
        values = np.repeat(values, num_classes)
    if values.size != num_classes:
        raise ValueError(f"{name} needs one value or one per class ({num_classes}), got {values.size}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be finite numbers, got {values.tolist()}")
    return values


def smooth_map(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of a ``(Z, Y, X)`` map, normalised by the kernel mass inside the volume.

    The same MONAI kernel runs as ``separable_filtering`` on accelerators and as SciPy's
    ``correlate1d`` on the CPU (an order of magnitude faster there than a grouped conv3d).

    Args:
        volume: the map.
        sigma: σ in voxels; 0 returns the map unchanged.
    """
    if sigma <= 0:
        return volume
    kernel = gaussian_1d(torch.tensor(float(sigma)), truncated=4.0, approx="erf").to(volume)
    if volume.device.type == "cpu":
        smooth = volume.detach().numpy()
        for axis in range(3):
            smooth = ndimage.correlate1d(smooth, kernel.numpy(), axis=axis, mode="constant")
        smooth = torch.from_numpy(smooth)
    else:
        smooth = separable_filtering(volume[None, None], kernel)[0, 0]
    ones = [torch.ones(1, 1, n).to(volume) for n in volume.shape]
    inside = [F.conv1d(o, kernel[None, None], padding=len(kernel) // 2)[0, 0] for o in ones]  # kernel mass per axis
    return smooth / (inside[0][:, None, None] * inside[1][None, :, None] * inside[2][None, None, :])


def neighbourhood_max(volume: torch.Tensor) -> torch.Tensor:
    """Maximum over the 3×3×3 neighbourhood of every voxel of the last three dimensions (edge voxels: the
    neighbours inside). Equal to ``max_pool3d(kernel_size=3, stride=1, padding=1)``, computed one axis at a time:
    an order of magnitude faster than PyTorch's CPU pooling.

    Args:
        volume: a tensor of at least three dimensions, e.g. ``(Z, Y, X)`` or ``(B, C, Z, Y, X)``.
    """
    for dim in (-3, -2, -1):
        size = volume.shape[dim]
        result = volume.clone()
        above, below = result.narrow(dim, 1, size - 1), result.narrow(dim, 0, size - 1)
        torch.maximum(above, volume.narrow(dim, 0, size - 1), out=above)
        torch.maximum(below, volume.narrow(dim, 1, size - 1), out=below)
        volume = result
    return volume


def _around(volume: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3×3×3 neighbourhoods of ``(M, 3)`` voxels, clamped: coordinates ``(M, 27, 3)``, values ``(M, 27)``."""
    offsets = torch.cartesian_prod(*[torch.arange(-1, 2, device=coords.device)] * 3)
    upper = torch.as_tensor(volume.shape, device=coords.device) - 1
    around = torch.minimum((coords[:, None, :] + offsets).clamp(min=0), upper)
    return around, volume[around[..., 0], around[..., 1], around[..., 2]]


def climb(volume: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Move ``(M, 3)`` voxel coordinates uphill to the largest of their 3×3×3 neighbours while it is strictly larger.

    Points on a plateau stay where they are; each step strictly increases the value, so it ends.

    Args:
        volume: a ``(Z, Y, X)`` map.
        coords: integer voxel coordinates ``(z, y, x)``.
    """
    while len(coords):
        around, values = _around(volume, coords)
        best, where = values.max(dim=1)
        uphill = best > volume[coords[:, 0], coords[:, 1], coords[:, 2]]
        if not bool(uphill.any()):
            break
        step = around[torch.arange(len(coords), device=coords.device), where]
        coords = torch.where(uphill[:, None], step, coords)
    return coords


def suppress(points_zyx: np.ndarray, order: np.ndarray, min_distance: float) -> np.ndarray:
    """Greedy non-maximum suppression: the kept indices, in visiting order.

    Args:
        points_zyx: ``(N, 3)`` coordinates.
        order: indices of the points, strongest first.
        min_distance: a point within this distance of an already kept point is dropped (0 drops duplicates).
    """
    if len(order) < 2:
        return np.asarray(order, dtype=np.int64)
    neighbours = cKDTree(points_zyx).query_ball_point(points_zyx, r=max(float(min_distance), 0.0))
    alive = np.ones(len(points_zyx), dtype=bool)
    kept = []
    for i in order:
        if alive[i]:
            kept.append(i)
            alive[neighbours[i]] = False
    return np.asarray(kept, dtype=np.int64)


def suppress_across_classes(points_zyx: np.ndarray, labels: np.ndarray, scores: np.ndarray, radii) -> np.ndarray:
    """Indices of the peaks kept when two particles cannot share a place: strongest first, each kept
    peak removes the weaker peaks of *other* classes within its own class radius (voxels, ``radii[label]``)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    tree = cKDTree(points_zyx) if len(points_zyx) else None
    removed = np.zeros(len(points_zyx), bool)
    kept = []
    for i in order:
        if removed[i]:
            continue
        kept.append(i)
        near = np.asarray(tree.query_ball_point(points_zyx[i], r=float(radii[labels[i]])), dtype=int)
        removed[near[labels[near] != labels[i]]] = True
    return np.sort(np.asarray(kept, dtype=int))


@torch.no_grad()
def find_peaks(
    heatmap: torch.Tensor, min_distance, thresholds, max_peaks: int | None = None, smoothing: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Find particle centres in a ``(C, Z, Y, X)`` heatmap (see the module docstring for the method).

    Args:
        heatmap: class maps, logits or probabilities, on any device.
        min_distance: per-class suppression radius in voxels (scalar or one per class); half to one
            particle radius works well (true particles lie ≥ 2 radii apart, a hit counts within 0.5 radius).
        thresholds: per-class minimum value of the original map at a peak (scalar or one per class).
        max_peaks: keep at most this many peaks per class (the strongest); None for all.
        smoothing: σ of the tie-breaking Gaussian as a fraction of ``min_distance``. Its support (4σ)
            must reach across a saturated plateau for the plateau to give one peak: with the default 0.5
            that holds for plateaus up to 2 × ``min_distance`` in radius. 0 disables it (then only
            distance suppression breaks plateaus, leaving peaks ``min_distance`` apart across them).

    Returns:
        ``(points_zyx, labels, scores)`` on the heatmap's device: float32 ``(N, 3)`` voxel coordinates,
        int64 class indices and float32 map values, sorted by decreasing score.
    """
    heatmap = convert_to_tensor(heatmap, track_meta=False)
    if heatmap.ndim != 4:
        raise ValueError(f"heatmap must be (C, Z, Y, X), got shape {tuple(heatmap.shape)}")
    if smoothing < 0 or (max_peaks is not None and max_peaks < 0):
        raise ValueError(f"smoothing and max_peaks must be >= 0, got {smoothing!r} and {max_peaks!r}")
    num_classes = heatmap.shape[0]
    distances = per_class(min_distance, num_classes, "min_distance")
    cutoffs = per_class(thresholds, num_classes, "thresholds")
    if np.any(distances < 0):
        raise ValueError(f"min_distance must be >= 0 voxels, got {distances.tolist()}")
    heatmap = heatmap.float()
    points, labels, scores = [], [], []
    for c in range(num_classes):
        raw = heatmap[c]
        smooth = smooth_map(raw, smoothing * distances[c])
        start = torch.nonzero(smooth >= neighbourhood_max(smooth))
        coords = climb(raw, start)
        value = raw[coords[:, 0], coords[:, 1], coords[:, 2]]
        passed = value >= cutoffs[c]
        if not bool(passed.any()):
            continue
        start, coords, value = start[passed], coords[passed], value[passed]
        tie_break = smooth[start[:, 0], start[:, 1], start[:, 2]]
        order = np.lexsort((-tie_break.double().cpu().numpy(), -value.double().cpu().numpy()))
        keep = torch.as_tensor(suppress(coords.cpu().numpy(), order, distances[c])[:max_peaks], device=coords.device)
        points.append(coords[keep])
        labels.append(torch.full((len(keep),), c, dtype=torch.int64, device=heatmap.device))
        scores.append(value[keep])
    if not points:
        empty = torch.zeros((0,), device=heatmap.device)
        return empty.reshape(0, 3), empty.long(), empty
    points_t, labels_t, scores_t = torch.cat(points).float(), torch.cat(labels), torch.cat(scores)
    order = torch.argsort(scores_t, descending=True, stable=True)
    return points_t[order], labels_t[order], scores_t[order]


def peaks_to_picks(
    points_zyx, labels, scores, class_names: Sequence[str], voxel_size: float, experiment: str
) -> pd.DataFrame:
    """Turn voxel peaks into the contract picks table (``x, y, z`` in Å = voxel index × voxel size).

    Args:
        points_zyx: ``(N, 3)`` voxel coordinates ``(z, y, x)``.
        labels: ``(N,)`` class indices into ``class_names``.
        scores: ``(N,)`` confidences.
        class_names: class names in channel order.
        voxel_size: Å per voxel.
        experiment: the tomogram id for the ``experiment`` column.
    """
    points = convert_to_numpy(points_zyx, dtype=np.float64, wrap_sequence=True).reshape(-1, 3)
    labels = convert_to_numpy(labels, dtype=np.int64, wrap_sequence=True).reshape(-1)
    scores = convert_to_numpy(scores, dtype=np.float64, wrap_sequence=True).reshape(-1)
    if not len(points) == len(labels) == len(scores):
        raise ValueError(f"got {len(points)} points, {len(labels)} labels and {len(scores)} scores")
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be a positive number of Å, got {voxel_size!r}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"labels must index the {len(class_names)} class names, got {sorted(set(labels.tolist()))}")
    names = np.asarray(list(class_names), dtype=object)[labels] if len(labels) else np.asarray([], dtype=object)
    return make_picks(experiment, names, points[:, ::-1] * float(voxel_size), scores, ndim=3)

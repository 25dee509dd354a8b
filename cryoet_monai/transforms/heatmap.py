"""Gaussian keypoint heatmaps from picks, and the mask of where the annotation is complete.

A heatmap has one channel per class; each particle adds an unnormalised Gaussian
``score · exp(-d² / 2σ²)`` centred on it, overlapping particles combine by maximum (not sum)
so every centre keeps its peak value. σ is tied to the class radius (:func:`class_sigmas`).
The loss mask is 1 inside the manifest's ``annotated`` boxes and 0 outside, where nothing is
known and a loss must not treat the volume as background. A class map (which particle class, if any,
each voxel belongs to) lets crops be drawn class by class.

Render heatmaps and masks before any spatial transform, then crop, flip or view
``["image", "heatmap", "loss_mask"]`` together: the outputs are MetaTensors aligned with the image.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_numpy

from cryoet_monai.transforms.meta import like_image
from cryoet_monai.transforms.picks import data_voxel_size


def class_sigmas(radii_angstrom, voxel_size: float, sigma_scale: float = 0.25) -> np.ndarray:
    """Gaussian σ per class in voxels: ``sigma_scale · radius / voxel_size``.

    The default 0.25 puts the score's hit tolerance (0.5 × radius) at 2σ, where the target has
    fallen to exp(-2) ≈ 0.14: the target mass sits inside the region the score counts as a hit,
    and neighbouring particles (≥ 2 radii apart, i.e. ≥ 8σ) stay well separated.

    Args:
        radii_angstrom: particle radius of each class in Å.
        voxel_size: Å per voxel.
        sigma_scale: σ as a fraction of the radius.
    """
    radii = np.asarray(radii_angstrom, dtype=np.float64).reshape(-1)
    if not voxel_size > 0 or not sigma_scale > 0:
        raise ValueError(f"voxel_size and sigma_scale must be positive, got {voxel_size!r} and {sigma_scale!r}")
    if radii.size == 0 or not np.all(radii > 0):
        raise ValueError(f"class radii must be positive numbers of Å, got {radii.tolist()}")
    return sigma_scale * radii / float(voxel_size)


def _check_shape(shape_zyx) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape_zyx)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape_zyx must be three positive sizes (z, y, x), got {tuple(shape_zyx)}")
    return shape


def render_heatmap(points_zyx, labels, sigmas, shape_zyx, num_classes: int, scores=None) -> torch.Tensor:
    """Render a ``(C, Z, Y, X)`` float32 heatmap of unnormalised Gaussians, combined by maximum.

    Each point writes only a local window of ±3σ (the Gaussian is separable, so the window is an
    outer product of three 1D profiles). Points outside the volume contribute their tails.

    Args:
        points_zyx: ``(N, 3)`` voxel coordinates ``(z, y, x)``, float allowed.
        labels: ``(N,)`` class index of each point in ``0..num_classes-1``.
        sigmas: σ in voxels, one per class (see :func:`class_sigmas`).
        shape_zyx: spatial shape ``(Z, Y, X)``.
        num_classes: number of channels ``C``.
        scores: ``(N,)`` peak height of each point; default 1.
    """
    shape = _check_shape(shape_zyx)
    points = convert_to_numpy(points_zyx, dtype=np.float64, wrap_sequence=True).reshape(-1, 3)
    labels = convert_to_numpy(labels, dtype=np.int64, wrap_sequence=True).reshape(-1)
    sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    heights = np.ones(len(points)) if scores is None else convert_to_numpy(scores, np.float64, wrap_sequence=True)
    heights = heights.reshape(-1)
    if not len(labels) == len(points) == len(heights):
        raise ValueError(f"got {len(points)} points, {len(labels)} labels and {len(heights)} scores")
    if len(sigmas) != num_classes or not np.all(sigmas > 0):
        raise ValueError(f"need {num_classes} positive sigmas (one per class), got {sigmas.tolist()}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be class indices in 0..{num_classes - 1}, got {sorted(set(labels.tolist()))}")
    heatmap = torch.zeros((num_classes, *shape), dtype=torch.float32)
    for point, label, height in zip(points, labels, heights):
        reach = 3.0 * sigmas[label]
        lo = [max(0, math.floor(p - reach)) for p in point]
        hi = [min(n, math.ceil(p + reach) + 1) for p, n in zip(point, shape)]
        if any(a >= b for a, b in zip(lo, hi)):
            continue
        profiles = [np.exp(-((np.arange(a, b) - p) ** 2) / (2 * sigmas[label] ** 2)) for a, b, p in zip(lo, hi, point)]
        blob = height * profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]
        window = heatmap[label, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        torch.maximum(window, torch.from_numpy(blob.astype(np.float32)), out=window)
    return heatmap


def annotated_mask(boxes_angstrom, voxel_size: float, shape_zyx) -> torch.Tensor:
    """A ``(1, Z, Y, X)`` float32 mask: 1 on voxels whose centre lies in an annotated box, 0 elsewhere.

    Voxel ``i`` sits at ``i · voxel_size`` Å; boxes are closed, as in
    :func:`cryoet_monai.data.manifest.inside_boxes`.

    Args:
        boxes_angstrom: boxes ``[x0, y0, z0, x1, y1, z1]`` in Å, or None for the whole volume.
        voxel_size: Å per voxel.
        shape_zyx: spatial shape ``(Z, Y, X)``.
    """
    shape = _check_shape(shape_zyx)
    if boxes_angstrom is None:
        return torch.ones((1, *shape), dtype=torch.float32)
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be a positive number of Å, got {voxel_size!r}")
    mask = torch.zeros((1, *shape), dtype=torch.float32)
    positions = [np.arange(n) * float(voxel_size) for n in shape]  # z, y, x in Å
    for box in boxes_angstrom:
        box = np.asarray(box, dtype=np.float64).reshape(-1)
        if box.size != 6:
            raise ValueError(f"an annotated box is [x0, y0, z0, x1, y1, z1] in Å, got {box.tolist()}")
        lo, hi = box[2::-1], box[:2:-1]  # z, y, x
        inside = [np.flatnonzero((pos >= a) & (pos <= b)) for pos, a, b in zip(positions, lo, hi)]
        if all(len(i) for i in inside):
            mask[(0, *(slice(i[0], i[-1] + 1) for i in inside))] = 1
    return mask


class PicksToHeatmap(Transform):
    """Render class heatmaps from voxel picks, with σ tied to each class radius.

    Args:
        radii_angstrom: particle radius of each class in Å (channel order).
        sigma_scale: σ as a fraction of the radius (see :func:`class_sigmas`).
    """

    def __init__(self, radii_angstrom: Sequence[float], sigma_scale: float = 0.25) -> None:
        self.radii = np.asarray(radii_angstrom, dtype=np.float64).reshape(-1)
        class_sigmas(self.radii, 1.0, sigma_scale)  # validate early
        self.sigma_scale = sigma_scale

    def __call__(self, points_zyx, labels, shape_zyx, voxel_size: float, scores=None) -> torch.Tensor:
        """
        Args:
            points_zyx: ``(N, 3)`` voxel coordinates ``(z, y, x)``.
            labels: ``(N,)`` class indices.
            shape_zyx: spatial shape of the volume.
            voxel_size: Å per voxel.
            scores: optional ``(N,)`` peak heights (default 1).
        """
        sigmas = class_sigmas(self.radii, voxel_size, self.sigma_scale)
        return render_heatmap(points_zyx, labels, sigmas, shape_zyx, len(self.radii), scores)


class PicksToTargetd(MapTransform):
    """Render a training target from picks, aligned with the image, plus the annotated-box loss mask.

    The shared mechanism of :class:`PicksToHeatmapd` and the SaSi sphere masks: reads the points and
    labels (voxels, as written by :class:`~cryoet_monai.transforms.picks.LoadPicksd`), the image's
    spatial shape, the voxel size (``d["voxel_size"]`` or the image meta) and the ``annotated`` boxes;
    writes ``d[target_key]`` and ``d[mask_key]`` ``(1, Z, Y, X)`` carrying the image's metadata, so later
    spatial transforms on all three stay aligned.

    Args:
        keys: the image key (exactly one) whose spatial shape the maps take.
        renderer: ``renderer(points_zyx, labels, shape_zyx, voxel_size)`` → the target tensor.
        points_key: key of the ``(N, 3)`` voxel ``(z, y, x)`` points.
        labels_key: key of the ``(N,)`` class indices.
        target_key: output key of the target.
        mask_key: output key of the loss mask.
        allow_missing_keys: don't raise an exception if the image key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        renderer,
        points_key: Hashable = "points",
        labels_key: Hashable = "labels",
        target_key: Hashable = "heatmap",
        mask_key: Hashable = "loss_mask",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"{type(self).__name__} takes exactly one image key, got {self.keys}")
        self.renderer = renderer
        self.points_key, self.labels_key = points_key, labels_key
        self.target_key, self.mask_key = target_key, mask_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            for needed in (self.points_key, self.labels_key):
                if needed not in d:
                    raise KeyError(f"{type(self).__name__} needs '{needed}' in the data (run LoadPicksd first)")
            shape = tuple(int(s) for s in image.shape[-3:])
            voxel_size = data_voxel_size(d, image_key=key)
            target = self.renderer(d[self.points_key], d[self.labels_key], shape, voxel_size)
            mask = annotated_mask(d.get("annotated"), voxel_size, shape)
            d[self.target_key] = like_image(target, image)
            d[self.mask_key] = like_image(mask, image)
        return d


class PicksToHeatmapd(PicksToTargetd):
    """Dictionary twin of :class:`PicksToHeatmap` that also writes the loss mask (see :class:`PicksToTargetd`).

    Args:
        keys: the image key (exactly one) whose spatial shape the maps take.
        radii_angstrom: particle radius of each class in Å (channel order).
        sigma_scale: σ as a fraction of the radius.
        points_key: key of the ``(N, 3)`` voxel ``(z, y, x)`` points.
        labels_key: key of the ``(N,)`` class indices.
        heatmap_key: output key of the ``(C, Z, Y, X)`` heatmap.
        mask_key: output key of the loss mask.
        allow_missing_keys: don't raise an exception if the image key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        radii_angstrom: Sequence[float] = (),
        sigma_scale: float = 0.25,
        points_key: Hashable = "points",
        labels_key: Hashable = "labels",
        heatmap_key: Hashable = "heatmap",
        mask_key: Hashable = "loss_mask",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, PicksToHeatmap(radii_angstrom, sigma_scale), points_key, labels_key, heatmap_key, mask_key, allow_missing_keys)


def heatmap_class_map(heatmap, min_value: float = math.exp(-2.0)) -> torch.Tensor:
    """A ``(1, Z, Y, X)`` uint8 map: ``1 + c`` where class ``c``'s channel is the highest and at least ``min_value``, else 0.

    With the default exp(-2), a particle's voxels are those within 2σ of its centre; the voxel nearest a
    centre (at most √3/2 voxel away) is among them whenever σ ≥ 0.44 voxel.

    Args:
        heatmap: ``(C, Z, Y, X)`` heatmap, C < 255.
        min_value: lowest heatmap value that still belongs to a particle.
    """
    if heatmap.ndim != 4 or not 0 < heatmap.shape[0] < 255:
        raise ValueError(f"a heatmap is (C, Z, Y, X) with 1 to 254 classes, got shape {tuple(heatmap.shape)}")
    values, classes = torch.as_tensor(heatmap).max(dim=0, keepdim=True)
    return torch.where(values >= min_value, classes + 1, 0).to(torch.uint8)


class HeatmapToClassMap(Transform):
    """Label each voxel with the particle class whose heatmap is highest there (0: no particle).

    Class-balanced cropping (MONAI's ``ClassesToIndicesd`` + ``RandCropByLabelClassesd``) reads this map, so a
    class with few labeled particles is the centre of as many crops as the most frequent one.

    Args:
        min_value: lowest heatmap value that still belongs to a particle (exp(-2): within 2σ of a centre).
    """

    def __init__(self, min_value: float = math.exp(-2.0)) -> None:
        if not 0 < min_value <= 1:
            raise ValueError(f"min_value must lie in (0, 1], got {min_value!r}")
        self.min_value = min_value

    def __call__(self, heatmap) -> torch.Tensor:
        """
        Args:
            heatmap: ``(C, Z, Y, X)`` heatmap; the map keeps its metadata when it is a MetaTensor.
        """
        return like_image(heatmap_class_map(heatmap, self.min_value), heatmap)


class HeatmapToClassMapd(MapTransform):
    """Dictionary twin of :class:`HeatmapToClassMap`.

    Args:
        keys: the heatmap key (exactly one).
        class_map_key: output key of the ``(1, Z, Y, X)`` class map.
        min_value: lowest heatmap value that still belongs to a particle.
        allow_missing_keys: don't raise an exception if the heatmap key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = "heatmap",
        class_map_key: Hashable = "class_map",
        min_value: float = math.exp(-2.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"{type(self).__name__} takes exactly one heatmap key, got {self.keys}")
        self.class_map_key = class_map_key
        self.converter = HeatmapToClassMap(min_value)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.class_map_key] = self.converter(d[key])
        return d

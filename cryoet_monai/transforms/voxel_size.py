"""Resampling a tomogram to the voxel size a network works at, with picks staying in Å.

The picks contract puts voxel ``i`` at ``i · voxel_size`` Å. Resampling keeps that origin: voxel ``j`` of the
output samples position ``j · new_size`` Å of the input (linear interpolation, one axis at a time), and the
output spans the input's extent. So Å positions, annotated boxes and picks need no mapping; everything
sized in voxels downstream (heatmap σ, crops, peak suppression) is sized with the new voxel size. Before
down-sampling the tomogram is low-passed with a Gaussian of σ = (1/s − 1)/2 input voxels, s the output
voxels per input voxel (the anti-aliasing rule of :class:`~cryoet_monai.transforms.rescale.Rescale`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.networks.layers import GaussianFilter
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_tensor

from cryoet_monai.transforms.picks import data_voxel_size


def resampled_length(length: int, factor: float) -> int:
    """Voxels along an axis of ``length`` voxels after resampling by ``factor`` (output voxels per input voxel),
    keeping voxel 0 and covering the input up to its last voxel centre."""
    return int(np.floor((length - 1) * factor + 1e-6)) + 1


def _resample_axis(image: torch.Tensor, axis: int, factor: float) -> torch.Tensor:
    length = image.shape[axis]
    if length == 1:
        return image
    positions = torch.arange(resampled_length(length, factor), dtype=torch.float64, device=image.device) / factor
    lower = positions.floor().long().clamp(0, length - 2)
    weight = (positions - lower).clamp(0.0, 1.0).to(image.dtype)
    shape = [1] * image.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    return image.index_select(axis, lower) * (1 - weight) + image.index_select(axis, lower + 1) * weight


class ResampleToVoxelSize(Transform):
    """Resample a channel-first tomogram ``(C, Z, Y, X)`` from its voxel size to ``voxel_size`` Å.

    Args:
        voxel_size: Å per voxel of the output.
        tolerance: relative difference of voxel sizes still taken as equal (the tomogram is returned unchanged).
    """

    def __init__(self, voxel_size: float, tolerance: float = 0.01) -> None:
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be a positive number of Å, got {voxel_size!r}")
        self.voxel_size = float(voxel_size)
        self.tolerance = float(tolerance)

    def factor(self, voxel_size: float) -> float:
        """Output voxels per input voxel for a tomogram at ``voxel_size`` Å (1 within the tolerance)."""
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be a positive number of Å, got {voxel_size!r}")
        factor = float(voxel_size) / self.voxel_size
        return 1.0 if abs(factor - 1.0) <= self.tolerance else factor

    def __call__(self, img: torch.Tensor, voxel_size: float) -> torch.Tensor:
        """
        Args:
            img: channel-first tomogram.
            voxel_size: its Å per voxel.
        """
        factor = self.factor(voxel_size)
        if factor == 1.0:
            return img
        image = convert_to_tensor(img, dtype=torch.float32, track_meta=False)
        if image.ndim != 4:
            raise ValueError(f"expected a channel-first tomogram (C, Z, Y, X), got shape {tuple(image.shape)}")
        if factor < 1:
            image = GaussianFilter(3, sigma=(1.0 / factor - 1.0) / 2.0, truncated=4.0)(image[None])[0]
        for axis in (1, 2, 3):
            image = _resample_axis(image, axis, factor)
        if isinstance(img, MetaTensor):
            image = MetaTensor(image, meta=dict(img.meta))
            image.meta["voxel_size"] = self.voxel_size
        return image


class ResampleToVoxelSized(MapTransform):
    """Dictionary version of :class:`ResampleToVoxelSize`: the voxel size comes from the data and is replaced.

    ``d[voxel_size_key]`` becomes ``voxel_size``; a resampled item also records ``d["original_voxel_size"]`` and
    ``d[f"{key}_original_shape"]``, which picks files in tomogram pixels (RELION) are read and written with.

    Args:
        keys: tomogram keys (all at the item's voxel size).
        voxel_size: Å per voxel to resample to; None leaves every item at its own voxel size.
        voxel_size_key: key of the item's voxel size in Å (the loaded image's ``meta["voxel_size"]`` when absent).
        tolerance: relative difference of voxel sizes still taken as equal.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        voxel_size: float | None,
        voxel_size_key: Hashable = "voxel_size",
        tolerance: float = 0.01,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.resample = None if voxel_size is None else ResampleToVoxelSize(voxel_size, tolerance)
        self.voxel_size_key = voxel_size_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if self.resample is None or not keys:
            return d
        original = data_voxel_size(d, image_key=keys[0], source=str(d.get("id", "data")))
        if self.resample.factor(original) == 1.0:
            return d
        for key in keys:
            d[f"{key}_original_shape"] = tuple(int(s) for s in d[key].shape[1:])
            d[key] = self.resample(d[key], original)
        d["original_voxel_size"] = original
        d[self.voxel_size_key] = self.resample.voxel_size
        return d

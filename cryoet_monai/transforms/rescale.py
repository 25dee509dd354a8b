"""Down-sampling that makes a particle the right size for a ViT patch, with exact coordinate mapping.

Pixel-centre convention: pixel ``i`` covers ``[i − 0.5, i + 0.5)``, so its centre sits at coordinate
``i`` and the image spans ``[−0.5, n − 0.5)`` (RELION, CryoPPP and the picks contract use pixel
indices this way). An image of ``n`` pixels resampled to ``m`` pixels keeps its extent, so with
``s = m / n`` a position maps as

    x_rescaled = (x + 0.5) · s − 0.5          x = (x_rescaled + 0.5) / s − 0.5

which is exactly the sampling of ``torch.nn.functional.interpolate(..., align_corners=False)`` used
to resample. Before sub-sampling the image is low-passed with a Gaussian of σ = (1/s − 1)/2 pixels
(the anti-aliasing rule of scikit-image's ``rescale``), so noise does not alias into the result.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.networks.layers import GaussianFilter
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_tensor


def rescale_factor(radius_px: float, target_radius_px: float, allow_upsampling: bool = False) -> float:
    """The scale ``s`` (output pixels per input pixel) that brings a particle radius to ``target_radius_px``.

    Args:
        radius_px: particle radius in pixels of the original image.
        target_radius_px: wanted radius after rescaling (e.g. 12 px: a 24-px particle, 1.5 patches of 16 px).
        allow_upsampling: return factors above 1 for small particles; otherwise small particles are left as they are.
    """
    if not radius_px > 0 or not target_radius_px > 0:
        raise ValueError(f"radii must be positive pixels, got radius_px={radius_px!r}, target_radius_px={target_radius_px!r}")
    factor = float(target_radius_px) / float(radius_px)
    return factor if allow_upsampling else min(factor, 1.0)


def rescaled_shape(shape: Sequence[int], factor: float) -> tuple[int, ...]:
    """Spatial shape after rescaling by ``factor`` (rounded, at least one pixel per axis)."""
    if not factor > 0:
        raise ValueError(f"factor must be positive, got {factor!r}")
    return tuple(max(int(round(n * factor)), 1) for n in shape)


def _scales(in_shape_xy: Sequence[int], out_shape_xy: Sequence[int]) -> np.ndarray:
    in_shape, out_shape = np.asarray(in_shape_xy, dtype=float), np.asarray(out_shape_xy, dtype=float)
    if in_shape.shape != out_shape.shape or np.any(in_shape <= 0) or np.any(out_shape <= 0):
        raise ValueError(f"shapes must be positive and of equal length, got {tuple(in_shape_xy)} and {tuple(out_shape_xy)}")
    return out_shape / in_shape


def to_rescaled(coords_xy, in_shape: Sequence[int], out_shape: Sequence[int]) -> np.ndarray:
    """Map ``(N, d)`` positions (``x, y[, z]`` order, pixels) of an image of ``in_shape`` to one of ``out_shape``.

    Args:
        coords_xy: positions in the original image, ``x, y[, z]`` order.
        in_shape: spatial shape of the original image, array order (``[z,] y, x``).
        out_shape: spatial shape of the rescaled image, array order.
    """
    scale = _scales(in_shape[::-1], out_shape[::-1])
    return (np.asarray(coords_xy, dtype=float).reshape(-1, len(scale)) + 0.5) * scale - 0.5


def to_original(coords_xy, in_shape: Sequence[int], out_shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`to_rescaled`: positions in the rescaled image back to the original image's pixels.

    Args:
        coords_xy: positions in the rescaled image, ``x, y[, z]`` order.
        in_shape: spatial shape of the original image, array order.
        out_shape: spatial shape of the rescaled image, array order.
    """
    scale = _scales(in_shape[::-1], out_shape[::-1])
    return (np.asarray(coords_xy, dtype=float).reshape(-1, len(scale)) + 0.5) / scale - 0.5


class Rescale(Transform):
    """Anti-aliased resampling of a channel-first image ``(C, [Z,] Y, X)`` by ``factor``.

    Args:
        factor: output pixels per input pixel (0.25 down-samples 4×); 1 returns the image unchanged.
    """

    def __init__(self, factor: float) -> None:
        if not factor > 0:
            raise ValueError(f"factor must be positive, got {factor!r}")
        self.factor = float(factor)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        image = convert_to_tensor(img, dtype=torch.float32, track_meta=False)
        spatial = tuple(image.shape[1:])
        if len(spatial) not in (2, 3):
            raise ValueError(f"Rescale expects a channel-first 2D or 3D image, got shape {tuple(image.shape)}")
        out_shape = rescaled_shape(spatial, self.factor)
        if out_shape == spatial:
            return image
        batch = image[None]
        if self.factor < 1:
            sigma = (1.0 / self.factor - 1.0) / 2.0
            batch = GaussianFilter(len(spatial), sigma=sigma, truncated=4.0)(batch)
        mode = "bilinear" if len(spatial) == 2 else "trilinear"
        return F.interpolate(batch, size=out_shape, mode=mode, align_corners=False)[0]


class Rescaled(MapTransform):
    """Dictionary version of :class:`Rescale`; records the spatial shapes needed to map positions back.

    Writes ``d[f"{key}_original_shape"]`` and ``d[f"{key}_rescaled_shape"]`` (array order) so that
    :func:`to_original` can turn positions found in the rescaled image into original pixels.

    Args:
        keys: image keys.
        factor: output pixels per input pixel.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(self, keys: KeysCollection, factor: float, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.rescale = Rescale(factor)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}_original_shape"] = tuple(int(s) for s in d[key].shape[1:])
            d[key] = self.rescale(d[key])
            d[f"{key}_rescaled_shape"] = tuple(int(s) for s in d[key].shape[1:])
        return d

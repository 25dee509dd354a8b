"""Views of a tomogram that keep the missing wedge where it is.

The missing wedge of a single-axis tilt series is a fixed region of Fourier space around the
Z axis (the beam). The symmetries that leave it in place are the 8 symmetries of the XY plane
(rotations by 90° about Z, with or without a flip of X) and the flip of Z, 16 views in all.
Rotations about X or Y would move the wedge and are not free symmetries of the data.

View ``k`` (0 ≤ k < :data:`NUM_VIEWS`) is, in this order: flip X when ``k & 1``, rotate by
90° in the YX plane ``(k >> 1) & 3`` times (``torch.rot90`` over the dims ``(y, x)``), flip Z
when ``k >> 3``. View 0 is the identity. This module is the one implementation of views for
pseudo-labels, consistency losses and test-time augmentation; volumes and point sets use the
same definition, so a point's value in a volume equals the viewed volume's value at the viewed point.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform, Transform
from monai.utils import TraceKeys

NUM_VIEWS = 16


def _check_view(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= int(k) < NUM_VIEWS:
        raise ValueError(f"view index must be an integer in 0..{NUM_VIEWS - 1}, got {k!r}")
    return int(k)


def view_indices(views, count: int = NUM_VIEWS) -> list[int]:
    """Check a test-time views setting and return it as a list of view indices.

    Args:
        views: a non-empty list of view indices, e.g. ``[0]`` (no augmentation) or ``list(range(8))``.
        count: the views the data has: 16 for a tomogram, 8 (the XY plane's) for a micrograph.
    """
    if isinstance(views, (str, bytes)) or np.ndim(views) != 1 or not len(views):
        raise ValueError(f"views must be a non-empty list of view indices such as [0] or [0, 1, ..., {count - 1}], got {views!r}")
    indices = [_check_view(k) for k in views]
    if max(indices) >= count:
        raise ValueError(f"this data has {count} views (indices 0..{count - 1}), got {list(views)}")
    return indices


def _parts(k: int) -> tuple[bool, int, bool]:
    """(flip x, number of 90° YX rotations, flip z) of view ``k``."""
    k = _check_view(k)
    return bool(k & 1), (k >> 1) & 3, bool(k >> 3)


def _check_volume(x) -> None:
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise TypeError(f"a view acts on a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim < 3:
        raise ValueError(f"a view acts on the last 3 dims (z, y, x), got an array of shape {tuple(x.shape)}")


def _flip(x, dim: int):
    return torch.flip(x, dims=(dim,)) if isinstance(x, torch.Tensor) else np.flip(x, axis=dim)


def _rot90(x, times: int):
    if isinstance(x, torch.Tensor):
        return torch.rot90(x, times, dims=(-2, -1))
    return np.rot90(x, times, axes=(-2, -1))


def _contiguous(x):
    return np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x


def view_volume(x, k: int):
    """Apply view ``k`` to the last three dims ``(z, y, x)`` of ``x``.

    Args:
        x: ``torch.Tensor`` or ``np.ndarray`` with at least 3 dims, e.g. ``(Z, Y, X)``,
            ``(C, Z, Y, X)`` or a batch ``(B, C, Z, Y, X)``.
        k: view index in ``0..NUM_VIEWS-1``.

    Returns:
        the viewed array, of the same type (Y and X sizes swap for an odd number of rotations).
    """
    _check_volume(x)
    flip_x, rotations, flip_z = _parts(k)
    if flip_x:
        x = _flip(x, -1)
    if rotations:
        x = _rot90(x, rotations)
    if flip_z:
        x = _flip(x, -3)
    return _contiguous(x)


def invert_view_volume(x, k: int):
    """Undo :func:`view_volume` with the same ``k``: ``invert_view_volume(view_volume(x, k), k)`` equals ``x``.

    Args:
        x: a viewed array (at least 3 dims, the last three ``(z, y, x)``).
        k: the view index that produced it.
    """
    _check_volume(x)
    flip_x, rotations, flip_z = _parts(k)
    if flip_z:
        x = _flip(x, -3)
    if rotations:
        x = _rot90(x, -rotations)
    if flip_x:
        x = _flip(x, -1)
    return _contiguous(x)


def _as_points(points_zyx):
    is_tensor = isinstance(points_zyx, torch.Tensor)
    if is_tensor:
        pts = points_zyx.clone() if points_zyx.is_floating_point() else points_zyx.float()
    else:
        pts = np.array(points_zyx, dtype=np.result_type(np.asarray(points_zyx).dtype, np.float32))
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must be an (N, 3) array of z, y, x voxel coordinates, got shape {tuple(pts.shape)}")
    return pts


def _check_shape(shape_zyx) -> list[int]:
    shape = [int(s) for s in shape_zyx]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape_zyx must be three positive sizes (z, y, x), got {tuple(shape_zyx)}")
    return shape


def _rot90_points(pts, shape: list[int]):
    """One ``rot90`` over (y, x): ``out[y', x'] = in[x', X-1-y']``, so ``(y, x) -> (X-1-x, y)``."""
    y = pts[:, 1].clone() if isinstance(pts, torch.Tensor) else pts[:, 1].copy()
    pts[:, 1] = (shape[2] - 1) - pts[:, 2]
    pts[:, 2] = y
    shape[1], shape[2] = shape[2], shape[1]


def view_points(points_zyx, k: int, shape_zyx):
    """Map voxel coordinates of a volume to the coordinates of the same voxels in its view ``k``.

    Args:
        points_zyx: ``(N, 3)`` voxel coordinates ``(z, y, x)`` (float allowed), numpy or torch.
        k: view index.
        shape_zyx: spatial shape ``(Z, Y, X)`` of the original (un-viewed) volume.

    Returns:
        the viewed coordinates, same type as the input (float).
    """
    pts, shape = _as_points(points_zyx), _check_shape(shape_zyx)
    flip_x, rotations, flip_z = _parts(k)
    if flip_x:
        pts[:, 2] = (shape[2] - 1) - pts[:, 2]
    for _ in range(rotations):
        _rot90_points(pts, shape)
    if flip_z:
        pts[:, 0] = (shape[0] - 1) - pts[:, 0]
    return pts


def invert_view_points(points_zyx, k: int, shape_zyx):
    """Map coordinates in view ``k`` back to the original volume (the inverse of :func:`view_points`).

    Args:
        points_zyx: ``(N, 3)`` voxel coordinates ``(z, y, x)`` in the viewed volume.
        k: view index.
        shape_zyx: spatial shape ``(Z, Y, X)`` of the original (un-viewed) volume.
    """
    pts, shape = _as_points(points_zyx), _check_shape(shape_zyx)
    flip_x, rotations, flip_z = _parts(k)
    if rotations % 2:
        shape[1], shape[2] = shape[2], shape[1]  # the shape of the viewed volume
    if flip_z:
        pts[:, 0] = (shape[0] - 1) - pts[:, 0]
    for _ in range((4 - rotations) % 4):
        _rot90_points(pts, shape)
    if flip_x:
        pts[:, 2] = (shape[2] - 1) - pts[:, 2]
    return pts


def view_index_matrix(k: int, shape_zyx, inverse: bool = False) -> np.ndarray:
    """The 4×4 homogeneous matrix of :func:`view_points` (or its inverse) on ``(z, y, x)`` voxel indices.

    Args:
        k: view index.
        shape_zyx: spatial shape of the original volume.
        inverse: the matrix of :func:`invert_view_points` instead.
    """
    basis = np.vstack([np.zeros(3), np.eye(3)])
    mapped = (invert_view_points if inverse else view_points)(basis, k, shape_zyx)
    matrix = np.eye(4)
    matrix[:3, 3] = mapped[0]
    matrix[:3, :3] = (mapped[1:] - mapped[0]).T
    return matrix


class WedgeView(Transform):
    """Array transform: view ``k`` of a channel-first volume (acts on the last three dims).

    Args:
        k: view index in ``0..NUM_VIEWS-1`` (see the module docstring).
    """

    def __init__(self, k: int) -> None:
        self.k = _check_view(k)

    def __call__(self, img):
        return view_volume(img, self.k)

    def inverse(self, img):
        """Undo the view on an array produced by this transform."""
        return invert_view_volume(img, self.k)


class _WedgeViewBase(MapTransform, InvertibleTransform):
    """Shared forward/inverse of the dictionary views; records the view of each key for ``inverse``."""

    def __init__(self, keys: KeysCollection, points_key: Hashable | None, allow_missing_keys: bool) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.points_key = points_key

    def _apply(self, data: Mapping, k: int) -> dict:
        d = dict(data)
        shape = None
        for key in self.key_iterator(d):
            shape = [int(s) for s in d[key].shape[-3:]]
            _check_volume(d[key])
            affine = view_index_matrix(k, shape, inverse=True)
            d[key] = view_volume(d[key], k)
            d = self.push_transform(d, key, affine=affine, extra_info={"k": k, "shape": shape}, orig_size=shape)
        if self.points_key is not None and self.points_key in d:
            if shape is None:
                raise KeyError(f"{type(self).__name__}: '{self.points_key}' needs a volume among keys {self.keys}")
            d[self.points_key] = view_points(d[self.points_key], k, shape)
        return d

    def inverse(self, data: Mapping) -> dict:
        d = dict(data)
        record = None
        for key in self.key_iterator(d):
            xform = self.pop_transform(d, key)
            info = xform[TraceKeys.EXTRA_INFO]
            record = record or info
            affine = view_index_matrix(info["k"], info["shape"])
            d[key] = invert_view_volume(d[key], info["k"])
            with self.trace_transform(False):
                d = self.push_transform(d, key, affine=affine)
        if self.points_key is not None and self.points_key in d and record is not None:
            d[self.points_key] = invert_view_points(d[self.points_key], record["k"], record["shape"])
        return d


class WedgeViewd(_WedgeViewBase):
    """Dictionary twin of :class:`WedgeView`: the same view for all ``keys`` (and the points), invertible.

    MetaTensor affines are updated so world coordinates stay right; ``inverse`` restores the data.

    Args:
        keys: keys of channel-first volumes ``(C, Z, Y, X)``.
        k: view index in ``0..NUM_VIEWS-1``.
        allow_missing_keys: don't raise an exception if a key is missing.
        points_key: key of ``(N, 3)`` voxel ``(z, y, x)`` coordinates moved with the volumes when present;
            None to leave points alone.
    """

    def __init__(
        self, keys: KeysCollection, k: int, allow_missing_keys: bool = False, points_key: Hashable | None = "points"
    ) -> None:
        super().__init__(keys, points_key, allow_missing_keys)
        self.k = _check_view(k)

    def __call__(self, data: Mapping) -> dict:
        return self._apply(data, self.k)


class RandWedgeViewd(RandomizableTransform, _WedgeViewBase):
    """Random wedge-preserving view: one ``k`` drawn from ``views`` for all keys and the points.

    Invertible through MONAI's ``applied_operations`` (``transform.inverse(d)``); when the
    transform is skipped (probability ``1 - prob``) the identity view is recorded.

    Args:
        keys: keys of channel-first volumes ``(C, Z, Y, X)``.
        prob: probability of applying a random view.
        views: view indices to draw from; default all :data:`NUM_VIEWS`.
        allow_missing_keys: don't raise an exception if a key is missing.
        points_key: key of ``(N, 3)`` voxel ``(z, y, x)`` coordinates moved with the volumes when present.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        views: Sequence[int] | None = None,
        allow_missing_keys: bool = False,
        points_key: Hashable | None = "points",
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        _WedgeViewBase.__init__(self, keys, points_key, allow_missing_keys)
        self.views = list(range(NUM_VIEWS)) if views is None else [_check_view(v) for v in views]
        if not self.views:
            raise ValueError("views must name at least one view index")
        self.k = 0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.k = self.views[self.R.randint(len(self.views))] if self._do_transform else 0

    def __call__(self, data: Mapping) -> dict:
        self.randomize()
        return self._apply(data, self.k)

"""DropBlock shaped for tomograms: blocks elongated along Z like the missing-wedge point spread.

A tilt series over ±α leaves a missing wedge in Fourier space; in real space a point smears
along Z by the factor ``e = sqrt((α + sinα cosα) / (α − sinα cosα))`` (≈ 1.55 at ±60°,
:func:`wedge_elongation`). SemiETPicker (Wang et al., 2026) shapes its DropBlock accordingly:
blocks of ``b`` voxels in Y and X and ``round(e·b)`` in Z.

Two forms:

- :class:`WedgeDropBlock` / :class:`WedgeDropBlockd`: input augmentation; the blocks are
  replaced by Gaussian noise with the block's own mean and standard deviation (per channel),
  so the hole looks like tomogram, not like a flat patch the network can learn to spot.
- :class:`WedgeDropBlock3d`: the feature-map regulariser of Ghiasi et al. (NeurIPS 2018) with the
  elongated blocks, for use inside a network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_dst_type, convert_to_tensor

FILLS = ("local_noise", "zero")


def wedge_elongation(tilt_max_deg: float = 60.0) -> float:
    """Z elongation of the point spread for a tilt range ±``tilt_max_deg``.

    ``e = sqrt((α + sinα cosα) / (α − sinα cosα))`` with α in radians (Radermacher 1988); 1.55 at 60°.

    Args:
        tilt_max_deg: maximum tilt angle in degrees, in (0, 90].
    """
    if not 0 < tilt_max_deg <= 90:
        raise ValueError(f"tilt_max_deg must be in (0, 90] degrees, got {tilt_max_deg!r}")
    alpha = math.radians(tilt_max_deg)
    sc = math.sin(alpha) * math.cos(alpha)
    return math.sqrt((alpha + sc) / (alpha - sc))


def wedge_block_shape(block_size: int, tilt_max_deg: float = 60.0) -> tuple[int, int, int]:
    """Block extent ``(Z, Y, X)`` in voxels: ``(round(e·b), b, b)``, at least 1 along Z.

    Args:
        block_size: extent ``b`` in Y and X.
        tilt_max_deg: maximum tilt angle in degrees.
    """
    if int(block_size) < 1:
        raise ValueError(f"block_size must be a positive number of voxels, got {block_size!r}")
    b = int(block_size)
    return max(1, round(wedge_elongation(tilt_max_deg) * b)), b, b


class WedgeDropBlock(RandomizableTransform):
    """Replace a few Z-elongated blocks of a ``(C, Z, Y, X)`` volume with local-statistics noise.

    Args:
        prob: probability of dropping blocks in a call.
        block_size: block extent in Y and X (voxels); Z gets ``round(e·block_size)``.
        num_blocks: number of blocks per call (they may overlap).
        tilt_max_deg: tilt range ±α of the data, which sets the elongation ``e``.
        fill: ``"local_noise"`` (Gaussian noise with the block's own mean and std per channel)
            or ``"zero"``.
    """

    def __init__(
        self,
        prob: float = 0.5,
        block_size: int = 8,
        num_blocks: int = 4,
        tilt_max_deg: float = 60.0,
        fill: str = "local_noise",
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
        if int(num_blocks) < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks!r}")
        self.block_shape = wedge_block_shape(block_size, tilt_max_deg)
        self.num_blocks = int(num_blocks)
        self.fill = fill
        self.blocks: list[tuple[slice, slice, slice]] = []

    def randomize(self, spatial_shape) -> None:
        """Draw whether to drop and where the blocks go in a volume of ``spatial_shape`` ``(Z, Y, X)``."""
        super().randomize(None)
        self.blocks = []
        if not self._do_transform:
            return
        for _ in range(self.num_blocks):
            block = []
            for size, extent in zip(spatial_shape, self.block_shape):
                extent = min(extent, int(size))
                start = int(self.R.randint(0, int(size) - extent + 1))
                block.append(slice(start, start + extent))
            self.blocks.append(tuple(block))

    def __call__(self, img, randomize: bool = True):
        """
        Args:
            img: channel-first volume ``(C, Z, Y, X)``, numpy or torch.
            randomize: draw new blocks; False reuses the last draw (to apply the same blocks to several arrays).
        """
        if img.ndim != 4:
            raise ValueError(f"WedgeDropBlock expects a (C, Z, Y, X) volume, got shape {tuple(img.shape)}")
        if randomize:
            self.randomize(img.shape[1:])
        if not self._do_transform:
            return img
        source = convert_to_tensor(img, track_meta=False)
        out = source.clone() if source.is_floating_point() else source.float()
        for block in self.blocks:
            region = source[(slice(None), *block)]
            if self.fill == "zero":
                out[(slice(None), *block)] = 0
                continue
            flat = region.reshape(region.shape[0], -1).double()
            mean, std = flat.mean(1), flat.std(1, unbiased=False)
            noise = torch.from_numpy(self.R.standard_normal(region.shape)).to(flat)
            filled = mean[:, None, None, None] + std[:, None, None, None] * noise
            out[(slice(None), *block)] = filled.to(out.dtype)
        return convert_to_dst_type(out, img, dtype=out.dtype)[0]


class WedgeDropBlockd(RandomizableTransform, MapTransform):
    """Dictionary twin of :class:`WedgeDropBlock`: the same blocks for every key, fresh noise per key.

    Args:
        keys: keys of channel-first volumes (usually just ``"image"``; never labels).
        prob: probability of dropping blocks in a call.
        block_size: block extent in Y and X (voxels); Z gets ``round(e·block_size)``.
        num_blocks: number of blocks per call.
        tilt_max_deg: tilt range ±α of the data.
        fill: ``"local_noise"`` or ``"zero"``.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        block_size: int = 8,
        num_blocks: int = 4,
        tilt_max_deg: float = 60.0,
        fill: str = "local_noise",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.dropper = WedgeDropBlock(1.0, block_size, num_blocks, tilt_max_deg, fill)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> WedgeDropBlockd:
        super().set_random_state(seed, state)
        self.dropper.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        first = self.first_key(d)
        if first == ():
            return d
        self.dropper.randomize(d[first].shape[1:])
        for key in self.key_iterator(d):
            d[key] = self.dropper(d[key], randomize=False)
        return d


class WedgeDropBlock3d(torch.nn.Module):
    """DropBlock on ``(N, C, Z, Y, X)`` feature maps with Z-elongated blocks; identity in eval mode.

    Block seeds are drawn independently per sample and channel on a grid padded by the block size,
    so every voxel (borders included) is covered by the same number of candidate blocks; with
    seed rate ``γ = 1 − (1 − drop_prob)^(1/V)`` (``V`` the block volume) each voxel is then dropped
    with probability exactly ``drop_prob`` (Ghiasi et al. use the first-order approximation of
    this γ). Kept activations are rescaled by ``count / kept`` as in the paper.

    Args:
        drop_prob: expected fraction of dropped activations, in [0, 1).
        block_size: block extent in Y and X; Z gets ``round(e·block_size)``.
        tilt_max_deg: tilt range ±α of the data.
    """

    def __init__(self, drop_prob: float = 0.1, block_size: int = 3, tilt_max_deg: float = 60.0) -> None:
        super().__init__()
        if not 0 <= drop_prob < 1:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob!r}")
        self.drop_prob = float(drop_prob)
        self.block_shape = wedge_block_shape(block_size, tilt_max_deg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0:
            return x
        if x.ndim != 5:
            raise ValueError(f"WedgeDropBlock3d expects (N, C, Z, Y, X) features, got shape {tuple(x.shape)}")
        volume = math.prod(self.block_shape)
        gamma = 1.0 - (1.0 - self.drop_prob) ** (1.0 / volume)
        padded = [n + k - 1 for n, k in zip(x.shape[2:], self.block_shape)]
        seeds = (torch.rand((*x.shape[:2], *padded), device=x.device) < gamma).to(x.dtype)
        keep = 1.0 - F.max_pool3d(seeds, kernel_size=self.block_shape, stride=1)
        return x * keep * (keep.numel() / keep.sum().clamp(min=1.0))

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_shape={self.block_shape}"

"""The SemiETPicker heatmap network: a small MONAI ``DynUNet`` with one logit channel per class.

The output head is a 1×1×1 convolution whose bias starts at ``logit(prior_prob)`` (as in CenterNet /
RetinaNet): nearly every voxel is background, and starting at p ≈ 0.5 everywhere would let the
background swamp the first iterations of the focal loss. Optionally a tomogram-shaped DropBlock
(:class:`~cryoet_monai.transforms.dropblock.WedgeDropBlock3d`) follows every decoder stage, dropping
Z-elongated blocks of features the way the missing wedge smears density.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.nets import DynUNet

from cryoet_monai.transforms.dropblock import WedgeDropBlock3d


class _ThenDrop(nn.Module):
    """A decoder block followed by a feature DropBlock."""

    def __init__(self, block: nn.Module, drop: nn.Module):
        super().__init__()
        self.block = block
        self.drop = drop

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.drop(self.block(*args))


class HeatmapNet(DynUNet):
    """3D ``DynUNet`` (residual blocks) predicting per-class heatmap logits ``(B, C, Z, Y, X)``.

    Args:
        num_classes: number of particle classes (output channels).
        in_channels: input channels (1 for a tomogram).
        filters: feature channels per level; the input crop must be divisible by ``2 ** (len(filters) - 1)``.
        norm_name: normalisation of the blocks.
        prior_prob: initial foreground probability of every voxel (sets the output bias).
        dropblock_prob: fraction of decoder feature voxels dropped in blocks; 0 disables DropBlock.
        dropblock_size: edge of a dropped block in XY (feature-map voxels).
        tilt_max_deg: tilt range ±α that sets the Z elongation of dropped blocks.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        filters: Sequence[int] = (16, 32, 64, 128),
        norm_name: str | tuple = "instance",
        prior_prob: float = 0.01,
        dropblock_prob: float = 0.0,
        dropblock_size: int = 3,
        tilt_max_deg: float = 60.0,
    ):
        levels = len(filters)
        super().__init__(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=num_classes,
            kernel_size=[3] * levels,
            strides=[1] + [2] * (levels - 1),
            upsample_kernel_size=[2] * (levels - 1),
            filters=list(filters),
            norm_name=norm_name,
            res_block=True,
        )
        nn.init.constant_(self.output_block.conv.conv.bias, -math.log((1 - prior_prob) / prior_prob))
        if dropblock_prob > 0:
            self.upsamples = nn.ModuleList(
                _ThenDrop(up, WedgeDropBlock3d(dropblock_prob, dropblock_size, tilt_max_deg)) for up in self.upsamples
            )

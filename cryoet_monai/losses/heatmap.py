"""Masked heatmap losses for keypoint detection in tomograms.

Every loss here takes logits ``(B, C, Z, Y, X)``, Gaussian target heatmaps of the same shape and a loss
mask ``(B, 1, Z, Y, X)`` that is 1 where the annotation is complete and 0 elsewhere: space outside the
annotated boxes is unknown and contributes nothing. Each is normalised by the number of target
peaks inside the mask, so a crop with one particle and a crop with ten weigh each particle alike.

For MONAI trainers, which call ``loss(pred, label)``, the mask can ride as the last channel of the
label (``ConcatItemsd(keys=["heatmap", "loss_mask"], name="label")``) with ``mask_channel=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from cryoet_monai.inference.peaks import neighbourhood_max


def target_peaks(target: torch.Tensor, min_value: float = 0.5) -> torch.Tensor:
    """Boolean map of the voxels that are local maxima (3×3×3) of a heatmap and at least ``min_value``.

    A particle centre between voxels gives a peak below 1, so peaks are found, not thresholded at 1.
    """
    return (target >= neighbourhood_max(target)) & (target >= min_value)


class MaskedHeatmapLoss(_Loss):
    """Base class: splits the mask from the label when asked and normalises by the peak count.

    Args:
        mask_channel: when no mask is given, the label's last channel is the mask.
        peak_min_value: a target local maximum counts as a particle centre from this value on.
    """

    def __init__(self, mask_channel: bool = False, peak_min_value: float = 0.5):
        super().__init__()
        self.mask_channel = mask_channel
        self.peak_min_value = peak_min_value

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            pred: logits ``(B, C, Z, Y, X)``.
            target: heatmaps in [0, 1] ``(B, C, Z, Y, X)`` (``C + 1`` channels with ``mask_channel``).
            mask: ``(B, 1, Z, Y, X)`` (or ``(B, C, Z, Y, X)`` per class), 1 where the annotation is complete;
                None means everywhere.
        """
        target = torch.as_tensor(target, dtype=pred.dtype, device=pred.device)
        if mask is None and self.mask_channel:
            target, mask = target[:, :-1], target[:, -1:]
        if target.shape != pred.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        mask = torch.ones_like(pred[:, :1]) if mask is None else torch.as_tensor(mask, dtype=pred.dtype, device=pred.device)
        peaks = target_peaks(target, self.peak_min_value)
        num_peaks = (peaks * mask).sum().clamp(min=1.0)
        return (self.voxel_loss(pred, target, peaks) * mask).sum() / num_peaks

    def voxel_loss(self, pred: torch.Tensor, target: torch.Tensor, peaks: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class HeatmapFocalLoss(MaskedHeatmapLoss):
    """CenterNet penalty-reduced focal loss on ``sigmoid(pred)``.

    Peak voxels are positives; every other voxel is a negative whose penalty shrinks by
    ``(1 - target) ** beta`` near a centre. The focal term ``p ** alpha`` silences the millions of easy
    background voxels, which a plain BCE or MSE would let dominate.

    Args:
        alpha: focusing exponent.
        beta: penalty reduction exponent near centres.
        mask_channel: see :class:`MaskedHeatmapLoss`.
        peak_min_value: see :class:`MaskedHeatmapLoss`.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 4.0, mask_channel: bool = False, peak_min_value: float = 0.5):
        super().__init__(mask_channel, peak_min_value)
        self.alpha = alpha
        self.beta = beta

    def voxel_loss(self, pred, target, peaks):
        prob = torch.sigmoid(pred)
        pos = -F.logsigmoid(pred) * (1 - prob) ** self.alpha
        neg = -F.logsigmoid(-pred) * prob**self.alpha * (1 - target) ** self.beta
        return torch.where(peaks, pos, neg)


class HeatmapMSELoss(MaskedHeatmapLoss):
    """Weighted squared error between ``sigmoid(pred)`` and the heatmap, heavier near particles.

    Args:
        pos_weight: extra weight at a centre: a voxel weighs ``1 + pos_weight * target``; one value, or one per
            class (channel order).
        mask_channel: see :class:`MaskedHeatmapLoss`.
        peak_min_value: see :class:`MaskedHeatmapLoss`.
    """

    def __init__(self, pos_weight: float | Sequence[float] = 10.0, mask_channel: bool = False, peak_min_value: float = 0.5):
        super().__init__(mask_channel, peak_min_value)
        weights = torch.as_tensor(pos_weight, dtype=torch.float32)
        if weights.ndim > 1 or bool((weights < 0).any()):
            raise ValueError(f"pos_weight must be one non-negative value or one per class, got {pos_weight!r}")
        self.register_buffer("pos_weight", weights.reshape(-1, 1, 1, 1) if weights.ndim else weights)

    def weight(self, target: torch.Tensor) -> torch.Tensor:
        """``1 + pos_weight * target``, with one weight per class channel when ``pos_weight`` has one per class."""
        if self.pos_weight.ndim and len(self.pos_weight) != target.shape[1]:
            raise ValueError(f"pos_weight has {len(self.pos_weight)} values for {target.shape[1]} classes")
        return 1 + self.pos_weight.to(target) * target

    def voxel_loss(self, pred, target, peaks):
        return self.weight(target) * (torch.sigmoid(pred) - target) ** 2


class HeatmapBCELoss(HeatmapMSELoss):
    """Weighted binary cross-entropy between ``sigmoid(pred)`` and the heatmap taken as a soft target.

    The weights and arguments are those of :class:`HeatmapMSELoss`. The gradient with respect to a logit is
    ``weight * (sigmoid(pred) - target)``: unlike the squared error's, it carries no ``p * (1 - p)`` factor, so it
    does not fade at a missed centre while a class's output still sits at the small prior probability.
    """

    def voxel_loss(self, pred, target, peaks):
        return self.weight(target) * F.binary_cross_entropy_with_logits(pred, target, reduction="none")

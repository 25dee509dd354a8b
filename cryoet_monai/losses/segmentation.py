"""SaSi's supervised loss, ``λ_dice·Dice + λ_focal·Focal`` on spherical masks, restricted to the loss mask.

The target carries two channels, the label map (0 background, ``c + 1`` class ``c``) and the loss
mask (1 where the annotation is complete), so the loss fits MONAI's ``SupervisedTrainer`` unchanged.
Voxels outside the mask are neither background nor particle: the focal term averages over masked
voxels only and the Dice term (MONAI ``MaskedDiceLoss``, foreground classes) counts masked voxels only.
"""

from __future__ import annotations

import torch
from monai.losses import FocalLoss, MaskedDiceLoss


class MaskedDiceFocalLoss(torch.nn.Module):
    """``lambda_dice · Dice + lambda_focal · Focal`` on softmax logits, over the voxels of a loss mask.

    Args:
        lambda_dice: weight of the Dice term (SaSi: 20).
        lambda_focal: weight of the focal term (SaSi: 1).
        gamma: focal exponent.
        smooth: Dice smoothing added to numerator and denominator.
    """

    def __init__(self, lambda_dice: float = 20.0, lambda_focal: float = 1.0, gamma: float = 2.0, smooth: float = 1e-5) -> None:
        super().__init__()
        self.lambda_dice, self.lambda_focal = float(lambda_dice), float(lambda_focal)
        # background Dice is left out: outside the mask the one-hot target reads as background
        self.dice = MaskedDiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=smooth, smooth_dr=smooth)
        self.focal = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=gamma, reduction="none")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: logits ``(B, C + 1, Z, Y, X)``, background first.
            target: ``(B, 2, Z, Y, X)``: the label map, then the loss mask.
        """
        if target.shape[1] != 2:
            raise ValueError(f"target must hold 2 channels (label map, loss mask), got shape {tuple(target.shape)}")
        label, mask = target[:, :1], target[:, 1:].float()
        dice = self.dice(input, label, mask=mask)
        focal = self.focal(input, label).sum(dim=1, keepdim=True)
        focal = (focal * mask).sum() / mask.sum().clamp(min=1.0)
        return self.lambda_dice * dice + self.lambda_focal * focal

"""Consistency guidance: the prediction of a viewed input equals the viewed prediction.

Views are the wedge-preserving symmetries of :mod:`cryoet_monai.transforms.views`; the prediction of
view ``k`` is mapped back with the inverse view and compared with the prediction of the original.
"""

from __future__ import annotations

import torch

from cryoet_monai.transforms.views import invert_view_volume


class ViewConsistencyLoss(torch.nn.Module):
    """Mean squared difference between ``act(pred)`` and ``invert_view(act(pred_of_view_k), k)``.

    By default both sides keep their gradients, as the two predictions should agree; with ``detach_target``
    the prediction of the original input is a fixed target (stop-gradient, as in Mean Teacher or FixMatch) and
    only the viewed prediction is pulled towards it.

    Args:
        activation: ``"softmax"`` (over channels), ``"sigmoid"`` or ``None`` to compare raw outputs.
        detach_target: no gradient through the prediction of the original input.
    """

    def __init__(self, activation: str | None = "softmax", detach_target: bool = False) -> None:
        super().__init__()
        if activation not in ("softmax", "sigmoid", None):
            raise ValueError(f"activation must be 'softmax', 'sigmoid' or None, got {activation!r}")
        self.activation = activation
        self.detach_target = bool(detach_target)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "softmax":
            return torch.softmax(x, dim=1)
        return torch.sigmoid(x) if self.activation == "sigmoid" else x

    def forward(self, pred: torch.Tensor, pred_of_view: torch.Tensor, k: int) -> torch.Tensor:
        """
        Args:
            pred: network output on the input, ``(B, C, Z, Y, X)``.
            pred_of_view: network output on view ``k`` of the same input.
            k: the view index.
        """
        target = self._act(pred.detach() if self.detach_target else pred)
        return torch.mean((target - invert_view_volume(self._act(pred_of_view), k)) ** 2)

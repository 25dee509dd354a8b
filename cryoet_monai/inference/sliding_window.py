"""Sliding-window inference over whole tomograms, with optional test-time augmentation over views.

Windows run on the accelerator (``sw_device``) while the stitched tomogram-sized output stays on
the CPU (``device``), so a 630 × 630 × 184 tomogram never has to fit in GPU memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.inferers import Inferer, SlidingWindowInferer

from cryoet_monai.transforms.views import invert_view_volume, view_volume


class ViewAveragingInferer(Inferer):
    """Runs an inferer on several views of the input and averages the inverse-mapped outputs.

    Args:
        inferer: the inferer applied to each view (e.g. a ``SlidingWindowInferer``).
        views: view indices (see :mod:`cryoet_monai.transforms.views`); ``[0]`` is plain inference.
    """

    def __init__(self, inferer: Inferer, views: Sequence[int] = (0,)):
        super().__init__()
        if not len(views):
            raise ValueError("views must hold at least one view index")
        self.inferer = inferer
        self.views = [int(k) for k in views]

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs) -> torch.Tensor:
        total = None
        for k in self.views:
            out = invert_view_volume(self.inferer(view_volume(inputs, k), network, *args, **kwargs), k)
            total = out if total is None else total + out
        return total / len(self.views)


def heatmap_inferer(
    roi_size: Sequence[int],
    sw_batch_size: int = 2,
    overlap: float = 0.25,
    mode: str = "gaussian",
    views: Sequence[int] | None = None,
    sw_device: str | torch.device | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Inferer:
    """Build the sliding-window inferer of a bundle.

    Args:
        roi_size: window size ``(z, y, x)``.
        sw_batch_size: windows per forward pass.
        overlap: fraction of overlap between neighbouring windows.
        mode: blending of overlapping windows (``"gaussian"`` or ``"constant"``).
        views: test-time augmentation views whose outputs are averaged; None or ``[0]`` for none.
        sw_device: where windows run; defaults to CUDA when available, else CPU.
        device: where the stitched output lives.
        progress: show a progress bar over windows.
    """
    if sw_device is None:
        sw_device = "cuda" if torch.cuda.is_available() else "cpu"
    inferer = SlidingWindowInferer(
        roi_size=roi_size,
        sw_batch_size=sw_batch_size,
        overlap=overlap,
        mode=mode,
        sw_device=sw_device,
        device=device,
        progress=progress,
    )
    if views is None or list(views) == [0]:
        return inferer
    return ViewAveragingInferer(inferer, views)

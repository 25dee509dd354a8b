"""Sliding-window inference over whole tomograms: mixed precision, output placement, test-time views.

Windows run on the accelerator (``sw_device``). The stitched tomogram-sized output stays there when it
fits in the free GPU memory with some headroom (:func:`stitch_device`): no host round trip per window,
and peak finding then runs on the GPU too. Otherwise it is stitched on the CPU, with each slab of
windows buffered on the GPU before it is copied, so a 630 × 630 × 184 tomogram never has to fit.

Mixed precision (``amp``) autocasts the network only: float16 on CUDA (more mantissa than bfloat16,
so peaks move less), bfloat16 on the CPU; outputs are cast back to float32 before blending.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from monai.inferers import Inferer, SlidingWindowInferer

from cryoet_monai.transforms.views import invert_view_volume, view_indices, view_volume

# float32 tomogram-sized volumes besides the output channels: the count map of the blending and the
# work volumes of peak finding (smoothed map, two neighbourhood maxima, masks)
EXTRA_VOLUMES = 5


def free_memory(device: torch.device) -> int:
    """Bytes a new allocation can use on a CUDA ``device``: free in the driver plus cached by PyTorch."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def stitch_device(
    spatial_shape: Sequence[int],
    channels: int,
    sw_device: str | torch.device,
    output_copies: int = 1,
    headroom: float = 0.25,
    free_bytes: int | None = None,
) -> torch.device:
    """Where to stitch a ``(channels, *spatial_shape)`` float32 output: ``sw_device`` when it fits, else the CPU.

    Needed: ``4 · voxels · (channels · output_copies + EXTRA_VOLUMES)`` bytes; it fits when that is at most
    ``(1 − headroom)`` of the free memory (the rest is left for the network's activations).

    Args:
        spatial_shape: spatial shape of the volume.
        channels: output channels of the network.
        sw_device: where the windows run; a CPU device always stitches on the CPU.
        output_copies: stitched outputs alive at once (2 when test-time views are averaged).
        headroom: fraction of the free memory kept free, in [0, 1).
        free_bytes: free memory of ``sw_device``; measured (:func:`free_memory`) when None.
    """
    sw_device = torch.device(sw_device)
    if not 0.0 <= headroom < 1.0:
        raise ValueError(f"headroom must be in [0, 1), got {headroom!r}")
    if sw_device.type != "cuda":
        return torch.device("cpu")
    if sw_device.index is None:
        sw_device = torch.device("cuda", torch.cuda.current_device())
    needed = 4 * math.prod(int(s) for s in spatial_shape) * (int(channels) * int(output_copies) + EXTRA_VOLUMES)
    free = free_memory(sw_device) if free_bytes is None else int(free_bytes)
    return sw_device if needed <= (1.0 - headroom) * free else torch.device("cpu")


class Autocast:
    """Calls ``network`` under ``torch.autocast`` and returns float32.

    Args:
        network: the network (or any callable returning a tensor).
        device_type: ``"cuda"`` or ``"cpu"``.
        dtype: autocast dtype; None for float16 on CUDA, bfloat16 on the CPU.
    """

    def __init__(self, network: Callable, device_type: str, dtype: torch.dtype | None = None):
        self.network = network
        self.device_type = device_type
        self.dtype = dtype or (torch.float16 if device_type == "cuda" else torch.bfloat16)

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.network(*args, **kwargs)
        return out.float()


class TomogramInferer(SlidingWindowInferer):
    """``SlidingWindowInferer`` for whole tomograms: optional mixed precision and automatic output placement.

    Args:
        roi_size: window size ``(z, y, x)``.
        sw_batch_size: windows per forward pass.
        overlap: fraction of overlap between neighbouring windows.
        mode: blending of overlapping windows (``"gaussian"`` or ``"constant"``).
        sw_device: where windows run.
        device: where the stitched output lives; ``"auto"`` chooses per volume with :func:`stitch_device`.
        out_channels: output channels of the network (for ``"auto"``).
        output_copies: stitched outputs alive at once (for ``"auto"``).
        headroom: see :func:`stitch_device`.
        amp: run the network under autocast (see the module docstring).
        amp_dtype: ``"float16"``, ``"bfloat16"`` or None (float16 on CUDA, bfloat16 on the CPU).
        progress: show a progress bar over windows.
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        sw_batch_size: int = 2,
        overlap: float = 0.25,
        mode: str = "gaussian",
        sw_device: str | torch.device = "cpu",
        device: str | torch.device = "auto",
        out_channels: int = 1,
        output_copies: int = 1,
        headroom: float = 0.25,
        amp: bool = False,
        amp_dtype: str | None = None,
        progress: bool = False,
    ):
        sw_device = torch.device(sw_device)
        self.auto_device = device == "auto"
        super().__init__(roi_size=roi_size, sw_batch_size=sw_batch_size, overlap=overlap, mode=mode, sw_device=sw_device,
                         device=None if self.auto_device else device, progress=progress)
        if amp_dtype not in (None, "float16", "bfloat16"):
            raise ValueError(f"amp_dtype must be 'float16', 'bfloat16' or null, got {amp_dtype!r}")
        self.out_channels, self.output_copies, self.headroom = int(out_channels), int(output_copies), float(headroom)
        self.amp, self.amp_dtype = bool(amp), None if amp_dtype is None else getattr(torch, amp_dtype)

    def output_device(self, inputs: torch.Tensor) -> torch.device:
        """Where the output of ``inputs`` ``(B, C, *spatial)`` is stitched."""
        if not self.auto_device:
            return torch.device(self.device)
        spatial = (inputs.shape[0] * inputs.shape[2],) + tuple(inputs.shape[3:])  # a batch of B volumes: B times the voxels
        return stitch_device(spatial, self.out_channels, self.sw_device, self.output_copies, self.headroom)

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs) -> torch.Tensor:
        device = self.output_device(inputs)
        if self.amp:
            network = Autocast(network, torch.device(self.sw_device).type, self.amp_dtype)
        # stitching on the host from a GPU: buffer each slab of windows on the GPU, one copy per slab
        buffered = device.type == "cpu" and torch.device(self.sw_device).type != "cpu"
        kwargs = {**kwargs, "device": device, "buffer_steps": 1 if buffered else None}
        return super().__call__(inputs, network, *args, **kwargs)


class ViewAveragingInferer(Inferer):
    """Runs an inferer on several views of the input and averages the inverse-mapped outputs.

    Args:
        inferer: the inferer applied to each view (e.g. a ``SlidingWindowInferer``).
        views: view indices (see :mod:`cryoet_monai.transforms.views`); ``[0]`` is plain inference.
    """

    def __init__(self, inferer: Inferer, views: Sequence[int] = (0,)):
        super().__init__()
        self.inferer = inferer
        self.views = view_indices(views)

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
    device: str | torch.device = "auto",
    out_channels: int = 1,
    headroom: float = 0.25,
    amp: bool = False,
    amp_dtype: str | None = None,
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
        device: where the stitched output lives; ``"auto"``: on ``sw_device`` when it fits (:func:`stitch_device`).
        out_channels: output channels of the network (for ``"auto"``).
        headroom: fraction of free GPU memory left to the network (for ``"auto"``).
        amp: mixed precision for the windows (float16 on CUDA, bfloat16 on the CPU unless ``amp_dtype``).
        amp_dtype: ``"float16"``, ``"bfloat16"`` or None.
        progress: show a progress bar over windows.
    """
    if sw_device is None:
        sw_device = "cuda" if torch.cuda.is_available() else "cpu"
    views = None if views is None else view_indices(views)
    averaged = views is not None and views != [0]
    inferer = TomogramInferer(
        roi_size=roi_size,
        sw_batch_size=sw_batch_size,
        overlap=overlap,
        mode=mode,
        sw_device=sw_device,
        device=device,
        out_channels=out_channels,
        output_copies=2 if averaged else 1,
        headroom=headroom,
        amp=amp,
        amp_dtype=amp_dtype,
        progress=progress,
    )
    return ViewAveragingInferer(inferer, views) if averaged else inferer

"""SimCLR pre-training of the U-Net encoder (SaSi): NT-Xent between two views of each sub-volume.

Every tomogram is cut into sliding sub-volumes (stride half the window) by
:class:`SlidingSubvolumeDataset`; the bundle's transforms copy each into two independently augmented
views (``image`` and ``image_2``). :func:`prepare_view_pair` stacks the two views into one batch, the
:class:`ContrastiveNet` (encoder + 128-d projection head) embeds them, and :class:`PairedContrastiveLoss`
applies MONAI's ``ContrastiveLoss`` (NT-Xent) between the halves — all inside MONAI's ``SupervisedTrainer``.
The encoder alone is saved, for :func:`cryoet_monai.networks.segmentation.load_pretrained_encoder`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from monai.data import Dataset, MetaTensor
from monai.data.utils import dense_patch_slices
from monai.losses import ContrastiveLoss

from cryoet_monai.networks.segmentation import UNetEncoder


class SlidingSubvolumeDataset(Dataset):
    """All sliding-window sub-volumes of a set of loaded volumes, as a map-style dataset.

    Windows step by ``stride`` (default half the window) and the last window of each axis is aligned
    to the volume's end, so every voxel is covered; a volume smaller than the window along an axis
    must be padded first.

    Args:
        volumes: loaded items (e.g. a ``CacheDataset`` of the loading transforms), ``d[image_key]`` ``(C, Z, Y, X)``.
        roi_size: window size ``(z, y, x)``.
        stride: step between windows; default ``roi_size // 2``.
        transform: applied to each ``{image_key: window, "id": ...}`` (the two-view augmentation).
        image_key: key of the image.
    """

    def __init__(
        self,
        volumes: Sequence[Mapping],
        roi_size: Sequence[int],
        stride: Sequence[int] | None = None,
        transform: Callable | None = None,
        image_key: str = "image",
    ) -> None:
        self.volumes, self.image_key = volumes, image_key
        roi = [int(r) for r in roi_size]
        step = [max(1, r // 2) for r in roi] if stride is None else [int(s) for s in stride]
        self.windows = []
        for index in range(len(volumes)):
            shape = volumes[index][image_key].shape[-3:]
            if any(s < r for s, r in zip(shape, roi)):
                raise ValueError(f"volume {index} of shape {tuple(shape)} is smaller than the window {tuple(roi)}; pad it first")
            self.windows += [(index, window) for window in dense_patch_slices(shape, roi, step)]
        super().__init__(data=self.windows, transform=transform)

    def _transform(self, index: int):
        volume_index, window = self.windows[index]
        volume = self.volumes[volume_index]
        image = volume[self.image_key][(slice(None), *window)]
        item = {self.image_key: image.as_tensor() if isinstance(image, MetaTensor) else image, "id": volume.get("id", volume_index)}
        return self.transform(item) if self.transform is not None else item


def prepare_view_pair(batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
    """``SupervisedTrainer`` ``prepare_batch``: the two views stacked along the batch, no target.

    Args:
        batchdata: a batch with ``image`` and ``image_2`` (the two views), each ``(B, C, Z, Y, X)``.
        device: target device.
        non_blocking: non-blocking transfer.
    """
    views = torch.cat([torch.as_tensor(batchdata["image"]), torch.as_tensor(batchdata["image_2"])], dim=0)
    return views.to(device=device, non_blocking=non_blocking), None


class PairedContrastiveLoss(torch.nn.Module):
    """MONAI's NT-Xent ``ContrastiveLoss`` between the first and second half of a batch of embeddings.

    Args:
        temperature: softmax temperature of the similarities.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.loss = ContrastiveLoss(temperature=temperature)

    def forward(self, embeddings: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            embeddings: ``(2B, D)``: the first views, then the second views in the same order.
            target: unused (``SupervisedTrainer`` passes its label, None here).
        """
        if embeddings.shape[0] % 2:
            raise ValueError(f"expected an even batch of paired views, got {embeddings.shape[0]}")
        first, second = embeddings.chunk(2, dim=0)
        return self.loss(first, second)


class ContrastiveNet(torch.nn.Module):
    """The U-Net's encoder, average pooling to a ``pool_size³`` grid and an MLP projection head (SimCLR).

    The encoder ends in instance normalisation, which makes every channel's global mean nearly the
    same for every input; pooling to a small grid keeps where features sit, so embeddings can differ.

    Args:
        unet: the ``BasicUNet`` whose encoder is pre-trained (shared, so its weights are the ones trained).
        projection_dim: size of the embedding (SaSi: 128).
        hidden_dim: width of the projection head's hidden layer.
        pool_size: side of the pooled grid of encoder features.
    """

    def __init__(self, unet: torch.nn.Module, projection_dim: int = 128, hidden_dim: int = 256, pool_size: int = 2) -> None:
        super().__init__()
        self.encoder = UNetEncoder(unet)
        self.head = torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool3d(pool_size),
            torch.nn.Flatten(),
            torch.nn.Linear(self.encoder.out_channels * pool_size**3, hidden_dim),
            torch.nn.ReLU(inplace=True),
            torch.nn.Linear(hidden_dim, projection_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

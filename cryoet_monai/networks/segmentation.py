"""SaSi's 3D U-Net (MONAI ``BasicUNet``), its encoder, and loading a contrastively pre-trained encoder.

``BasicUNet`` names its encoder ``conv_0, down_1 … down_4`` and its decoder ``upcat_* / final_conv``.
:class:`UNetEncoder` holds the same modules under the same names, so the state dict saved from a
pre-trained encoder loads straight into the encoder half of a fresh U-Net.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from monai.networks.nets import BasicUNet

from cryoet_monai.handlers.model_info import check_model_info

ENCODER_BLOCKS = ("conv_0", "down_1", "down_2", "down_3", "down_4")


def segmentation_unet(
    num_classes: int,
    features: Sequence[int] = (8, 8, 16, 32, 64, 8),
    in_channels: int = 1,
    dropout: float = 0.0,
) -> BasicUNet:
    """A 3D ``BasicUNet`` with ``num_classes + 1`` output channels (background first).

    Args:
        num_classes: number of particle classes.
        features: six channel counts (five encoder levels, then the last decoder level), as ``BasicUNet``.
        in_channels: input channels.
        dropout: dropout probability.
    """
    return BasicUNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes + 1, features=features, dropout=dropout)


class UNetEncoder(torch.nn.Module):
    """The encoder half of a ``BasicUNet``: the deepest feature map ``(B, features[4], Z/16, Y/16, X/16)``.

    Args:
        unet: the U-Net whose encoder blocks this module shares (not copies).
    """

    def __init__(self, unet: BasicUNet) -> None:
        super().__init__()
        for name in ENCODER_BLOCKS:
            setattr(self, name, getattr(unet, name))
        self.out_channels = unet.down_4.convs.conv_1.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in ENCODER_BLOCKS:
            x = getattr(self, name)(x)
        return x


def load_pretrained_encoder(network: BasicUNet, path: str | Path | None, key: str = "encoder", voxel_size: float | None = None) -> BasicUNet:
    """Copy pre-trained encoder weights into ``network``'s encoder; the decoder keeps its initialisation.

    Args:
        network: the U-Net to initialise.
        path: a checkpoint holding the encoder's state dict (under ``key``, or bare); None leaves the network as is.
        key: the entry of the checkpoint dict holding the encoder.
        voxel_size: Å per voxel of this run, checked against the ``model_info.json`` that pre-training left beside
            the checkpoint (the encoder knows no classes, so only the voxel size is compared).

    Raises:
        FileNotFoundError: when there is no checkpoint at ``path``.
        ValueError: when the checkpoint does not fit the encoder (different features) or was pre-trained at another
            voxel size.
    """
    if path is None:
        return network
    if not Path(path).is_file():
        raise FileNotFoundError(f"no pre-trained encoder at {path}: run the bundle's pretrain.yaml first, or train with --use_pretrained false")
    check_model_info(path, voxel_size=voxel_size)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get(key, state)
    encoder = UNetEncoder(network)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: not an encoder of this U-Net (were the features the same?): {err}") from err
    return network

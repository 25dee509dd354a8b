"""MONAI's ``MaskedAutoEncoderViT`` with the two extra views CryoMAE needs.

* :meth:`CryoMAE.encode` runs the encoder on *all* patches (no masking) and returns the token
  embeddings laid out on the patch grid: the features that exemplar matching compares.
* :meth:`CryoMAE.reconstruction_loss` is the MAE objective: mean squared error between predicted and
  true pixels of the *masked* patches only, each target patch normalised to zero mean and unit
  variance (He et al. 2022, "norm_pix_loss"), which keeps the loss about texture, not ice thickness.

:class:`CryoMAEEncoder` makes ``encode`` a module's ``forward``, so ``monai.bundle ckpt_export`` can trace it.
"""

from __future__ import annotations

import math

import torch
from monai.networks.nets import MaskedAutoEncoderViT


class CryoMAE(MaskedAutoEncoderViT):
    """Masked autoencoder ViT (2D micrographs or 3D tomograms) with an unmasked dense encoder.

    Accepts every argument of :class:`monai.networks.nets.MaskedAutoEncoderViT`
    (``in_channels, img_size, patch_size, hidden_size, ..., masking_ratio, spatial_dims``).
    """

    @property
    def grid_size(self) -> tuple[int, ...]:
        """Number of patches along each spatial axis."""
        return tuple(i // p for i, p in zip(self.img_size, self.patch_size))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Token embeddings of every patch: ``(B, hidden_size, *grid_size)``.

        Args:
            x: ``(B, C, *img_size)`` windows.
        """
        if tuple(x.shape[2:]) != tuple(self.img_size):
            raise ValueError(f"encode expects windows of {tuple(self.img_size)}, got {tuple(x.shape[2:])}")
        tokens = self.patch_embedding(x)
        cls_tokens = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = self.blocks(torch.cat((cls_tokens, tokens), dim=1))[:, 1:]
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, *self.grid_size)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *img_size)`` → ``(B, num_patches, prod(patch_size) · C)`` in the decoder's token order."""
        b, c = x.shape[:2]
        dims = len(self.patch_size)
        shape = [b, c]
        for g, p in zip(self.grid_size, self.patch_size):
            shape += [g, p]
        x = x.reshape(shape)
        grid_axes = [2 + 2 * i for i in range(dims)]
        patch_axes = [3 + 2 * i for i in range(dims)]
        x = x.permute(0, *grid_axes, *patch_axes, 1)
        return x.reshape(b, math.prod(self.grid_size), -1)

    def reconstruction_loss(self, x: torch.Tensor, prediction: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """MAE loss of a batch: per-patch-normalised pixel MSE averaged over the masked patches.

        Args:
            x: ``(B, C, *img_size)`` windows.
            prediction: ``forward(x)``'s ``(pred, mask)`` when already computed (e.g. through a
                ``DistributedDataParallel`` wrapper, whose forward is what synchronises gradients).
        """
        pred, mask = self(x) if prediction is None else prediction
        target = self.patchify(x)
        target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1e-6).sqrt()
        per_patch = ((pred - target) ** 2).mean(dim=-1)
        mask = mask.to(per_patch)
        return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


class CryoMAEEncoder(torch.nn.Module):
    """A :class:`CryoMAE` whose ``forward`` is :meth:`CryoMAE.encode`, the network picking runs: for TorchScript export.

    Its state dict is the wrapped network's, so CryoMAE checkpoints load as they are.

    Args:
        network: the CryoMAE.
    """

    def __init__(self, network: CryoMAE) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.encode(x)

    def state_dict(self, *args, **kwargs):
        return self.network.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.network.load_state_dict(state_dict, strict=strict, assign=assign)

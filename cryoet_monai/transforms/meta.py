"""Keep derived maps aligned with their image through later MONAI spatial transforms."""

from __future__ import annotations

import torch
from monai.data import MetaTensor


def like_image(array: torch.Tensor, image):
    """``array`` as a MetaTensor carrying ``image``'s metadata (affine, applied operations) when ``image`` has any."""
    return MetaTensor(array).copy_meta_from(image) if isinstance(image, MetaTensor) else array

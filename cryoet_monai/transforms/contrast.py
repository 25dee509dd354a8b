"""Bringing an image to the contrast polarity a network works in (DESIGN.md §2).

Reconstructed tomograms and recorded micrographs show protein *dark* (phase contrast at underfocus); some
pipelines write them inverted, protein *bright*. A manifest says which (``"contrast"``, per item if need be), a
model's ``model_info.json`` says which polarity its network works in, and :class:`MatchContrastd` multiplies an
image by −1 when the two differ. The inversion is exact, so it commutes with the intensity normalisation after it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from cryoet_monai.data.contrast import DEFAULT_CONTRAST, check_contrast


class MatchContrast(Transform):
    """Invert an image whose contrast is not the one the network works in.

    Args:
        network_contrast: the polarity the network works in, ``"dark"`` or ``"bright"``.
    """

    def __init__(self, network_contrast: str = DEFAULT_CONTRAST) -> None:
        self.network_contrast = check_contrast(network_contrast, "network_contrast")

    def __call__(self, img, contrast: str = DEFAULT_CONTRAST):
        """
        Args:
            img: image (any shape, tensor or array).
            contrast: the polarity of ``img``.
        """
        return img if check_contrast(contrast, "image") == self.network_contrast else -img


class MatchContrastd(MapTransform):
    """Dictionary version of :class:`MatchContrast`: the image's polarity comes from the data.

    The item's ``d[contrast_key]`` (the manifest's ``contrast``; :data:`DEFAULT_CONTRAST` when absent) is kept;
    a loaded image's ``meta["contrast"]`` becomes ``network_contrast`` and ``meta["original_contrast"]`` the polarity
    it was read with.

    Args:
        keys: image keys.
        network_contrast: the polarity the network works in.
        contrast_key: key of the item's declared polarity.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        network_contrast: str = DEFAULT_CONTRAST,
        contrast_key: Hashable = "contrast",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.match = MatchContrast(network_contrast)
        self.contrast_key = contrast_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        declared = d.get(self.contrast_key) or DEFAULT_CONTRAST
        check_contrast(declared, f"item '{d.get('id', '?')}'")
        for key in self.key_iterator(d):
            d[key] = self.match(d[key], declared)
            if isinstance(d[key], MetaTensor):
                d[key].meta["original_contrast"] = declared
                d[key].meta["contrast"] = self.match.network_contrast
        return d

"""Contrast polarity of images: the values a manifest and a model may declare, and a measurement from picks.

``dark``: protein darker than the ice around it, as tomograms are reconstructed (IMOD, AreTomo, Warp, the CryoET
Data Portal) and micrographs recorded (phase contrast at underfocus). ``bright``: the inverted images some picking
pipelines write. Density templates are bright: they are potentials, not images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONTRASTS = ("dark", "bright")
DEFAULT_CONTRAST = "dark"


def check_contrast(value, source: str = "contrast") -> str:
    """``value`` if it is a known polarity.

    Raises:
        ValueError: naming ``source`` and the known values.
    """
    if value not in CONTRASTS:
        raise ValueError(
            f"{source}: contrast must be one of {list(CONTRASTS)} (dark: protein darker than ice, as reconstructed), "
            f"got {value!r}"
        )
    return value


@dataclass(frozen=True)
class ContrastMeasurement:
    """Pick centres against their surroundings, in units of the image's standard deviation.

    Args:
        difference: mean over picks of (mean inside the particle radius − mean of the shell 1.5 to 2 radii out).
        t_statistic: ``difference`` over its standard error (how sure the sign is).
        picks: picks measured (those whose shell lies inside the image).
    """

    difference: float
    t_statistic: float
    picks: int

    @property
    def contrast(self) -> str | None:
        """``dark`` or ``bright`` when the picks agree (|t| ≥ 3), else None."""
        if self.picks < 3 or abs(self.t_statistic) < 3:
            return None
        return "dark" if self.difference < 0 else "bright"


def measure_contrast(image: np.ndarray, centres_px: np.ndarray, radii_px: Sequence[float] | np.ndarray) -> ContrastMeasurement:
    """Measure the polarity of an image at known particle centres.

    Args:
        image: ``[z, y, x]`` tomogram or ``[y, x]`` micrograph.
        centres_px: ``(N, ndim)`` centres in voxels, in the image's axis order.
        radii_px: the particle radius of each centre in voxels (one value, or ``N``).
    """
    image = np.asarray(image, dtype=np.float32)
    centres = np.asarray(centres_px, dtype=float).reshape(-1, image.ndim)
    radii = np.broadcast_to(np.asarray(radii_px, dtype=float), (len(centres),))
    scale = float(image.std()) or 1.0
    differences = []
    for centre, radius in zip(centres, radii):
        reach = int(np.ceil(2 * radius))
        lo, hi = np.round(centre).astype(int) - reach, np.round(centre).astype(int) + reach + 1
        if np.any(lo < 0) or np.any(hi > image.shape) or radius < 0.5:
            continue
        box = image[tuple(slice(a, b) for a, b in zip(lo, hi))]
        grids = np.meshgrid(*(np.arange(a, b) - c for a, b, c in zip(lo, hi, centre)), indexing="ij")
        distance = np.sqrt(sum(g**2 for g in grids)) / radius
        inside, shell = box[distance <= 1.0], box[(distance >= 1.5) & (distance <= 2.0)]
        if inside.size and shell.size:
            differences.append((inside.mean() - shell.mean()) / scale)
    if not differences:
        return ContrastMeasurement(0.0, 0.0, 0)
    values = np.asarray(differences)
    spread = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.inf
    return ContrastMeasurement(float(values.mean()), float(values.mean() / spread) if spread > 0 else 0.0, len(values))


def measure_item_contrast(manifest, item) -> ContrastMeasurement | None:
    """Measure an item's polarity at its annotated picks (None for an item without picks).

    Args:
        manifest: the loaded :class:`~cryoet_monai.data.manifest.Manifest` the item belongs to.
        item: one of its items.
    """
    from cryoet_monai.data.manifest import inside_boxes
    from cryoet_monai.data.picks import coord_columns
    from cryoet_monai.data.readers import read_image

    if item.picks is None:
        return None
    picks = manifest.read_item_picks(item)
    coords = picks[coord_columns(manifest.ndim)].to_numpy(dtype=float)
    picks = picks[inside_boxes(coords, item.annotated)]
    if not len(picks):
        return None
    unit = item.voxel_size if manifest.ndim == 3 else 1.0  # 3D positions and radii in Å, 2D in pixels
    radius = {c.name: c.radius / unit for c in manifest.classes}
    centres = picks[coord_columns(manifest.ndim)].to_numpy(dtype=float)[:, ::-1] / unit
    image, _ = read_image(item.image)
    return measure_contrast(image, centres, picks["particle_type"].map(radius).to_numpy(dtype=float))


def contrast_warnings(manifest) -> list[str]:
    """Items whose picks say the opposite of the polarity the manifest declares for them."""
    found = []
    for split, items in manifest.splits.items():
        for item in items:
            measured = measure_item_contrast(manifest, item)
            if measured is not None and measured.contrast not in (None, item.contrast):
                found.append(
                    f"{manifest.path}: {split} item '{item.id}' is declared \"{item.contrast}\" but its {measured.picks} "
                    f"picks are {measured.contrast} (pick centres {measured.difference:+.2f} std against their "
                    f"surroundings, t = {measured.t_statistic:.1f}): set \"contrast\": \"{measured.contrast}\" for it, "
                    "or check the picks"
                )
    return found

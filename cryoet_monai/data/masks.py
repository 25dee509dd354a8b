"""Particle centres from disc masks (a union of equal discs drawn around every annotated particle).

A point is a disc centre exactly when the whole disc around it lies inside the mask, so the mask's
distance transform reaches the disc radius there. Thresholding the distance transform a few pixels
below the radius leaves one small blob per particle, also inside merged (touching) discs; the blob
centroids are the centres. Isolated discs give exact centres, touching ones close to exact; discs
overlapping by much more than the tolerance merge into one centre.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from cryoet_monai.data.picks import make_picks


def disc_centres(mask: np.ndarray, radius: float, tolerance: float = 3.0) -> np.ndarray:
    """Centres ``(N, 2)`` in ``x, y`` pixels of the discs whose union is ``mask``.

    Args:
        mask: 2D boolean (or 0/255) image, True inside the discs.
        radius: disc radius in pixels.
        tolerance: pixels below ``radius`` accepted (edge blur, JPEG artefacts).
    """
    inside = np.asarray(mask) > (np.asarray(mask).max() / 2 if np.asarray(mask).dtype != bool else 0)
    depth = ndimage.distance_transform_edt(inside)
    labels, n = ndimage.label(depth >= radius - tolerance)
    if n == 0:
        return np.zeros((0, 2))
    centres_yx = np.asarray(ndimage.center_of_mass(depth, labels, range(1, n + 1)))
    return centres_yx[:, ::-1]


def picks_from_masks(image_paths, mask_dir, radius: float, class_name: str, mask_suffix: str = "_mask"):
    """2D picks table for micrographs whose masks are ``<mask_dir>/<stem><mask_suffix>.<ext>``.

    Args:
        image_paths: micrograph files (their stem is the micrograph id).
        mask_dir: folder of the masks.
        radius: disc radius in pixels.
        class_name: particle class of every disc.
        mask_suffix: what the mask's stem adds to the image's stem.
    """
    import pandas as pd
    from PIL import Image

    tables = []
    for image in map(Path, image_paths):
        matches = sorted(Path(mask_dir).glob(f"{image.stem}{mask_suffix}.*"))
        if not matches:
            raise FileNotFoundError(f"{image}: no mask {image.stem}{mask_suffix}.* in {mask_dir}")
        with Image.open(matches[0]) as im:
            centres = disc_centres(np.asarray(im.convert("L")), radius)
        tables.append(make_picks(image.stem, class_name, centres, ndim=2))
    return pd.concat(tables, ignore_index=True)


def manifest_from_masks(data_dir, template, out, mask_dir: str = "masks") -> Path:
    """Complete a 2D manifest template whose truth lives in disc masks.

    Images are resolved against ``data_dir``; each item's picks are derived from
    ``data_dir/<mask_dir>/<id>_mask.*`` with the radius of the template's (single) class and written
    as CSV beside the new manifest ``out``.

    Args:
        data_dir: folder holding the images (and masks) the template refers to.
        template: manifest with classes and splits but no picks (e.g. ``data_manifests/empiar10017.json``).
        out: path of the complete manifest to write.
        mask_dir: mask folder inside ``data_dir``.
    """
    from cryoet_monai.data.manifest import ManifestError, load_manifest
    from cryoet_monai.data.picks import write_picks

    manifest = load_manifest(template, root=data_dir, check_points=False)
    if manifest.ndim != 2 or len(manifest.classes) != 1:
        raise ManifestError(f"{template}: masks give one 2D class; the template has ndim={manifest.ndim}, {len(manifest.classes)} classes")
    particle = manifest.classes[0]
    out = Path(out).resolve()
    for items in manifest.splits.values():
        for item in items:
            picks = picks_from_masks([item.image], Path(data_dir) / mask_dir, particle.radius, particle.name)
            item.picks = write_picks(picks.assign(micrograph=item.id), out.parent / "picks" / f"{item.id}.csv")
    manifest.save(out)
    load_manifest(out)
    return out

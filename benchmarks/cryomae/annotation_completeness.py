"""How completely each EMPIAR-10017 micrograph is annotated, measured without any picker.

β-galactosidase particles are dark compact blobs on these denoised micrographs. Every micrograph is normalised to
zero mean and unit variance and filtered with a difference of Gaussians (σ = r / 4 minus σ = r, r the particle
radius); its local minima at least half a radius apart and more than ``--border`` px from an edge are the dark blobs.
A blob counts as a particle-like blob when it is at least as dark as the median annotated particle of the training
micrograph (the annotator's typical particle); the share of those with an annotated centre within half a radius
estimates how completely the annotator marked what looks like a particle. Writes a markdown table to stdout (and
to ``--out``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.masks import manifest_from_masks
from cryoet_monai.data.picks import within_border
from cryoet_monai.data.readers import read_image


def normalised(image: np.ndarray) -> np.ndarray:
    """The micrograph at zero mean and unit variance."""
    return (image - image.mean()) / image.std()


def difference_of_gaussians(image: np.ndarray, radius: float) -> np.ndarray:
    """σ = r / 4 minus σ = r of a normalised micrograph: negative on dark, particle-sized blobs."""
    return ndimage.gaussian_filter(image, radius / 4) - ndimage.gaussian_filter(image, radius)


def values_at(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Values of a 2D map at ``(N, 2)`` positions ``x, y`` in pixels (nearest pixel, clipped to the map)."""
    rows = np.clip(np.round(xy[:, 1]).astype(int), 0, image.shape[0] - 1)
    cols = np.clip(np.round(xy[:, 0]).astype(int), 0, image.shape[1] - 1)
    return image[rows, cols]


def dark_blobs(image: np.ndarray, radius: float, border: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local minima ``(x, y)`` of the difference of Gaussians, their values, and the filtered image.

    Args:
        image: 2D micrograph.
        radius: particle radius in pixels.
        border: minima closer than this to an edge are dropped (:func:`~cryoet_monai.data.picks.within_border`).
    """
    dog = difference_of_gaussians(normalised(image), radius)
    ys, xs = np.nonzero((ndimage.minimum_filter(dog, size=int(radius)) == dog) & (dog < 0))
    xy = np.stack([xs, ys], axis=1)
    xy = xy[within_border(xy, dog.shape, border)]
    return xy, values_at(dog, xy), dog


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--empiar", type=Path, required=True, help="EMPIAR-10017 folder (images/, masks/)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the manifest and truth derived from the masks")
    parser.add_argument("--border", type=float, default=128.0, help="px from an edge, as the benchmark's --border")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    template = Path(__file__).resolve().parents[2] / "data_manifests" / "empiar10017.json"
    manifest = load_manifest(manifest_from_masks(args.empiar, template, args.work / "manifest.json"))
    radius = manifest.classes[0].radius
    measured = []
    for split in ("training", "test"):
        for item in manifest.items(split):
            xy, values, dog = dark_blobs(read_image(item.image)[0].astype(np.float32), radius, args.border)
            truth = manifest.read_item_picks(item)[["x", "y"]].to_numpy()
            nearest = np.sqrt(((xy[:, None, :] - truth[None, :, :]) ** 2).sum(-1)).min(1)
            measured.append((split, item.id, len(truth), float(np.median(values_at(dog, truth))), values, nearest))
    reference = measured[0][3]
    argv_text = shlex.join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# EMPIAR-10017: how completely each micrograph is annotated",
        "",
        f"Command: `python benchmarks/cryomae/annotation_completeness.py {argv_text}`",
        "",
        f"Particle-like blob: DoG minimum at least as dark as {reference:.2f} (the median DoG at the training micrograph's "
        "annotated centres); annotated: an annotated centre within 0.5 r.",
        "",
        "| split | micrograph | annotated particles | median DoG at annotated centres | particle-like blobs | share annotated | blobs at least half as dark | share annotated |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, item_id, count, median, values, nearest in measured:
        dark, half = values <= reference, values <= reference / 2
        lines.append(
            f"| {split} | {item_id} | {count} | {median:.2f} | {int(dark.sum())} | {np.mean(nearest[dark] <= radius / 2):.2f} "
            f"| {int(half.sum())} | {np.mean(nearest[half] <= radius / 2):.2f} |"
        )
    table = "\n".join(lines) + "\n"
    if args.out is not None:
        args.out.write_text(table)
    print(table)
    return table


if __name__ == "__main__":
    main()

"""Label budgets: a manifest whose training items are annotated only inside small boxes (DESIGN.md §2).

Two kinds, the same file format for every method:

- ``fraction=f``: in every training item, non-overlapping cubes of about particle size placed at random
  cover the share ``f`` of its volume; drawn again until, over the training split, every scored class
  (weight > 0) has at least one particle inside the boxes.
- ``shots=N``: for every class, ``N`` particles chosen at random over the training split, each inside a
  cube of side 2.5 × the class radius centred on it; every particle inside a box counts as labelled.

Validation, test and unlabeled items are copied unchanged; image and picks paths are rewritten relative
to the new manifest's folder.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from cryoet_monai.data.manifest import Item, Manifest, ManifestError, inside_boxes, load_manifest
from cryoet_monai.data.readers import image_info

SHOT_BOX_FACTOR = 2.5  # box side / class radius
MAX_DRAWS = 2000


class BudgetError(ValueError):
    """A budget that cannot be met with the given manifest."""


def _extent(item: Item) -> np.ndarray:
    """Physical size (Å, x-y-z) of an item's image."""
    shape, _ = image_info(item.image)
    return np.asarray(shape[::-1], dtype=float) * item.voxel_size


def _training(manifest: Manifest) -> list[tuple[Item, np.ndarray, np.ndarray, np.ndarray]]:
    """``(item, extent Å, positions Å [N, 3], class names [N])`` of every training item."""
    items = manifest.items("training")
    if not items:
        raise BudgetError(f"{manifest.path}: no training items to put a budget on")
    out = []
    for item in items:
        if item.picks is None:
            raise BudgetError(f"{manifest.path}: training item '{item.id}' has no picks file")
        picks = manifest.read_item_picks(item)
        out.append((item, _extent(item), picks[["x", "y", "z"]].to_numpy(), picks["particle_type"].to_numpy()))
    return out


def fraction_boxes(extent: np.ndarray, fraction: float, side: float, rng: np.random.Generator) -> list[list[float]]:
    """Non-overlapping cubes (Å) covering ``fraction`` of a volume of ``extent`` (x-y-z).

    Args:
        extent: physical size of the volume in Å.
        fraction: share of the volume to cover.
        side: preferred cube side in Å; shrunk so that the boxes add up to the fraction exactly.
        rng: random generator.
    """
    target = fraction * float(np.prod(extent))
    side = min(side, float(extent.min()), target ** (1 / 3))
    count = max(1, int(round(target / side**3)))
    side = (target / count) ** (1 / 3)
    if side > extent.min():
        raise BudgetError(
            f"a {fraction:.3g} share needs cubes of {side:.0f} Å, larger than the volume ({extent.min():.0f} Å)"
        )
    boxes = []
    for _ in range(100 * count):
        if len(boxes) == count:
            break
        lo = rng.uniform(0, extent - side)
        if all(np.any((lo >= np.asarray(b[3:])) | (lo + side <= np.asarray(b[:3]))) for b in boxes):
            boxes.append([*lo, *(lo + side)])
    if len(boxes) < count:
        raise BudgetError(
            f"could not place {count} non-overlapping {side:.0f} Å boxes in a {extent.round().tolist()} Å volume"
        )
    return boxes


def _labelled_classes(training, boxes_per_item) -> set[str]:
    names = set()
    for (_, _, xyz, classes), boxes in zip(training, boxes_per_item):
        names.update(classes[inside_boxes(xyz, boxes)])
    return names


def draw_fraction(manifest: Manifest, fraction: float, rng: np.random.Generator) -> list[list[list[float]]]:
    """Boxes per training item for a ``fraction`` budget, holding every scored class."""
    if not 0 < fraction < 1:
        raise BudgetError(f"fraction must be between 0 and 1, got {fraction}")
    training = _training(manifest)
    scored = {c.name for c in manifest.classes if c.weight > 0}
    present = set().union(*(set(classes) for _, _, _, classes in training))
    if scored - present:
        raise BudgetError(
            f"{manifest.path}: scored class(es) {sorted(scored - present)} have no particle in the training split"
        )
    side = 4.0 * float(np.mean([c.radius for c in manifest.classes]))
    for _ in range(MAX_DRAWS):
        boxes = [fraction_boxes(extent, fraction, side, rng) for _, extent, _, _ in training]
        if scored <= _labelled_classes(training, boxes):
            return boxes
    raise BudgetError(
        f"{manifest.path}: after {MAX_DRAWS} draws, {fraction:.3g} of the training volume never held a particle "
        f"of every scored class {sorted(scored)}; use a larger fraction or a shots budget"
    )


def draw_shots(manifest: Manifest, shots: int, rng: np.random.Generator) -> list[list[list[float]]]:
    """Boxes per training item for ``shots`` particles of every class."""
    if shots < 1:
        raise BudgetError(f"shots must be at least 1, got {shots}")
    training = _training(manifest)
    boxes = [[] for _ in training]
    for cls in manifest.classes:
        candidates = [(k, p) for k, (_, _, xyz, classes) in enumerate(training) for p in xyz[classes == cls.name]]
        if len(candidates) < shots and cls.weight > 0:
            raise BudgetError(
                f"{manifest.path}: class '{cls.name}' has {len(candidates)} particle(s) in the training split, "
                f"fewer than {shots} shots"
            )
        half = 0.5 * SHOT_BOX_FACTOR * cls.radius
        for pick in rng.permutation(len(candidates))[:shots]:
            k, xyz = candidates[pick]
            extent = training[k][1]
            lo, hi = np.clip(xyz - half, 0, extent), np.clip(xyz + half, 0, extent)
            boxes[k].append([*lo, *hi])
    return boxes


def budget_manifest(
    manifest_path, out_path, fraction: float | None = None, shots: int | None = None, seed: int = 0
) -> Path:
    """Write a copy of a manifest whose training items are annotated only inside budget boxes.

    Args:
        manifest_path: the full manifest.
        out_path: the budget manifest to write (any folder; paths are made relative to it).
        fraction: share of each training volume to annotate (e.g. 0.01), or
        shots: particles per class to annotate (e.g. 5); give exactly one of the two.
        seed: random seed of the boxes.

    Raises:
        BudgetError: the budget cannot hold a particle of every scored class, or bad arguments.
    """
    if (fraction is None) == (shots is None):
        raise BudgetError("give exactly one of fraction= or shots=")
    try:
        manifest = load_manifest(manifest_path)
    except ManifestError as err:
        raise BudgetError(str(err)) from err
    rng = np.random.default_rng(seed)
    boxes = draw_fraction(manifest, fraction, rng) if fraction is not None else draw_shots(manifest, int(shots), rng)
    budget = copy.deepcopy(manifest)
    budget.name = f"{manifest.name}-{'frac' + format(fraction, 'g') if fraction is not None else f'{shots}shot'}"
    for item, item_boxes in zip(budget.items("training"), boxes):
        item.annotated = item_boxes
    return budget.save(out_path)

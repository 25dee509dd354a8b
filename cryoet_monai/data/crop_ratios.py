"""Crop-centre ratios for drawing training crops class by class (MONAI ``RandCropByLabelClassesd``)."""

from __future__ import annotations

from collections.abc import Sequence


def crop_class_ratios(
    labeled_counts: Sequence[int], pos_neg_ratio: Sequence[float] = (2, 1), full_share_particles: int | None = None
) -> list[float]:
    """Ratios of crop centres: background first, then one per class.

    A class with at least ``full_share_particles`` labeled particles is the centre of as many crops as any other;
    one with fewer gets a share in proportion to its count, so that one or two labeled particles are not
    repeated as often as a class with many; a class without labeled particles gets none. Particle crops and
    background crops (inside the annotated boxes, away from every particle) keep ``pos_neg_ratio``.

    Args:
        labeled_counts: labeled particles of each class, in class order (``Manifest.labeled_counts``).
        pos_neg_ratio: particle crops : background crops.
        full_share_particles: labeled particles that earn a class a full share; None gives every class with
            labeled particles a full share.

    Raises:
        ValueError: no class has labeled particles, or ``full_share_particles`` or ``pos_neg_ratio`` is not positive.
    """
    if full_share_particles is not None and full_share_particles < 1:
        raise ValueError(f"full_share_particles must be at least 1 (or null), got {full_share_particles}")
    positive, negative = (float(r) for r in pos_neg_ratio)
    if positive <= 0 or negative < 0:
        raise ValueError(f"pos_neg_ratio must be [positive, non-negative], got {list(pos_neg_ratio)}")
    cap = 1 if full_share_particles is None else full_share_particles
    shares = [min(int(n), cap) / cap for n in labeled_counts]
    if not any(shares):
        raise ValueError(f"no class has labeled particles in the training split (counts {list(labeled_counts)})")
    return [sum(shares) * negative / positive] + shares

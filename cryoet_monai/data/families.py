"""Procedural particle families: seeded shapes of many sizes for pre-training, none of them a CZII species.

A generalist detector should learn what a macromolecule looks like in a tomogram — its size, the missing wedge,
the CTF, crowding — from species it will never be asked to pick, so that the CZII species stay new classes in
every benchmark. Beside the twelve SHREC templates, :data:`FAMILIES` adds shapes no template covers: clusters of
two to six domains, elongated rods and dumbbells, rings, hollow cages and compact globules, with radii spread
log-uniformly over 40–200 Å, each kept more than 25 % in size away from the built-in CZII look-alike of the same
kind (:data:`CZII_LOOK_ALIKES`). Family ``k`` is drawn from ``default_rng([FAMILY_SEED, k])``, so every tomogram and
every machine renders the same family under the same name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from cryoet_monai.data.shapes import ellipsoid, fibonacci_sphere, shell, torus

FAMILY_SEED = 20261207
N_FAMILIES = 12
KINDS = ("domains", "rod", "dumbbell", "ring", "cage", "globule")
RADIUS_RANGE = (40.0, 200.0)  # Å, log-uniform; the SHREC templates bring the smaller ones (30–45 Å)
# The built-in CZII look-alikes (phantoms.PROCEDURAL: name -> extent in Å) by the kind of shape they are; a family of
# that kind keeps its radius at least SIZE_MARGIN away from theirs, so it is no stand-in for a held-out species.
CZII_LOOK_ALIKES = {
    "cage": {"apo-ferritin": 64.0, "virus-like-particle": 144.0},
    "rod": {"thyroglobulin": 100.0},
    "domains": {"beta-galactosidase": 80.0, "ribosome": 135.0},
    "globule": {"beta-amylase": 34.0, "ribosome": 135.0},
}
SIZE_MARGIN = 0.25


@dataclass(frozen=True)
class Family:
    """A procedural particle shape.

    Args:
        name: class name (``family-01`` ...).
        kind: one of :data:`KINDS`.
        radius: Å; every part lies within it (the bounding and the scoring radius).
        parts: ``("ellipsoid", centre, semi_axes)``, ``("shell", r_in, r_out)`` or ``("torus", ring, tube)``
            in the particle frame (Å); the density is their union.
    """

    name: str
    kind: str
    radius: float
    parts: tuple

    def density(self, p: np.ndarray, width: float) -> np.ndarray:
        """Density in [0, 1] at particle-frame points ``p`` (``[..., 3]``, Å) with an edge of ``width`` Å."""
        solids = {"ellipsoid": ellipsoid, "shell": shell, "torus": torus}
        return np.max([solids[kind](p, *args, width) for kind, *args in self.parts], axis=0)


def draw_family(index: int) -> Family:
    """Family ``index`` (deterministic)."""
    rng = np.random.default_rng([FAMILY_SEED, index])
    kind = KINDS[index % len(KINDS)]  # every kind at several sizes
    while True:
        radius = float(np.round(np.exp(rng.uniform(*np.log(RADIUS_RANGE))) / 5.0) * 5.0)
        if all(abs(radius / extent - 1.0) > SIZE_MARGIN for extent in CZII_LOOK_ALIKES.get(kind, {}).values()):
            break
    if kind == "domains":
        n = int(rng.integers(2, 7))
        size = radius * rng.uniform(0.35, 0.5)
        centres = fibonacci_sphere(n) @ Rotation.random(random_state=rng).as_matrix().T * (radius - size)
        parts = tuple(("ellipsoid", tuple(c), tuple(size * rng.uniform(0.7, 1.0, 3))) for c in centres)
    elif kind == "rod":
        thick = radius * rng.uniform(0.2, 0.4)
        parts = (("ellipsoid", (0.0, 0.0, 0.0), (radius, thick, thick * rng.uniform(0.8, 1.0))),)
    elif kind == "dumbbell":
        lobe = radius * rng.uniform(0.3, 0.45)
        waist = lobe * rng.uniform(0.3, 0.6)
        parts = (
            ("ellipsoid", (radius - lobe, 0.0, 0.0), (lobe, lobe, lobe)),
            ("ellipsoid", (lobe - radius, 0.0, 0.0), (lobe, lobe, lobe)),
            ("ellipsoid", (0.0, 0.0, 0.0), (radius - lobe, waist, waist)),
        )
    elif kind == "ring":
        tube = radius * rng.uniform(0.2, 0.35)
        parts = (("torus", radius - tube, tube),)
    elif kind == "cage":
        parts = (("shell", radius * rng.uniform(0.55, 0.75), radius),)
    else:  # globule
        parts = (("ellipsoid", (0.0, 0.0, 0.0), tuple(radius * np.sort(rng.uniform(0.6, 1.0, 3))[::-1])),)
    return Family(f"family-{index + 1:02d}", kind, radius, parts)


FAMILIES = tuple(draw_family(k) for k in range(N_FAMILIES))
"""The families of the ``generalist`` species set, by name ``family-01`` … ``family-12``."""
FAMILIES_BY_NAME = {f.name: f for f in FAMILIES}

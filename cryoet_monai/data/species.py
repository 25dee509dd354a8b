"""Particle species of the CZII challenge and the SHREC benchmarks (sizes, score weights, templates)."""

from __future__ import annotations

from dataclasses import dataclass

CZII_VOXEL_SIZE = 10.012  # Å, the challenge tomograms (630 × 630 × 184 voxels)


@dataclass(frozen=True)
class Species:
    """A particle species.

    Args:
        name: class name used in picks and manifests.
        radius: scoring radius in Å (the CZII value; also the synthetic particle size).
        weight: weight in the CZII score (0 = not scored).
        pdb: PDB id of the density template (file ``<pdb>.mrc`` in a template folder).
        difficulty: how the CZII organisers rate it: "easy", "hard" or "invisible".
    """

    name: str
    radius: float
    weight: float
    pdb: str
    difficulty: str


CZII_SPECIES = (
    Species("apo-ferritin", 60.0, 1.0, "8cpv", "easy"),
    Species("beta-amylase", 65.0, 0.0, "1fa2", "invisible"),
    Species("beta-galactosidase", 90.0, 2.0, "6drv", "hard"),
    Species("ribosome", 150.0, 1.0, "6qzp", "easy"),
    Species("thyroglobulin", 130.0, 2.0, "7n4y", "hard"),
    Species("virus-like-particle", 135.0, 1.0, "6n4v", "easy"),
)

SHREC_PDBS = ("1bxn", "1qvr", "1s3x", "1u6g", "2cg9", "3cf3", "3d2f", "3gl1", "3h84", "3qm1", "4cr2", "5mrc")


def czii_species(name: str) -> Species:
    """Look up a CZII species by class name."""
    for s in CZII_SPECIES:
        if s.name == name:
            return s
    raise KeyError(f"unknown CZII species '{name}' (known: {[s.name for s in CZII_SPECIES]})")

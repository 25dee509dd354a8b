"""Particle species of the CZII challenge and the SHREC benchmarks (sizes, score weights, templates)."""

from __future__ import annotations

from dataclasses import dataclass

from cryoet_monai.data.families import FAMILIES

CZII_VOXEL_SIZE = 10.012  # Å, the challenge tomograms (630 × 630 × 184 voxels)


@dataclass(frozen=True)
class Species:
    """A particle species.

    Args:
        name: class name used in picks and manifests.
        radius: scoring radius in Å (the CZII value; also the synthetic particle size).
        weight: weight in the CZII score (0 = not scored).
        pdb: PDB id of the density template (file ``<pdb>.mrc`` in a template folder).
        difficulty: how the CZII organisers rate it: "easy", "hard" or "invisible"; empty where no rating exists.
    """

    name: str
    radius: float
    weight: float
    pdb: str
    difficulty: str = ""


CZII_SPECIES = (
    Species("apo-ferritin", 60.0, 1.0, "8cpv", "easy"),
    Species("beta-amylase", 65.0, 0.0, "1fa2", "invisible"),
    Species("beta-galactosidase", 90.0, 2.0, "6drv", "hard"),
    Species("ribosome", 150.0, 1.0, "6qzp", "easy"),
    Species("thyroglobulin", 130.0, 2.0, "7n4y", "hard"),
    Species("virus-like-particle", 135.0, 1.0, "6n4v", "easy"),
)

# The twelve SHREC'19-'21 species, named by PDB id as in SHREC's ground truth. Radius: 99th percentile of the
# distance of the template's protein voxels (> 20 % of its maximum) from their centre of mass, rounded to 5 Å
# (``phantoms.template_radius``; on the CZII templates the same rule gives 151, 125 and 87 Å for ribosome,
# thyroglobulin and beta-galactosidase, whose CZII radii are 150, 130 and 90 Å).
# Weight 1 for all: SHREC ranks every class equally, so the score is the plain mean F-beta over the twelve.
SHREC_SPECIES = tuple(
    Species(pdb, radius, 1.0, pdb)
    for pdb, radius in (
        ("1bxn", 70.0),
        ("1qvr", 90.0),
        ("1s3x", 35.0),
        ("1u6g", 75.0),
        ("2cg9", 70.0),
        ("3cf3", 75.0),
        ("3d2f", 100.0),
        ("3gl1", 45.0),
        ("3h84", 45.0),
        ("3qm1", 30.0),
        ("4cr2", 135.0),
        ("5mrc", 160.0),
    )
)
SHREC_PDBS = tuple(s.pdb for s in SHREC_SPECIES)
# Pre-training species: the twelve SHREC templates and the procedural families; never a CZII species, so that the
# CZII classes stay new to a network pre-trained on them. Families have no template (``pdb`` empty).
GENERALIST_SPECIES = SHREC_SPECIES + tuple(Species(f.name, f.radius, 1.0, "") for f in FAMILIES)
SPECIES_SETS = {"czii": CZII_SPECIES, "shrec": SHREC_SPECIES, "generalist": GENERALIST_SPECIES}


def find_species(name: str) -> Species:
    """Look up a CZII, SHREC or procedural-family species by class name."""
    known = (*CZII_SPECIES, *GENERALIST_SPECIES)
    for s in known:
        if s.name == name:
            return s
    raise KeyError(f"unknown species '{name}' (known: {[s.name for s in known]})")


"""Particle and distractor densities for synthetic tomograms.

Densities are relative to the surrounding ice: 1 inside protein, 0 in ice, positive = denser than ice
(bright, like the templates). A particle is either a density template (``<pdb>.mrc`` at any voxel size,
rescaled here) or a built-in procedural look-alike of a CZII species with about the right mass and shape,
so that a fresh machine needs no files, or a procedural family of the pre-training set (:mod:`.families`). Shapes are evaluated in Å in the particle's own frame and rendered
directly on the rotated output grid (no interpolation of a rendered copy).

Orientation: a rotation matrix ``R`` (x-y-z) maps particle-frame coordinates to tomogram coordinates.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from cryoet_monai.data.families import FAMILIES_BY_NAME
from cryoet_monai.data.readers import read_image
from cryoet_monai.data.shapes import ellipsoid, fibonacci_sphere, shell, soft_inside
from cryoet_monai.data.species import find_species

LIPID_HEAD_DENSITY = 0.8  # relative to protein; lipid head groups are denser than ice
LIPID_TAIL_DENSITY = -0.25  # the hydrocarbon core is lighter than ice
GOLD_DENSITY = 10.0  # gold's potential excess over ice is about ten times that of protein


def _apo_ferritin(p, w):
    return shell(p, 40.0, 62.0, w)  # 24-mer cage, 12 nm across, 8 nm cavity


def _virus_like_particle(p, w):
    body = shell(p, 106.0, 128.0, w)  # about the mass of the 6n4v template
    bumps = [ellipsoid(p, 130.0 * d, (14.0, 14.0, 14.0), w) for d in fibonacci_sphere(72)]
    return np.maximum(body, np.max(bumps, axis=0))


def _ribosome(p, w):
    large = ellipsoid(p, (0.0, 0.0, -30.0), (100.0, 95.0, 85.0), w)
    small = ellipsoid(p, (15.0, 0.0, 75.0), (85.0, 55.0, 45.0), w)
    return np.maximum(large, small)


def _thyroglobulin(p, w):
    return np.maximum(
        ellipsoid(p, (0.0, 24.0, 0.0), (95.0, 28.0, 30.0), w), ellipsoid(p, (0.0, -24.0, 0.0), (95.0, 28.0, 30.0), w)
    )


def _beta_galactosidase(p, w):
    lobes = [ellipsoid(p, (sx * 36.0, sy * 30.0, 0.0), (32.0, 32.0, 32.0), w) for sx in (-1, 1) for sy in (-1, 1)]
    return np.max(lobes, axis=0)


def _beta_amylase(p, w):
    return ellipsoid(p, (0.0, 0.0, 0.0), (32.0, 26.0, 24.0), w)


# name -> (density function of particle-frame Å coordinates, bounding radius in Å)
PROCEDURAL = {
    "apo-ferritin": (_apo_ferritin, 64.0),
    "virus-like-particle": (_virus_like_particle, 144.0),
    "ribosome": (_ribosome, 135.0),
    "thyroglobulin": (_thyroglobulin, 100.0),
    "beta-galactosidase": (_beta_galactosidase, 80.0),
    "beta-amylase": (_beta_amylase, 34.0),
}


def _box_grid(radius: float, voxel_size: float, offset_zyx) -> np.ndarray:
    """Voxel offsets (Å, x-y-z, shape ``[z, y, x, 3]``) of a cube around a sub-voxel centre."""
    half = int(np.ceil(radius / voxel_size)) + 1
    axis = np.arange(-half, half + 1, dtype=float)
    z, y, x = np.meshgrid(axis - offset_zyx[0], axis - offset_zyx[1], axis - offset_zyx[2], indexing="ij")
    return np.stack([x, y, z], axis=-1) * voxel_size


def procedural_particle(name: str, voxel_size: float, rotation: np.ndarray, offset_zyx=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Render a built-in particle: a look-alike of a CZII species or a procedural family (:mod:`.families`).

    Args:
        name: CZII class name (``apo-ferritin``, ``ribosome``, ...) or family name (``family-01``, ...).
        voxel_size: Å per voxel of the output.
        rotation: 3 × 3 matrix (x-y-z) from the particle frame to the tomogram frame.
        offset_zyx: sub-voxel offset of the particle centre from the box centre, in voxels.

    Returns:
        A cubic ``[z, y, x]`` density box of odd side centred (up to ``offset_zyx``) on the particle.
    """
    if name in FAMILIES_BY_NAME:
        family = FAMILIES_BY_NAME[name]
        shape_fn, radius = family.density, family.radius
    elif name in PROCEDURAL:
        shape_fn, radius = PROCEDURAL[name]
    else:
        raise KeyError(f"no procedural model for '{name}' (known: {sorted(PROCEDURAL) + sorted(FAMILIES_BY_NAME)})")
    points = _box_grid(radius, voxel_size, offset_zyx) @ np.asarray(rotation)  # row vectors: R^T p
    return shape_fn(points, voxel_size).astype(np.float32)


@lru_cache(maxsize=32)
def load_template(path: str, voxel_size: float) -> np.ndarray:
    """Read a density template and resample it to ``voxel_size``, protein ≈ 1, ice 0, centred in its box.

    The file's own voxel size comes from its header. Values are scaled so that the mean over the
    voxels above 20 % of the maximum (the protein interior) is 1, whatever the file's units; the
    centre of mass of those voxels is moved to the box centre.

    Args:
        path: MRC density map, bright = protein.
        voxel_size: target Å per voxel.
    """
    density, source_size = read_image(path)
    if density.ndim != 3:
        raise ValueError(f"{path}: a template must be a 3D density, got shape {density.shape}")
    peak = float(density.max())
    if not peak > 0:
        raise ValueError(f"{path}: template has no positive density (max {peak}); expected bright protein")
    protein = density > 0.2 * peak
    density = np.clip(density, 0.0, None) / float(density[protein].mean())
    # centre the protein in the box: the box centre is where the particle is picked
    centre = ndimage.center_of_mass(protein)
    density = ndimage.shift(density, (np.asarray(density.shape) - 1) / 2.0 - centre, order=1)
    zoom = source_size / voxel_size
    if zoom < 1:  # anti-alias before shrinking
        density = ndimage.gaussian_filter(density, sigma=0.4 / zoom)
    return ndimage.zoom(density, zoom, order=1).astype(np.float32)


def rotate_template(template: np.ndarray, rotation: np.ndarray, offset_zyx=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Rotate a template (already at the output voxel size) about its centre.

    Args:
        template: cubic ``[z, y, x]`` density.
        rotation: 3 × 3 matrix (x-y-z) from the particle frame to the tomogram frame.
        offset_zyx: sub-voxel offset of the particle centre from the output box centre, in voxels.
    """
    side = max(template.shape) | 1  # templates keep their protein inside the inscribed sphere
    flip = np.eye(3)[::-1]  # x-y-z <-> z-y-x
    matrix = flip @ np.asarray(rotation).T @ flip  # output zyx offset -> template zyx offset
    centre_in = (np.asarray(template.shape) - 1) / 2.0
    centre_out = (side - 1) / 2.0 + np.asarray(offset_zyx, dtype=float)
    offset = centre_in - matrix @ centre_out
    return ndimage.affine_transform(template, matrix, offset=offset, output_shape=(side,) * 3, order=1, mode="constant")


def template_radius(path) -> float:
    """Particle radius (Å) of a density template: 99th percentile of the distance of the protein voxels
    (above 20 % of the maximum) from their centre of mass.

    Args:
        path: MRC density map, bright = protein.
    """
    density, voxel_size = read_image(path)
    points = np.argwhere(density > 0.2 * density.max()) * float(voxel_size)
    return float(np.percentile(np.linalg.norm(points - points.mean(axis=0), axis=1), 99))


def template_path(templates, species_name: str) -> Path:
    """``<templates>/<pdb>.mrc`` for a CZII or SHREC species, with a clear error when it is missing."""
    path = Path(templates) / f"{find_species(species_name).pdb}.mrc"
    if not path.is_file():
        raise FileNotFoundError(f"template for '{species_name}' not found: {path} (expected <pdb>.mrc in {templates})")
    return path


def particle_density(name: str, voxel_size: float, rotation: np.ndarray, offset_zyx=(0.0, 0.0, 0.0), templates=None):
    """A rotated particle box: from ``templates`` (folder of ``<pdb>.mrc``) when given, else procedural; families are
    always procedural."""
    if templates is None or name in FAMILIES_BY_NAME:
        return procedural_particle(name, voxel_size, rotation, offset_zyx)
    template = load_template(str(template_path(templates, name)), float(voxel_size))
    return rotate_template(template, rotation, offset_zyx)


def paste(volume: np.ndarray, box: np.ndarray, centre_zyx) -> None:
    """Add ``box`` into ``volume`` (in place) with the box centre at integer voxel ``centre_zyx``, clipped at the edges."""
    half = np.asarray(box.shape) // 2
    lo = np.asarray(centre_zyx, dtype=int) - half
    hi = lo + np.asarray(box.shape)
    dst_lo, dst_hi = np.maximum(lo, 0), np.minimum(hi, volume.shape)
    if np.any(dst_hi <= dst_lo):
        return
    src = tuple(slice(a - l, b - l) for a, b, l in zip(dst_lo, dst_hi, lo))
    volume[tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi))] += box[src]


def render_particle(volume: np.ndarray, name: str, centre_zyx, voxel_size: float, rotation, templates=None) -> None:
    """Add one particle at a sub-voxel position (voxel units, ``[z, y, x]``) into ``volume``."""
    centre = np.asarray(centre_zyx, dtype=float)
    nearest = np.round(centre)
    paste(volume, particle_density(name, voxel_size, rotation, centre - nearest, templates), nearest)


def _smoothed_width(sigma: float, voxel_size: float) -> float:
    return float(np.hypot(sigma, 0.5 * voxel_size))  # a profile finer than a voxel is blurred to it


def vesicle(radius: float, voxel_size: float, offset_zyx=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A lipid-vesicle box: two dense head-group leaflets 40 Å apart around a lighter hydrocarbon core.

    Args:
        radius: mid-membrane radius in Å.
        voxel_size: Å per voxel.
        offset_zyx: sub-voxel offset of the centre, in voxels.
    """
    r = np.linalg.norm(_box_grid(radius + 40.0, voxel_size, offset_zyx), axis=-1)
    head, tail = _smoothed_width(5.0, voxel_size), _smoothed_width(7.0, voxel_size)
    leaflets = sum(np.exp(-0.5 * ((r - radius - s) / head) ** 2) for s in (-20.0, 20.0))
    # Gaussian profiles scaled so that each integrates across the membrane to the same mass at any voxel size
    profile = LIPID_HEAD_DENSITY * (5.0 / head) * leaflets + LIPID_TAIL_DENSITY * (7.0 / tail) * np.exp(
        -0.5 * ((r - radius) / tail) ** 2
    )
    return profile.astype(np.float32)


def gold_bead(radius: float, voxel_size: float, offset_zyx=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A gold fiducial: a very dense solid sphere of ``radius`` Å."""
    r = np.linalg.norm(_box_grid(radius, voxel_size, offset_zyx), axis=-1)
    return (GOLD_DENSITY * soft_inside(r - radius, voxel_size)).astype(np.float32)

"""Synthetic cryo-EM micrographs: projections of randomly oriented particles with CTF, ice and noise.

Each micrograph holds non-overlapping particles (centres at least two radii apart) in random
orientations, optionally mixed with unannotated decoys of another density. A particle is the projection along Z of either

* a density template (``templates=DIR``: an MRC map, e.g. ``/work/shared/data/templates_10A/1bxn.mrc``),
  rotated with trilinear interpolation and resampled to the micrograph's pixel size, or
* a built-in procedural density: a rigid cluster of Gaussian subunits (fixed by ``seed``) whose
  projection is rendered analytically.

The projected potential is filtered by a weak-phase CTF (``-sin χ`` with amplitude contrast and a
B-factor envelope; defocus per micrograph) as the detector records it, protein dark (``contrast="bright"``
writes the inverted micrographs, and the manifest says so), placed on an ice gradient (a random plane plus a smooth low-frequency field) and buried in white Gaussian
noise of ``snr`` (signal variance / noise variance). Outputs: ``micrographs/<id>.mrc`` (pixel size in
the header), ``picks/<id>.csv`` (2D picks in pixels) and ``manifest.json`` (first micrograph
``training``, the rest ``test``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cryoet_monai.data.contrast import check_contrast
from cryoet_monai.data.manifest import Item, Manifest, ParticleClass
from cryoet_monai.data.picks import make_picks, write_picks
from cryoet_monai.data.readers import read_mrc, write_mrc

ELECTRON_WAVELENGTH_300KV = 0.01969  # Å


def place_particles(shape, radius: float, count: int, rng: np.random.Generator, margin: float | None = None) -> np.ndarray:
    """Up to ``count`` centres ``(N, 2)`` in ``x, y`` pixels, at least ``2 · radius`` apart (random sequential adsorption)."""
    margin = radius if margin is None else margin
    points: list[np.ndarray] = []
    for _ in range(count * 50):
        if len(points) == count:
            break
        p = rng.uniform([margin, margin], [shape[1] - 1 - margin, shape[0] - 1 - margin])
        if all(np.hypot(*(p - q)) >= 2 * radius for q in points):
            points.append(p)
    return np.asarray(points).reshape(-1, 2)


def procedural_subunits(radius: float, rng: np.random.Generator, num_subunits: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A rigid cluster of Gaussian subunits: ``(K, 3)`` offsets (px) and ``(K,)`` σ, inside ``radius``."""
    sigma = np.full(num_subunits, radius / 3.0)
    directions = rng.normal(size=(num_subunits, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    offsets = directions * (radius - sigma[:, None] * 1.2) * rng.uniform(0.4, 1.0, size=(num_subunits, 1))
    return offsets, sigma


def project_subunits(offsets: np.ndarray, sigma: np.ndarray, rotation: Rotation, size: int) -> np.ndarray:
    """Projection along Z of rotated Gaussian subunits on a ``size × size`` grid centred at ``(size − 1) / 2``."""
    rotated = rotation.apply(offsets)
    axis = np.arange(size) - (size - 1) / 2.0
    image = np.zeros((size, size))
    for (x, y, _), s in zip(rotated, sigma):
        image += np.exp(-((axis[:, None] - y) ** 2 + (axis[None, :] - x) ** 2) / (2 * s * s)) * s  # ∫ over z ∝ σ
    return image


def project_template(volume: np.ndarray, rotation: Rotation, zoom: float) -> np.ndarray:
    """Projection along Z of a density map rotated about its centre, resampled by ``zoom`` (template → micrograph px)."""
    centre = (np.asarray(volume.shape) - 1) / 2.0
    matrix = rotation.as_matrix()[::-1, ::-1].T  # rotation in (z, y, x) index order, output → input
    rotated = ndimage.affine_transform(volume, matrix, offset=centre - matrix @ centre, order=1, mode="constant")
    projection = rotated.sum(axis=0)
    return ndimage.zoom(projection, zoom, order=1) if zoom != 1 else projection


def template_radius(volume: np.ndarray, voxel_size: float, pixel_size: float) -> float:
    """Radius (micrograph px) of the disc with the area of the template's projected footprint (> 10 % of its maximum)."""
    projection = volume.sum(axis=0)
    area = float((projection > 0.1 * projection.max()).sum()) * (voxel_size / pixel_size) ** 2
    return float(np.sqrt(area / np.pi))


def ctf(shape, pixel_size: float, defocus_um: float, amplitude_contrast: float = 0.07, spherical_aberration_mm: float = 2.7, bfactor: float = 50.0) -> np.ndarray:
    """Weak-phase CTF ``−(√(1−A²) sin χ + A cos χ) · exp(−B k² / 4)`` on the FFT grid of ``shape``."""
    ky = np.fft.fftfreq(shape[0], d=pixel_size)
    kx = np.fft.fftfreq(shape[1], d=pixel_size)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    wavelength, defocus, cs = ELECTRON_WAVELENGTH_300KV, defocus_um * 1e4, spherical_aberration_mm * 1e7
    chi = np.pi * wavelength * defocus * k2 - 0.5 * np.pi * cs * wavelength**3 * k2**2
    a = amplitude_contrast
    return -(np.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi)) * np.exp(-bfactor * k2 / 4.0)


def ice_gradient(shape, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A random tilted plane plus a smooth random field, scaled to standard deviation ``strength``."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    field = rng.normal() * xx + rng.normal() * yy
    field = field + ndimage.gaussian_filter(rng.normal(size=shape), sigma=max(shape) / 8.0) * max(shape) / 8.0
    field -= field.mean()
    return field * strength / (field.std() + 1e-12)


def render_micrograph(
    shape, placements, rng: np.random.Generator, pixel_size: float, defocus_um: float, snr: float, ice: float, contrast: str = "dark"
) -> np.ndarray:
    """One micrograph: each ``(x, y, particle)`` of ``placements`` pastes ``particle(rotation)`` (a 2D projection
    whose centre is its middle, ``(size − 1) / 2``) at ``x, y``; then CTF (protein dark, or inverted for
    ``contrast="bright"``), ice gradient and noise."""
    potential = np.zeros(shape)
    for x, y, particle in placements:
        stamp = particle(Rotation.random(random_state=rng))
        size = stamp.shape[0]
        corner = np.array([y, x]) - (size - 1) / 2.0
        y0, x0 = np.floor(corner).astype(int)
        stamp = ndimage.shift(stamp, corner - [y0, x0], order=1)
        ys, xs = slice(max(y0, 0), min(y0 + size, shape[0])), slice(max(x0, 0), min(x0 + size, shape[1]))
        potential[ys, xs] += stamp[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    signal = np.real(np.fft.ifft2(np.fft.fft2(potential) * ctf(shape, pixel_size, defocus_um)))  # I − 1 ∝ V ⊛ CTF
    if contrast == "bright":
        signal = -signal
    signal = signal / (signal.std() + 1e-12)
    noise = rng.normal(scale=1.0 / np.sqrt(snr), size=shape)
    return (signal + ice_gradient(shape, rng, ice) + noise).astype(np.float32)


def _particle_maker(templates, template, radius, pixel_size, rng):
    """``(projector, radius_px)`` for a template file of ``templates`` or, without templates, a procedural density."""
    if templates is not None:
        maps = sorted(Path(templates).glob("*.mrc"))
        chosen = [m for m in maps if m.name == template] if template else maps[:1]
        if not chosen:
            raise FileNotFoundError(f"{templates}: no template {template or '*.mrc'} (found {[m.name for m in maps]})")
        volume, voxel_size = read_mrc(chosen[0])
        volume = np.clip(volume, 0, None)
        return (lambda rotation: project_template(volume, rotation, voxel_size / pixel_size)), template_radius(volume, voxel_size, pixel_size)
    offsets, sigma = procedural_subunits(radius, rng)
    size = int(2 * np.ceil(1.5 * radius) + 1)
    return (lambda rotation: project_subunits(offsets, sigma, rotation, size)), float(radius)


def synthesize_micrographs(
    out_dir,
    num_micrographs: int = 4,
    shape=(512, 512),
    radius: float = 16.0,
    num_particles: int = 60,
    templates=None,
    template: str | None = None,
    pixel_size: float = 4.0,
    defocus_um: tuple[float, float] = (1.0, 2.5),
    snr: float = 0.3,
    ice: float = 0.5,
    particle_type: str = "particle",
    num_decoys: int = 0,
    decoy_template: str | None = None,
    decoy_radius: float = 10.0,
    seed: int = 0,
    contrast: str = "dark",
) -> Path:
    """Write synthetic micrographs, their picks and a 2D manifest; return the manifest path.

    Args:
        out_dir: output folder.
        num_micrographs: how many micrographs (the first is ``training``, the others ``test``).
        shape: ``(height, width)`` in pixels.
        radius: particle radius in pixels for the procedural density (templates set their own radius).
        num_particles: particles per micrograph (fewer when they do not fit).
        templates: folder of density maps (MRC); None for the procedural density.
        template: file name in ``templates`` (default: the first in sorted order).
        pixel_size: Å per micrograph pixel.
        defocus_um: range of the per-micrograph defocus in µm.
        snr: signal variance over noise variance.
        ice: standard deviation of the ice gradient relative to the signal.
        particle_type: class name.
        num_decoys: unannotated distractor particles per micrograph (another density: contaminants, other
            complexes); a picker must tell them from the class.
        decoy_template: file name in ``templates`` of the decoy density (procedural decoys without templates).
        decoy_radius: radius in pixels of procedural decoys.
        seed: random seed (everything is reproducible from it).
        contrast: ``"dark"`` (protein darker than the ice, as recorded) or ``"bright"`` (inverted).
    """
    check_contrast(contrast, "synthesize_micrographs")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    particle, radius = _particle_maker(templates, template, radius, pixel_size, rng)
    decoy, decoy_radius = _particle_maker(templates, decoy_template, decoy_radius, pixel_size, rng) if num_decoys else (None, 0.0)
    splits: dict[str, list[Item]] = {"training": [], "test": []}
    for index in range(num_micrographs):
        item_id = f"synth_{index:03d}"
        centres = place_particles(shape, max(radius, decoy_radius), num_particles + num_decoys, rng)
        kinds = rng.permutation(np.arange(len(centres)) < min(num_particles, len(centres)))
        placements = [(x, y, particle if is_particle else decoy) for (x, y), is_particle in zip(centres, kinds)]
        image = render_micrograph(shape, placements, rng, pixel_size, rng.uniform(*defocus_um), snr, ice, contrast)
        image_path = write_mrc(out / "micrographs" / f"{item_id}.mrc", image, pixel_size)
        picks_path = write_picks(make_picks(item_id, particle_type, centres[kinds], ndim=2), out / "picks" / f"{item_id}.csv")
        item = Item(item_id, image_path.resolve(), picks_path.resolve(), voxel_size=pixel_size, contrast=contrast)
        splits["training" if index == 0 else "test"].append(item)
    particle_class = ParticleClass(particle_type, round(float(radius), 2))
    manifest = Manifest(f"synthetic-micrographs-{seed}", 2, pixel_size, [particle_class], splits, contrast=contrast)
    return manifest.save(out / "manifest.json")

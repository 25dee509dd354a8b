"""Synthetic CZII-like (or SHREC-like) tomograms with ground-truth picks and a manifest (``cryoet-monai synth``).

Each tomogram is a slab of ice holding the six CZII species at their true sizes in random 3D
orientations (density templates when ``templates`` is given, procedural look-alikes otherwise), placed
like a real CZII run (``layout``) or packed without overlap at CZII-like counts, plus distractors:
lipid vesicles, gold fiducials at the ice surfaces and an ice-thickness gradient. The microscope
(:mod:`cryoet_monai.data.microscope`) turns the potential into a limited-angle tilt series with CTF and
dose noise and reconstructs it by weighted back-projection. Output: ``tomograms/<id>.mrc`` (normalised
float32, protein dark as in real reconstructions unless ``contrast="bright"``, voxel size in the header), ``picks/<id>.csv`` (Å, score 1, also written for
unlabeled items, which the manifest lists without picks), ``manifest.json`` and ``synthesis.json``
(the resolved settings; a re-run with the same settings skips finished tomograms).

The ``shrec`` preset holds the twelve SHREC'19-'21 species instead (class names are PDB ids, all score
weights 1), packed at random, 40 of each per SHREC-sized volume; it needs ``templates`` (there are no
procedural look-alikes of them). The ``generalist`` preset, for pre-training, holds those twelve and the twelve
procedural families of :mod:`~cryoet_monai.data.families` at half that density — never a CZII species.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cryoet_monai import __version__
from cryoet_monai.data import phantoms
from cryoet_monai.data.atomic import atomic_path
from cryoet_monai.data.contrast import check_contrast
from cryoet_monai.data.manifest import SPLITS, Item, Manifest, ParticleClass
from cryoet_monai.data.microscope import Microscope, simulate_tomogram
from cryoet_monai.data.picks import make_picks, read_picks, write_picks
from cryoet_monai.data.readers import image_info, write_mrc
from cryoet_monai.data.species import CZII_SPECIES, CZII_VOXEL_SIZE, SPECIES_SETS, find_species

CZII_SHAPE_XYZ = (630, 630, 184)
# mean particles per CZII training tomogram (PROVENANCE.md table)
CZII_MEAN_COUNTS = {
    "apo-ferritin": 53.6,
    "beta-amylase": 12.4,
    "beta-galactosidase": 16.0,
    "ribosome": 47.3,
    "thyroglobulin": 35.9,
    "virus-like-particle": 16.1,
}
SHREC_SHAPE_XYZ, SHREC_VOXEL_SIZE = (512, 512, 200), 10.0  # a SHREC 2021 tomogram
SHREC_COUNT_PER_CLASS = 40  # our choice: every class equally often (as in SHREC), 480 particles per SHREC volume
# the seven CZII training runs, split as the lead's benchmark uses them
CZII_RUN_SPLITS = {
    "training": ["TS_5_4", "TS_69_2", "TS_6_4"],
    "unlabeled": ["TS_6_6"],
    "validation": ["TS_73_6"],
    "test": ["TS_86_3", "TS_99_9"],
}

_COMMON = {
    "species": "czii",  # species set (cryoet_monai.data.species.SPECIES_SETS)
    "ice_fraction": 0.85,  # ice thickness / Z extent (mean)
    "ice_gradient": 0.15,  # relative thickness change across X
    "protein_potential": 2.5,  # V above ice for density 1 (protein ~7 V, vitreous ice ~4.5 V)
    "crowding": 1.0,  # multiplies the CZII particle counts per volume
    "vesicles": (1, 3),  # min, max per tomogram
    "vesicle_radius": (250.0, 600.0),  # Å, mid-membrane
    "gold": (2, 6),  # min, max fiducials per tomogram
    "gold_radius": 50.0,  # Å (10 nm beads)
    "ice_texture": 0.3,  # std of the ice's structural noise (15 Å Gaussian field), relative to protein
    "contrast": "dark",  # protein darker than ice, as reconstructed; "bright" writes the inverted tomograms
    "decoys": (0, 0),  # min, max unannotated SHREC-species proteins per tomogram (look-alikes; need templates)
}
_CZII_BIN2 = {"shape": (315, 315, 92), "voxel_size": 2 * CZII_VOXEL_SIZE}  # the CZII tomograms binned by 2
PRESETS: dict[str, dict] = {
    "tiny": {
        **_COMMON,
        "shape": (64, 64, 32),
        "voxel_size": 25.0,
        "splits": {"training": 1, "unlabeled": 1, "validation": 1, "test": 1},
        "vesicles": (0, 1),
        "gold": (1, 2),
    },
    "czii-bin2": {
        **_COMMON,
        **_CZII_BIN2,
        "splits": {s: len(r) for s, r in CZII_RUN_SPLITS.items()},
    },
    "demo": {  # one czii-bin2 test tomogram: what `cryoet-monai demo` picks
        **_COMMON,
        **_CZII_BIN2,
        "splits": {"test": 1},
    },
    "czii": {
        **_COMMON,
        "shape": CZII_SHAPE_XYZ,
        "voxel_size": CZII_VOXEL_SIZE,
        "splits": {s: len(r) for s, r in CZII_RUN_SPLITS.items()},
        "slab": 32,
    },
    "generalist": {  # pre-training: SHREC templates and procedural families, never a CZII species
        **_COMMON,
        "species": "generalist",
        **_CZII_BIN2,
        "splits": {s: len(r) for s, r in CZII_RUN_SPLITS.items()},
        "crowding": 0.5,  # 24 classes at SHREC's per-class density would pack the ice twice as full
    },
    "shrec": {
        **_COMMON,
        "species": "shrec",
        "shape": (256, 256, 100),  # the physical extent of a SHREC tomogram at 20 Å/voxel
        "voxel_size": 2 * SHREC_VOXEL_SIZE,
        "splits": {s: len(r) for s, r in CZII_RUN_SPLITS.items()},
    },
}
"""Presets. ``shape`` is ``(x, y, z)`` voxels; ``voxel_size`` Å; ``splits`` items per split. Any key of a preset or
field of :class:`~cryoet_monai.data.microscope.Microscope` (``tilt_min``, ``tilt_max``, ``tilt_step``, ``dose``,
``defocus``, ...) can be overridden, and ``n_tomograms`` replaces ``splits`` by a CZII-like division."""

MICROSCOPE_FIELDS = {f.name for f in dataclasses.fields(Microscope)}


def split_sizes(n_tomograms: int) -> dict[str, int]:
    """Divide ``n`` tomograms like the CZII runs (3 : 1 : 1 : 2), training first, at least one in training."""
    if n_tomograms < 1:
        raise ValueError(f"n_tomograms must be at least 1, got {n_tomograms}")
    sizes = {"training": 0, "unlabeled": 0, "validation": 0, "test": 0}
    for k in range(n_tomograms):
        sizes[("training", "test", "validation", "unlabeled", "training", "test", "training")[k % 7]] += 1
    return sizes


def resolve_settings(preset: str, overrides: dict) -> dict:
    """The preset with ``overrides`` applied and checked."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}' (known: {sorted(PRESETS)})")
    settings = dict(PRESETS[preset])
    unknown = set(overrides) - set(settings) - MICROSCOPE_FIELDS - {"n_tomograms"}
    if unknown:
        raise ValueError(
            f"unknown setting(s) {sorted(unknown)}; known: {sorted(set(settings) | MICROSCOPE_FIELDS | {'n_tomograms'})}"
        )
    settings.update(overrides)
    if "n_tomograms" in settings:
        settings["splits"] = split_sizes(int(settings.pop("n_tomograms")))
    shape = tuple(int(v) for v in settings["shape"])
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be (x, y, z) with at least 8 voxels per axis, got {settings['shape']}")
    if settings["species"] not in SPECIES_SETS:
        raise ValueError(f"unknown species set '{settings['species']}' (known: {sorted(SPECIES_SETS)})")
    check_contrast(settings["contrast"], "synth")
    if not float(settings["voxel_size"]) > 0:
        raise ValueError(f"voxel_size must be positive Å, got {settings['voxel_size']}")
    settings["shape"], settings["voxel_size"] = shape, float(settings["voxel_size"])
    return settings


def assign_items(splits: dict[str, int], layout=None) -> dict[str, list[str]]:
    """Item ids per split: CZII run names from ``layout`` (the benchmark's split of the seven runs first), else ``tomo_NNN``."""
    if layout is None:
        names = iter(f"tomo_{k:03d}" for k in range(sum(splits.values())))
        return {s: [next(names) for _ in range(splits.get(s, 0))] for s in SPLITS}
    runs = sorted(p.name for p in Path(layout).iterdir() if p.is_dir() and any(p.glob("*.json")))
    if sum(splits.values()) > len(runs):
        raise ValueError(f"{layout}: {len(runs)} runs with picks, but {sum(splits.values())} tomograms requested")
    chosen = {s: [r for r in CZII_RUN_SPLITS[s] if r in runs][: splits.get(s, 0)] for s in SPLITS}
    pool = [r for r in runs if not any(r in c for c in chosen.values())]  # other runs, in name order
    for split in SPLITS:
        while len(chosen[split]) < splits.get(split, 0):
            chosen[split].append(pool.pop(0))
    return chosen


def read_layout(run_dir, shape_xyz, voxel_size) -> pd.DataFrame:
    """Particle positions of one CZII run (copick JSON per class), scaled from the CZII volume to this one.

    Args:
        run_dir: folder with ``<class>.json`` copick picks (Å, CZII volume 630 × 630 × 184 at 10.012 Å).
        shape_xyz: target volume in voxels.
        voxel_size: target Å per voxel.

    Returns:
        A table ``particle_type, x, y, z`` in Å of the target volume.
    """
    scale = np.asarray(shape_xyz) * voxel_size / (np.asarray(CZII_SHAPE_XYZ) * CZII_VOXEL_SIZE)
    rows = []
    for species in CZII_SPECIES:
        path = Path(run_dir) / f"{species.name}.json"
        if not path.is_file():
            continue
        try:
            points = json.loads(path.read_text()).get("points") or []
            xyz = np.array([[p["location"][a] for a in "xyz"] for p in points], dtype=float).reshape(-1, 3)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a copick picks file with points[].location {{x, y, z}} ({err})") from err
        xyz = np.clip(xyz * scale, 0.0, (np.asarray(shape_xyz) - 1) * voxel_size)
        rows.append(pd.DataFrame({"particle_type": species.name, "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}))
    if not rows:
        raise ValueError(f"{run_dir}: no <class>.json picks of the CZII species found")
    return pd.concat(rows, ignore_index=True)


def ice_slab(shape_xyz, voxel_size, settings, rng) -> tuple[np.ndarray, np.ndarray]:
    """Bottom and top Z (Å) of the ice at every ``[y, x]``: a slightly tilted slab, thicker on one side."""
    nx, ny, nz = shape_xyz
    x = (np.arange(nx) / max(nx - 1, 1) - 0.5)[None, :] * np.ones((ny, 1))
    thickness = settings["ice_fraction"] * nz * voxel_size * (1 + settings["ice_gradient"] * x * rng.choice([-1, 1]))
    thickness = np.minimum(thickness, nz * voxel_size)
    slack = nz * voxel_size - thickness.max()
    centre = 0.5 * nz * voxel_size + rng.uniform(-1, 1) * slack * x  # |x| <= 0.5 keeps the slab inside
    return centre - thickness / 2, centre + thickness / 2


def bounding_radius(name: str) -> float:
    """Å around a particle's centre that holds its density (procedural extent for CZII species, else the class radius)."""
    return phantoms.PROCEDURAL[name][1] if name in phantoms.PROCEDURAL else find_species(name).radius


def mean_counts(species_set: str, extent_xyz) -> dict[str, float]:
    """Expected particles per class in a volume of ``extent_xyz`` Å: CZII counts, or SHREC's equal share."""
    volume = np.prod(np.asarray(extent_xyz, dtype=float))
    if species_set == "czii":
        ratio = volume / np.prod(np.asarray(CZII_SHAPE_XYZ) * CZII_VOXEL_SIZE)
        return {name: count * ratio for name, count in CZII_MEAN_COUNTS.items()}
    ratio = volume / np.prod(np.asarray(SHREC_SHAPE_XYZ) * SHREC_VOXEL_SIZE)
    return {s.name: SHREC_COUNT_PER_CLASS * ratio for s in SPECIES_SETS[species_set]}


def pack_particles(shape_xyz, voxel_size, bottom, top, settings, rng) -> pd.DataFrame:
    """Random non-overlapping particles of the preset's species (largest first), inside the ice slab."""
    extent = np.asarray(shape_xyz) * voxel_size
    counts = mean_counts(settings["species"], extent)
    order = sorted(SPECIES_SETS[settings["species"]], key=lambda s: -bounding_radius(s.name))
    centres, radii, rows = np.zeros((0, 3)), np.zeros(0), []
    for species in order:
        radius = bounding_radius(species.name)
        wanted = max(1, rng.poisson(counts[species.name] * settings["crowding"]))
        placed = 0
        for _ in range(200 * wanted):
            if placed == wanted:
                break
            x, y = rng.uniform(0.5 * radius, extent[:2] - 0.5 * radius)
            iy, ix = min(int(y / voxel_size), bottom.shape[0] - 1), min(int(x / voxel_size), bottom.shape[1] - 1)
            lo, hi = bottom[iy, ix] + radius, top[iy, ix] - radius
            if hi <= lo:
                continue
            centre = np.array([x, y, rng.uniform(lo, hi)])
            if len(centres) and np.any(np.linalg.norm(centres - centre, axis=1) < radii + radius + 5.0):
                continue
            centres, radii = np.vstack([centres, centre]), np.append(radii, radius)
            rows.append((species.name, *centre))
            placed += 1
    return pd.DataFrame(rows, columns=["particle_type", "x", "y", "z"])


def place_decoys(shape_xyz, voxel_size, particles: pd.DataFrame, bottom, top, settings, rng, templates=None) -> pd.DataFrame:
    """Unannotated proteins of other species (the SHREC set) in free spots of the ice: what a picker must not pick.

    Args:
        shape_xyz: volume in voxels.
        voxel_size: Å per voxel.
        particles: the annotated particles (Å), which decoys do not touch.
        bottom: ice bottom (Å) at every ``[y, x]``.
        top: ice top (Å).
        settings: resolved preset; ``decoys`` is the (min, max) count.
        rng: random generator.
        templates: folder holding the SHREC ``<pdb>.mrc`` maps (none are placed without it).
    """
    low, high = settings["decoys"]
    count = int(rng.integers(low, high + 1)) if high > 0 else 0
    columns = ["particle_type", "x", "y", "z"]
    if not count:
        return pd.DataFrame(columns=columns)
    if templates is None:
        raise ValueError("decoys are SHREC-species proteins and need --templates (a folder with their <pdb>.mrc maps)")
    xyz = particles[["x", "y", "z"]].to_numpy(dtype=float)
    radii = np.array([bounding_radius(n) for n in particles["particle_type"]])
    extent = np.asarray(shape_xyz) * voxel_size
    rows = []
    for species in rng.choice(np.array(SPECIES_SETS["shrec"], dtype=object), count):
        z_range = (float(bottom.max()) + species.radius, float(top.min()) - species.radius)
        centre = _free_spot(extent, xyz, radii, species.radius, z_range, rng)
        if centre is not None:
            rows.append((species.name, *centre))
            xyz, radii = np.vstack([xyz, centre]), np.append(radii, species.radius)
    return pd.DataFrame(rows, columns=columns)


def _free_spot(extent, particles_xyz, particle_radii, radius, z_range, rng, tries: int = 100):
    """A centre (Å, x-y-z) whose sphere of ``radius`` touches no particle, or None."""
    lo, hi = z_range
    if hi < lo:
        return None
    for _ in range(tries):
        centre = np.array([rng.uniform(0, extent[0]), rng.uniform(0, extent[1]), rng.uniform(lo, hi)])
        if not len(particles_xyz) or np.all(
            np.linalg.norm(particles_xyz - centre, axis=1) > particle_radii + radius + 10.0
        ):
            return centre
    return None


def build_potential(
    shape_xyz, voxel_size, particles: pd.DataFrame, bottom, top, settings, rng, templates=None
) -> np.ndarray:
    """Potential above ice (V, ``[z, y, x]``): particles, vesicles, gold beads and ice texture."""
    nx, ny, nz = shape_xyz
    density = np.zeros((nz, ny, nx), dtype=np.float32)
    rotations = Rotation.random(max(len(particles), 1), random_state=rng).as_matrix()
    for (name, x, y, z), rotation in zip(
        particles[["particle_type", "x", "y", "z"]].itertuples(index=False), rotations
    ):
        phantoms.render_particle(density, name, np.array([z, y, x]) / voxel_size, voxel_size, rotation, templates)

    extent = np.asarray(shape_xyz) * voxel_size
    xyz = particles[["x", "y", "z"]].to_numpy(dtype=float)
    radii = np.array([bounding_radius(n) for n in particles["particle_type"]])
    half_ice = 0.5 * float(np.min(top - bottom))
    for _ in range(rng.integers(settings["vesicles"][0], settings["vesicles"][1] + 1)):
        r_lo, r_hi = settings["vesicle_radius"][0], min(settings["vesicle_radius"][1], half_ice - 60.0)
        if r_hi < r_lo:
            break
        radius = rng.uniform(r_lo, r_hi)
        centre = _free_spot(
            extent, xyz, radii, radius + 30.0, (float(bottom.max()) + radius + 30, float(top.min()) - radius - 30), rng
        )
        if centre is not None:
            _paste_at(density, phantoms.vesicle(radius, voxel_size, _offset(centre, voxel_size)), centre, voxel_size)
            xyz, radii = np.vstack([xyz, centre]), np.append(radii, radius + 30.0)
    for _ in range(rng.integers(settings["gold"][0], settings["gold"][1] + 1)):
        radius = settings["gold_radius"]
        surface = bottom.mean() + radius if rng.random() < 0.5 else top.mean() - radius
        centre = _free_spot(extent, xyz, radii, radius, (surface, surface), rng)
        if centre is not None:
            _paste_at(density, phantoms.gold_bead(radius, voxel_size, _offset(centre, voxel_size)), centre, voxel_size)
            xyz, radii = np.vstack([xyz, centre]), np.append(radii, radius)

    if settings["ice_texture"] > 0:
        density += settings["ice_texture"] * ice_texture(density.shape, voxel_size, bottom, top, rng)
    return density * np.float32(settings["protein_potential"])


def ice_texture(shape_zyx, voxel_size: float, bottom, top, rng, correlation: float = 15.0) -> np.ndarray:
    """Unit-variance density fluctuations of amorphous ice (Gaussian field, ``correlation`` Å), zero outside the slab."""
    field = rng.standard_normal(shape_zyx, dtype=np.float32)
    ndimage.gaussian_filter(field, correlation / voxel_size, output=field)
    field /= field.std()
    z = np.arange(shape_zyx[0])[:, None, None] * voxel_size
    return field * ((z >= bottom[None]) & (z <= top[None]))


def _offset(centre_xyz, voxel_size):
    zyx = np.asarray(centre_xyz)[::-1] / voxel_size
    return zyx - np.round(zyx)


def _paste_at(volume, box, centre_xyz, voxel_size):
    phantoms.paste(volume, box, np.round(np.asarray(centre_xyz)[::-1] / voxel_size))


def make_tomogram(
    item_id: str, rng: np.random.Generator, settings: dict, templates=None, layout=None
) -> tuple[np.ndarray, pd.DataFrame]:
    """One synthetic tomogram (normalised ``[z, y, x]`` float32, in the ``contrast`` of ``settings``) and its picks table (Å).

    Args:
        item_id: tomogram id (a CZII run name when replaying ``layout``).
        rng: random generator of this tomogram.
        settings: resolved preset (:func:`resolve_settings`).
        templates: folder of ``<pdb>.mrc`` density maps, or None for procedural particles.
        layout: folder of CZII runs (``<run>/<class>.json``), or None to pack particles at random.
    """
    shape, voxel_size = settings["shape"], settings["voxel_size"]
    bottom, top = ice_slab(shape, voxel_size, settings, rng)
    if layout is None:
        particles = pack_particles(shape, voxel_size, bottom, top, settings, rng)
    else:
        particles = read_layout(Path(layout) / item_id, shape, voxel_size)
        bottom = np.minimum(bottom, max(particles["z"].min() - 100.0, 0.0))  # the ice holds every replayed particle
        top = np.maximum(top, min(particles["z"].max() + 100.0, shape[2] * voxel_size))
    decoys = place_decoys(shape, voxel_size, particles, bottom, top, settings, rng, templates)
    rendered = pd.concat([particles, decoys], ignore_index=True) if len(decoys) else particles
    potential = build_potential(shape, voxel_size, rendered, bottom, top, settings, rng, templates)
    microscope = Microscope(**{k: v for k, v in settings.items() if k in MICROSCOPE_FIELDS})
    tomogram = simulate_tomogram(potential, voxel_size, microscope, rng, ice_thickness=top - bottom)
    if settings["contrast"] == "bright":
        tomogram = -tomogram
    picks = make_picks(
        item_id, particles["particle_type"].to_numpy(), particles[["x", "y", "z"]].to_numpy(), 1.0, ndim=3
    )
    return tomogram, picks


def _finished(image: Path, picks: Path, shape_xyz) -> bool:
    if not (image.is_file() and picks.is_file()):
        return False
    try:
        return tuple(image_info(image)[0]) == tuple(shape_xyz[::-1]) and len(read_picks(picks, ndim=3)) > 0
    except ValueError:
        return False


def synthesize(
    out_dir, preset: str = "tiny", seed: int = 0, templates=None, layout=None, progress: bool = True, **overrides
) -> Path:
    """Write ``tomograms/<id>.mrc``, ``picks/<id>.csv`` and ``manifest.json`` into ``out_dir``; return the manifest path.

    Args:
        out_dir: output folder (created).
        preset: one of :data:`PRESETS` (``tiny``, ``czii-bin2``, ``demo``, ``czii``, ``shrec``, ``generalist``).
        seed: random seed; tomogram ``k`` uses the generator ``default_rng([seed, k])``.
        templates: folder of density maps ``<pdb>.mrc`` (bright protein, any voxel size); None = procedural
            (CZII species only: the ``shrec`` and ``generalist`` presets need templates).
        layout: folder of CZII runs ``<run>/<class>.json`` (copick, Å at 10.012 Å/voxel in 630 × 630 × 184);
            positions are scaled to this preset's physical extent. None = random packing.
        progress: print one line per tomogram.
        overrides: preset keys or :class:`~cryoet_monai.data.microscope.Microscope` fields, e.g.
            ``shape=(128, 128, 48)``, ``voxel_size=15``, ``n_tomograms=3``, ``tilt_max=50``, ``dose=80``,
            ``contrast="bright"`` (inverted tomograms; the manifest says so).
    """
    settings = resolve_settings(preset, overrides)
    for name, folder in (("templates", templates), ("layout", layout)):
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"{name} folder not found: {folder}")
    species = SPECIES_SETS[settings["species"]]
    if settings["species"] != "czii":
        templated = [s for s in species if s.pdb]  # procedural families have none
        if templates is None:
            raise ValueError(
                f"preset '{preset}' needs --templates: a folder with "
                f"{', '.join(s.pdb + '.mrc' for s in templated)} (e.g. polnet's data/templates/mrcs_10A); "
                "procedural particles exist only for the CZII species and the procedural families"
            )
        missing = [s.pdb for s in templated if not (Path(templates) / f"{s.pdb}.mrc").is_file()]
        if missing:
            raise FileNotFoundError(f"templates {missing} (<pdb>.mrc) not found in {templates}")
        if layout is not None:
            raise ValueError("layout replays CZII runs and works only with the CZII species")
    out_dir = Path(out_dir)
    (out_dir / "tomograms").mkdir(parents=True, exist_ok=True)
    (out_dir / "picks").mkdir(parents=True, exist_ok=True)
    record = {
        "version": __version__,
        "preset": preset,
        "seed": int(seed),
        "templates": None if templates is None else str(Path(templates).resolve()),
        "layout": None if layout is None else str(Path(layout).resolve()),
        "settings": json.loads(json.dumps(settings, default=list)),
    }
    record_path = out_dir / "synthesis.json"
    reuse = record_path.is_file() and json.loads(record_path.read_text()) == record
    with atomic_path(record_path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")

    ids = assign_items(settings["splits"], layout)
    ordered = [i for s in SPLITS for i in ids[s]]
    manifest = Manifest(
        f"synthetic-{preset}",
        3,
        settings["voxel_size"],
        [ParticleClass(s.name, s.radius, s.weight) for s in species],
        contrast=settings["contrast"],
    )
    for index, item_id in enumerate(ordered):
        image, picks_path = out_dir / "tomograms" / f"{item_id}.mrc", out_dir / "picks" / f"{item_id}.csv"
        if reuse and _finished(image, picks_path, settings["shape"]):
            if progress:
                print(f"synth: {item_id} already done, skipped", flush=True)
            continue
        start = time.perf_counter()
        tomogram, picks = make_tomogram(item_id, np.random.default_rng([seed, index]), settings, templates, layout)
        write_mrc(image, tomogram, settings["voxel_size"])
        write_picks(picks, picks_path)
        if progress:
            print(
                f"synth: {item_id} ({index + 1}/{len(ordered)}, {len(picks)} particles) {time.perf_counter() - start:.1f} s",
                flush=True,
            )
    for split in SPLITS:
        manifest.splits[split] = [
            Item(
                i,
                (out_dir / "tomograms" / f"{i}.mrc").resolve(),
                None if split == "unlabeled" else (out_dir / "picks" / f"{i}.csv").resolve(),
                None,
                settings["voxel_size"],
                contrast=settings["contrast"],
            )
            for i in ids[split]
        ]
    return manifest.save(out_dir / "manifest.json")
